//! Team workspaces: invitations over the real email pipeline, roles, removal,
//! leaving, and the rule that a removed member loses access at once.

use reqwest::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    email::email_app,
    helpers::{TestApp, TestUser, error_code},
    smtp_sink::SmtpSink,
};

async fn call(
    app: &TestApp,
    user: &TestUser,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&user.access_token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn create_workspace(app: &TestApp, owner: &TestUser, name: &str) -> Uuid {
    let res = call(
        app,
        owner,
        reqwest::Method::POST,
        "/api/workspaces",
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(res.status(), 201);
    let ws: Value = res.json().await.unwrap();
    assert_eq!(ws["role"], "owner");
    ws["id"].as_str().unwrap().parse().unwrap()
}

/// Invites `who` as `role`, follows the emailed link, accepts.
async fn join(app: &TestApp, sink: &SmtpSink, by: &TestUser, ws: Uuid, who: &TestUser, role: &str) {
    let res = call(
        app,
        by,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/invitations"),
        Some(json!({ "email": who.email, "role": role })),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let token = sink
        .wait_for(&who.email, "invited you")
        .await
        .token_for("invite")
        .expect("an invitation link");
    let res = call(
        app,
        who,
        reqwest::Method::POST,
        "/api/workspaces/invitations/accept",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(res.status(), 200);
    let joined: Value = res.json().await.unwrap();
    assert_eq!(joined["id"], ws.to_string());
    assert_eq!(joined["role"], role);
}

async fn roles(app: &TestApp, user: &TestUser, ws: Uuid) -> Vec<(String, String)> {
    let res = call(
        app,
        user,
        reqwest::Method::GET,
        &format!("/api/workspaces/{ws}/members"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn invite_a_teammate_who_accepts_then_remove_them() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, mate) = (app.new_user().await, app.new_user().await);
    let ws = create_workspace(&app, &owner, "Team <b>Rocket</b>").await;
    join(&app, &sink, &owner, ws, &mate, "member").await;
    let invite_mail = &sink.mails_to(&mate.email)[1];
    assert!(invite_mail.subject().contains("Team <b>Rocket</b>"));
    assert!(
        invite_mail.data.contains("Team &lt;b&gt;Rocket&lt;/b&gt;")
            || !invite_mail.data.contains("<b>Rocket</b></"),
        "escaped in HTML"
    );
    let members = roles(&app, &mate, ws).await;
    assert_eq!(members.len(), 2);
    assert!(members.contains(&(mate.email.clone(), "member".into())));
    let listed: Value = call(&app, &mate, reqwest::Method::GET, "/api/workspaces", None)
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

    // The teammate works in a chat of the workspace, over REST and WebSocket.
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        "/api/chats",
        Some(json!({ "title": "plans", "workspace_id": ws })),
    )
    .await;
    assert_eq!(res.status(), 201);
    let chat: Uuid = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        call(
            &app,
            &mate,
            reqwest::Method::GET,
            &format!("/api/chats/{chat}"),
            None
        )
        .await
        .status(),
        200
    );
    let mut socket = app.ws(&mate.access_token).await;
    socket
        .send(json!({ "type": "subscribe", "chat_id": chat }))
        .await;

    // Removed: the very next request is refused, on a socket already open too.
    let res = call(
        &app,
        &owner,
        reqwest::Method::DELETE,
        &format!("/api/workspaces/{ws}/members/{}", mate.id),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        call(
            &app,
            &mate,
            reqwest::Method::GET,
            &format!("/api/chats/{chat}"),
            None
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        call(
            &app,
            &mate,
            reqwest::Method::GET,
            &format!("/api/workspaces/{ws}/members"),
            None
        )
        .await
        .status(),
        404
    );
    let res = call(
        &app,
        &mate,
        reqwest::Method::POST,
        &format!("/api/chats/{chat}/messages"),
        Some(json!({ "content": "hi" })),
    )
    .await;
    assert_eq!(res.status(), 404);
    socket.send_message(chat, "after-removal", "hi").await;
    assert_eq!(socket.next_of("error").await["code"], "not_found");
    let res = call(
        &app,
        &mate,
        reqwest::Method::POST,
        "/api/keys",
        Some(json!({ "name": "k", "workspace_id": ws })),
    )
    .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn roles_and_the_last_owner() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, admin, member) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let ws = create_workspace(&app, &owner, "Acme").await;
    join(&app, &sink, &owner, ws, &admin, "admin").await;
    join(&app, &sink, &admin, ws, &member, "member").await;
    let path = |u: &TestUser| format!("/api/workspaces/{ws}/members/{}", u.id);
    let patch = |role: &str| Some(json!({ "role": role }));

    // The last owner cannot leave, be removed or be demoted.
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/leave"),
        None,
    )
    .await;
    assert_eq!(res.status(), 409);
    assert_eq!(error_code(res).await, "conflict");
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::PATCH,
            &path(&owner),
            patch("admin")
        )
        .await
        .status(),
        409
    );
    // Admins cannot touch owners nor make one; members manage nothing.
    assert_eq!(
        call(&app, &admin, reqwest::Method::DELETE, &path(&owner), None)
            .await
            .status(),
        403
    );
    assert_eq!(
        call(
            &app,
            &admin,
            reqwest::Method::PATCH,
            &path(&member),
            patch("owner")
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        call(
            &app,
            &member,
            reqwest::Method::PATCH,
            &path(&member),
            patch("admin")
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        call(&app, &member, reqwest::Method::DELETE, &path(&admin), None)
            .await
            .status(),
        403
    );
    let res = call(
        &app,
        &member,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/invitations"),
        Some(json!({ "email": "x@example.com" })),
    )
    .await;
    assert_eq!(res.status(), 403);
    // Bad input.
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::PATCH,
            &path(&member),
            patch("god")
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::PATCH,
            &format!("/api/workspaces/{ws}/members/nope"),
            patch("admin")
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::PATCH,
            &format!("/api/workspaces/{ws}/members/{}", Uuid::new_v4()),
            patch("admin")
        )
        .await
        .status(),
        404
    );
    let long = "x".repeat(101);
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::POST,
            "/api/workspaces",
            Some(json!({ "name": long }))
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::POST,
            "/api/workspaces",
            Some(json!({ "name": " " }))
        )
        .await
        .status(),
        400
    );
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/invitations"),
        Some(json!({ "email": admin.email })),
    )
    .await;
    assert_eq!(res.status(), 409, "already a member");
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/invitations"),
        Some(json!({ "email": "x@example.com", "role": "owner" })),
    )
    .await;
    assert_eq!(res.status(), 400);

    // An owner promotes the admin; now the first owner may leave.
    assert_eq!(
        call(
            &app,
            &owner,
            reqwest::Method::PATCH,
            &path(&admin),
            patch("owner")
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        call(
            &app,
            &admin,
            reqwest::Method::PATCH,
            &path(&member),
            patch("admin")
        )
        .await
        .status(),
        200
    );
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/leave"),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    let now = roles(&app, &admin, ws).await;
    assert_eq!(now.len(), 2);
    assert!(now.contains(&(admin.email.clone(), "owner".into())));
    assert!(now.contains(&(member.email.clone(), "admin".into())));
    // A member may leave on their own.
    assert_eq!(
        call(
            &app,
            &member,
            reqwest::Method::POST,
            &format!("/api/workspaces/{ws}/leave"),
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(roles(&app, &admin, ws).await.len(), 1);
}

#[tokio::test]
async fn invitations_are_for_their_address_and_for_one_use() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let (owner, invited, stranger) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let ws = create_workspace(&app, &owner, "Private").await;
    // A stranger sees nothing of it.
    for path in [
        format!("/api/workspaces/{ws}"),
        format!("/api/workspaces/{ws}/members"),
        format!("/api/workspaces/{ws}/invitations"),
    ] {
        assert_eq!(
            call(&app, &stranger, reqwest::Method::GET, &path, None)
                .await
                .status(),
            404,
            "{path}"
        );
    }
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/invitations"),
        Some(json!({ "email": invited.email })),
    )
    .await;
    assert_eq!(res.status(), 201);
    let listed: Value = call(
        &app,
        &owner,
        reqwest::Method::GET,
        &format!("/api/workspaces/{ws}/invitations"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed["invitations"].as_array().unwrap().len(), 1);
    let token = sink
        .wait_for(&invited.email, "invited you")
        .await
        .token_for("invite")
        .unwrap();
    let accept = |u: &TestUser, t: &str| {
        let body = json!({ "token": t });
        let token = u.access_token.clone();
        let url = app.url("/api/workspaces/invitations/accept");
        let client = app.client.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // A forwarded link does not let someone else in, and does not use it up.
    let res = accept(&stranger, &token).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        accept(
            &invited,
            &format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
        )
        .await
        .status(),
        400
    );
    assert_eq!(accept(&invited, &token).await.status(), 200);
    assert_eq!(accept(&invited, &token).await.status(), 400, "once");
    let res = app
        .client
        .post(app.url("/api/workspaces/invitations/accept"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // A withdrawn invitation stops working.
    let other = app.new_user().await;
    let res = call(
        &app,
        &owner,
        reqwest::Method::POST,
        &format!("/api/workspaces/{ws}/invitations"),
        Some(json!({ "email": other.email })),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = sink
        .wait_for(&other.email, "invited you")
        .await
        .token_for("invite")
        .unwrap();
    let res = call(
        &app,
        &owner,
        reqwest::Method::DELETE,
        &format!("/api/workspaces/{ws}/invitations/{id}"),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(accept(&other, &token).await.status(), 400);
}
