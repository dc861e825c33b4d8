//! Team workspaces: invitations over the real email pipeline, roles, removal,
//! leaving, and the rule that a removed member loses access at once.

use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    email::email_app,
    helpers::{TestApp, TestUser, error_code},
    smtp_sink::SmtpSink,
};

async fn call(app: &TestApp, user: &TestUser, method: &str, path: &str, body: Value) -> Response {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(method, app.url(path));
    req = req.bearer_auth(&user.access_token);
    if !body.is_null() {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// The status of a call.
async fn st(app: &TestApp, user: &TestUser, method: &str, path: &str, body: Value) -> u16 {
    call(app, user, method, path, body).await.status().as_u16()
}

async fn create_workspace(app: &TestApp, owner: &TestUser, name: &str) -> Uuid {
    let res = call(
        app,
        owner,
        "POST",
        "/api/workspaces",
        json!({ "name": name }),
    )
    .await;
    assert_eq!(res.status(), 201);
    let ws: Value = res.json().await.unwrap();
    assert_eq!(ws["role"], "owner");
    ws["id"].as_str().unwrap().parse().unwrap()
}

/// Invites `who` as `role` and returns the token of the emailed link.
async fn invite(app: &TestApp, sink: &SmtpSink, by: &TestUser, ws: Uuid, who: &str) -> String {
    let body = json!({ "email": who, "role": "member" });
    let path = format!("/api/workspaces/{ws}/invitations");
    assert_eq!(st(app, by, "POST", &path, body).await, 201);
    let mail = sink.wait_for(who, "invited you").await;
    mail.token_for("invite").expect("an invitation link")
}

async fn accept(app: &TestApp, who: &TestUser, token: &str) -> Response {
    let path = "/api/workspaces/invitations/accept";
    call(app, who, "POST", path, json!({ "token": token })).await
}

/// Invites `who`, follows the emailed link, accepts, then sets `role`.
async fn join(
    app: &TestApp,
    sink: &SmtpSink,
    owner: &TestUser,
    ws: Uuid,
    who: &TestUser,
    role: &str,
) {
    let token = invite(app, sink, owner, ws, &who.email).await;
    let res = accept(app, who, &token).await;
    assert_eq!(res.status(), 200);
    let joined: Value = res.json().await.unwrap();
    assert_eq!(
        (joined["id"].as_str(), joined["role"].as_str()),
        (Some(&*ws.to_string()), Some("member"))
    );
    if role != "member" {
        let path = format!("/api/workspaces/{ws}/members/{}", who.id);
        assert_eq!(
            st(app, owner, "PATCH", &path, json!({ "role": role })).await,
            200
        );
    }
}

async fn roles(app: &TestApp, user: &TestUser, ws: Uuid) -> Vec<(String, String)> {
    let res = call(
        app,
        user,
        "GET",
        &format!("/api/workspaces/{ws}/members"),
        Value::Null,
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let role = |m: &Value| {
        (
            m["email"].as_str().unwrap().to_owned(),
            m["role"].as_str().unwrap().to_owned(),
        )
    };
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(role)
        .collect()
}

/// An owner, an admin and a member in a fresh workspace.
async fn team(app: &TestApp, sink: &SmtpSink) -> (TestUser, TestUser, TestUser, Uuid) {
    let (owner, admin, member) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let ws = create_workspace(app, &owner, "Acme").await;
    join(app, sink, &owner, ws, &admin, "admin").await;
    join(app, sink, &owner, ws, &member, "member").await;
    (owner, admin, member, ws)
}

#[tokio::test]
async fn invite_a_teammate_who_accepts() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, mate) = (app.new_user().await, app.new_user().await);
    let ws = create_workspace(&app, &owner, "Team <b>Rocket</b>").await;
    join(&app, &sink, &owner, ws, &mate, "member").await;
    let mail = sink.wait_for(&mate.email, "invited you").await;
    assert!(
        mail.subject().contains("Team <b>Rocket</b>"),
        "{}",
        mail.subject()
    );
    assert!(
        mail.text().contains("Team &lt;b&gt;Rocket&lt;/b&gt;"),
        "escaped in the HTML part"
    );
    let members = roles(&app, &mate, ws).await;
    assert_eq!(members.len(), 2);
    assert!(members.contains(&(mate.email.clone(), "member".into())));
    let listed: Value = call(&app, &mate, "GET", "/api/workspaces", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == ws.to_string())
    );
    assert_eq!(
        st(
            &app,
            &mate,
            "GET",
            &format!("/api/workspaces/{ws}"),
            Value::Null
        )
        .await,
        200
    );
}

#[tokio::test]
async fn a_removed_member_loses_access_at_the_next_request() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, mate) = (app.new_user().await, app.new_user().await);
    let ws = create_workspace(&app, &owner, "Team").await;
    join(&app, &sink, &owner, ws, &mate, "member").await;
    let res = call(
        &app,
        &owner,
        "POST",
        "/api/chats",
        json!({ "title": "plans", "workspace_id": ws }),
    )
    .await;
    assert_eq!(res.status(), 201);
    let chat: Uuid = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let chat_path = format!("/api/chats/{chat}");
    assert_eq!(st(&app, &mate, "GET", &chat_path, Value::Null).await, 200);
    let mut socket = app.ws(&mate.access_token).await;
    socket
        .send(json!({ "type": "subscribe", "chat_id": chat }))
        .await;
    socket.send(json!({ "type": "ping" })).await;
    socket.next_of("pong").await;

    let path = format!("/api/workspaces/{ws}/members/{}", mate.id);
    assert_eq!(st(&app, &owner, "DELETE", &path, Value::Null).await, 204);
    // Refused on the very next request, REST and on a socket opened before.
    assert_eq!(st(&app, &mate, "GET", &chat_path, Value::Null).await, 404);
    let members = format!("/api/workspaces/{ws}/members");
    assert_eq!(st(&app, &mate, "GET", &members, Value::Null).await, 404);
    let send = format!("{chat_path}/messages");
    assert_eq!(
        st(&app, &mate, "POST", &send, json!({ "content": "hi" })).await,
        404
    );
    socket.send_message(chat, "after-removal", "hi").await;
    assert_eq!(socket.next_of("error").await["code"], "not_found");
    let key = json!({ "name": "k", "workspace_id": ws });
    assert_eq!(st(&app, &mate, "POST", "/api/keys", key).await, 404);
    assert_eq!(roles(&app, &owner, ws).await.len(), 1);
}

#[tokio::test]
async fn the_last_owner_stays() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, admin, member, ws) = team(&app, &sink).await;
    let path = |u: &TestUser| format!("/api/workspaces/{ws}/members/{}", u.id);
    let leave = format!("/api/workspaces/{ws}/leave");
    let res = call(&app, &owner, "POST", &leave, Value::Null).await;
    assert_eq!(res.status(), 409);
    assert_eq!(error_code(res).await, "conflict");
    assert_eq!(
        st(
            &app,
            &owner,
            "PATCH",
            &path(&owner),
            json!({ "role": "admin" })
        )
        .await,
        409
    );
    assert_eq!(
        st(&app, &owner, "DELETE", &path(&owner), Value::Null).await,
        409
    );

    // With a second owner the first may go.
    assert_eq!(
        st(
            &app,
            &owner,
            "PATCH",
            &path(&admin),
            json!({ "role": "owner" })
        )
        .await,
        200
    );
    assert_eq!(
        st(
            &app,
            &admin,
            "PATCH",
            &path(&member),
            json!({ "role": "admin" })
        )
        .await,
        200
    );
    assert_eq!(st(&app, &owner, "POST", &leave, Value::Null).await, 204);
    let now = roles(&app, &admin, ws).await;
    assert_eq!(now.len(), 2);
    assert!(now.contains(&(admin.email.clone(), "owner".into())));
    assert!(now.contains(&(member.email.clone(), "admin".into())));
    // A member may leave on their own; the one left is the last owner again.
    assert_eq!(st(&app, &member, "POST", &leave, Value::Null).await, 204);
    assert_eq!(st(&app, &admin, "POST", &leave, Value::Null).await, 409);
}

#[tokio::test]
async fn who_may_do_what() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, admin, member, ws) = team(&app, &sink).await;
    let path = |u: &TestUser| format!("/api/workspaces/{ws}/members/{}", u.id);
    let invites = format!("/api/workspaces/{ws}/invitations");
    let role = |r: &str| json!({ "role": r });
    // Admins cannot touch owners nor make one; members manage nothing.
    assert_eq!(
        st(&app, &admin, "DELETE", &path(&owner), Value::Null).await,
        403
    );
    assert_eq!(
        st(&app, &admin, "PATCH", &path(&owner), role("member")).await,
        403
    );
    assert_eq!(
        st(&app, &admin, "PATCH", &path(&member), role("owner")).await,
        403
    );
    assert_eq!(
        st(&app, &member, "PATCH", &path(&member), role("admin")).await,
        403
    );
    assert_eq!(
        st(&app, &member, "DELETE", &path(&admin), Value::Null).await,
        403
    );
    assert_eq!(
        st(
            &app,
            &member,
            "POST",
            &invites,
            json!({ "email": "x@example.com" })
        )
        .await,
        403
    );
    assert_eq!(st(&app, &member, "GET", &invites, Value::Null).await, 403);
    // An admin manages members: removes one.
    assert_eq!(
        st(&app, &admin, "DELETE", &path(&member), Value::Null).await,
        204
    );
    assert_eq!(roles(&app, &owner, ws).await.len(), 2);
}

#[tokio::test]
async fn malformed_workspace_requests_are_refused() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, admin, member, ws) = team(&app, &sink).await;
    let path = |u: &TestUser| format!("/api/workspaces/{ws}/members/{}", u.id);
    let invites = format!("/api/workspaces/{ws}/invitations");
    let role = |r: &str| json!({ "role": r });
    // Bad input.
    assert_eq!(
        st(&app, &owner, "PATCH", &path(&member), role("god")).await,
        400
    );
    let bad_id = format!("/api/workspaces/{ws}/members/nope");
    assert_eq!(st(&app, &owner, "PATCH", &bad_id, role("admin")).await, 400);
    let nobody = format!("/api/workspaces/{ws}/members/{}", Uuid::new_v4());
    assert_eq!(st(&app, &owner, "PATCH", &nobody, role("admin")).await, 404);
    for name in [
        json!("x".repeat(101)),
        json!(" "),
        json!("a\u{0}b"),
        json!(5),
    ] {
        assert_eq!(
            st(
                &app,
                &owner,
                "POST",
                "/api/workspaces",
                json!({ "name": name })
            )
            .await,
            400
        );
    }
    let again = json!({ "email": admin.email });
    assert_eq!(
        st(&app, &owner, "POST", &invites, again).await,
        409,
        "already a member"
    );
    let as_owner = json!({ "email": "x@example.com", "role": "owner" });
    assert_eq!(st(&app, &owner, "POST", &invites, as_owner).await, 400);
    let bad_email = json!({ "email": "not an email" });
    assert_eq!(st(&app, &owner, "POST", &invites, bad_email).await, 400);
    let not_json = app
        .client
        .post(app.url("/api/workspaces"))
        .bearer_auth(&owner.access_token)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let anonymous = app
        .post_json("/api/workspaces", &json!({ "name": "x" }))
        .await;
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn invitations_are_for_their_address_and_for_one_use() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| c.accounts.invites_per_hour = 3).await;
    let (owner, invited, stranger) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let ws = create_workspace(&app, &owner, "Private").await;
    for path in ["", "/members", "/invitations"] {
        let path = format!("/api/workspaces/{ws}{path}");
        assert_eq!(
            st(&app, &stranger, "GET", &path, Value::Null).await,
            404,
            "{path}"
        );
    }
    let token = invite(&app, &sink, &owner, ws, &invited.email).await;
    let listed: Value = call(
        &app,
        &owner,
        "GET",
        &format!("/api/workspaces/{ws}/invitations"),
        Value::Null,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed["invitations"].as_array().unwrap().len(), 1);
    // A forwarded link does not let someone else in, and is not used up by trying.
    assert_eq!(accept(&app, &stranger, &token).await.status(), 403);
    let forged = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    assert_eq!(accept(&app, &invited, &forged).await.status(), 400);
    assert_eq!(accept(&app, &invited, &token).await.status(), 200);
    assert_eq!(accept(&app, &invited, &token).await.status(), 400, "once");
    let anonymous = app
        .post_json(
            "/api/workspaces/invitations/accept",
            &json!({ "token": token }),
        )
        .await;
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn withdrawn_invitations_stop_working_and_invites_are_throttled() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| c.accounts.invites_per_hour = 2).await;
    let owner = app.new_user().await;
    let ws = create_workspace(&app, &owner, "Private").await;
    // A withdrawn invitation stops working.
    let other = app.new_user().await;
    let token = invite(&app, &sink, &owner, ws, &other.email).await;
    let listed: Value = call(
        &app,
        &owner,
        "GET",
        &format!("/api/workspaces/{ws}/invitations"),
        Value::Null,
    )
    .await
    .json()
    .await
    .unwrap();
    let id = listed["invitations"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/workspaces/{ws}/invitations/{id}");
    assert_eq!(st(&app, &owner, "DELETE", &path, Value::Null).await, 204);
    assert_eq!(accept(&app, &other, &token).await.status(), 400);
    // Invitations per workspace are throttled (2 an hour here).
    let invites = format!("/api/workspaces/{ws}/invitations");
    assert_eq!(
        st(
            &app,
            &owner,
            "POST",
            &invites,
            json!({ "email": "c@example.com" })
        )
        .await,
        201
    );
    assert_eq!(
        st(
            &app,
            &owner,
            "POST",
            &invites,
            json!({ "email": "d@example.com" })
        )
        .await,
        429
    );
}
