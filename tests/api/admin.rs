//! Administration over REST and the command line: only admins, every action
//! audited, and a disabled user locked out of every door (access token,
//! sign-in, refresh, WebSocket, API key) until enabled again.

use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, TestUser, error_code, spawn_app};

pub async fn make_admin(app: &TestApp, user: &TestUser) {
    sqlx::query("update users set is_admin = true where id = $1")
        .bind(user.id)
        .execute(&app.db)
        .await
        .unwrap();
}

async fn call(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Value,
) -> Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !body.is_null() {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

fn routes(user: Uuid, ws: Uuid) -> Vec<(Method, String, Value)> {
    vec![
        (Method::GET, "/api/admin/users".into(), Value::Null),
        (Method::GET, "/api/admin/workspaces".into(), Value::Null),
        (Method::GET, "/api/admin/audit".into(), Value::Null),
        (
            Method::PUT,
            format!("/api/admin/users/{user}/admin"),
            json!({ "is_admin": true }),
        ),
        (
            Method::PUT,
            format!("/api/admin/users/{user}/disabled"),
            json!({ "disabled": true }),
        ),
        (
            Method::POST,
            format!("/api/admin/users/{user}/revoke-sessions"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("/api/admin/workspaces/{ws}/plan"),
            json!({ "plan": "pro" }),
        ),
    ]
}

#[tokio::test]
async fn admin_routes_need_an_admin() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await;
    for (method, path, body) in routes(user.id, ws) {
        let res = call(&app, None, method.clone(), &path, body.clone()).await;
        assert_eq!(res.status(), 401, "{method} {path}");
        assert_eq!(error_code(res).await, "unauthorized");
        let res = call(&app, Some(&user.access_token), method.clone(), &path, body).await;
        assert_eq!(res.status(), 403, "{method} {path}");
        assert_eq!(error_code(res).await, "forbidden");
    }
    // The routes are in the OpenAPI document.
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/admin/users",
        "/api/admin/workspaces/{id}/plan",
        "/api/admin/audit",
        "/api/ops/snapshot",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    // Nothing changed and nothing was audited.
    let (admin, audits): (bool, i64) = sqlx::query_as(
        "select is_admin, (select count(*) from admin_audit) from users where id = $1",
    )
    .bind(user.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(!admin);
    assert_eq!(audits, 0);
}

#[tokio::test]
async fn admin_actions_are_applied_and_audited() {
    let app = spawn_app().await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;
    let other = app.new_user().await;
    let ws = app.workspace_of(&other).await;
    let tok = Some(admin.access_token.as_str());

    let users: Value = call(
        &app,
        tok,
        Method::GET,
        "/api/admin/users?limit=10",
        Value::Null,
    )
    .await
    .json()
    .await
    .unwrap();
    let emails: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert!(emails.contains(&other.email.as_str()) && emails.contains(&admin.email.as_str()));

    let res = call(
        &app,
        tok,
        Method::PUT,
        &format!("/api/admin/workspaces/{ws}/plan"),
        json!({ "plan": "team" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (plan,): (String,) = sqlx::query_as("select plan from workspaces where id = $1")
        .bind(ws)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(plan, "team");
    let list: Value = call(&app, tok, Method::GET, "/api/admin/workspaces", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let row = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == ws.to_string())
        .unwrap()
        .clone();
    assert_eq!(row["plan"], "team");
    assert_eq!(row["members"], 1);

    // Granting admin lets the other user in; revoking takes it away again.
    let path = format!("/api/admin/users/{}/admin", other.id);
    assert_eq!(
        call(&app, tok, Method::PUT, &path, json!({ "is_admin": true }))
            .await
            .status(),
        200
    );
    let res = call(
        &app,
        Some(&other.access_token),
        Method::GET,
        "/api/admin/audit",
        Value::Null,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        call(&app, tok, Method::PUT, &path, json!({ "is_admin": false }))
            .await
            .status(),
        200
    );
    let res = call(
        &app,
        Some(&other.access_token),
        Method::GET,
        "/api/admin/audit",
        Value::Null,
    )
    .await;
    assert_eq!(res.status(), 403);

    let audit: Value = call(&app, tok, Method::GET, "/api/admin/audit", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke_admin", "grant_admin", "set_plan"]);
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == admin.email.as_str() && e["actor_id"] == admin.id.to_string())
    );
    assert_eq!(
        entries[2]["detail"],
        json!({ "from": "free", "to": "team" })
    );
    assert_eq!(entries[2]["target_workspace"], ws.to_string());
}

#[tokio::test]
async fn admin_input_is_checked() {
    let app = spawn_app().await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;
    let other = app.new_user().await;
    let ws = app.workspace_of(&other).await;
    let tok = Some(admin.access_token.as_str());
    let cases: Vec<(Method, String, Value, u16, &str)> = vec![
        (
            Method::PUT,
            format!("/api/admin/workspaces/{ws}/plan"),
            json!({ "plan": "enterprise" }),
            400,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/api/admin/workspaces/{ws}/plan"),
            json!({ "plan": "pro'; drop table users; --" }),
            400,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/api/admin/workspaces/{ws}/plan"),
            json!({ "plan": "pro", "extra": 1 }),
            400,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/api/admin/workspaces/{}/plan", Uuid::new_v4()),
            json!({ "plan": "pro" }),
            404,
            "not_found",
        ),
        (
            Method::PUT,
            "/api/admin/workspaces/not-a-uuid/plan".into(),
            json!({ "plan": "pro" }),
            400,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/api/admin/users/{}/admin", Uuid::new_v4()),
            json!({ "is_admin": true }),
            404,
            "not_found",
        ),
        (
            Method::PUT,
            format!("/api/admin/users/{}/admin", other.id),
            json!({ "is_admin": "yes" }),
            400,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/api/admin/users/{}/disabled", Uuid::new_v4()),
            json!({ "disabled": true }),
            404,
            "not_found",
        ),
        (
            Method::POST,
            format!("/api/admin/users/{}/revoke-sessions", Uuid::new_v4()),
            Value::Null,
            404,
            "not_found",
        ),
        (
            Method::PUT,
            format!("/api/admin/users/{}/disabled", admin.id),
            json!({ "disabled": true }),
            409,
            "conflict",
        ),
        (
            Method::PUT,
            format!("/api/admin/users/{}/admin", admin.id),
            json!({ "is_admin": false }),
            409,
            "conflict",
        ),
        (
            Method::GET,
            "/api/admin/users?limit=0".into(),
            Value::Null,
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/api/admin/users?limit=100000".into(),
            Value::Null,
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/api/admin/users?offset=-1".into(),
            Value::Null,
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/api/admin/users?limit=abc".into(),
            Value::Null,
            400,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let res = call(&app, tok, method.clone(), &path, body.clone()).await;
        assert_eq!(res.status(), status, "{method} {path} {body}");
        assert_eq!(error_code(res).await, code, "{method} {path}");
    }
    // A huge body is refused before it is parsed.
    let big = json!({ "plan": "x".repeat(3_000_000) });
    let res = call(
        &app,
        tok,
        Method::PUT,
        &format!("/api/admin/workspaces/{ws}/plan"),
        big,
    )
    .await;
    assert_eq!(res.status(), 413);
    let (plan, audits): (String, i64) = sqlx::query_as(
        "select plan, (select count(*) from admin_audit) from workspaces where id = $1",
    )
    .bind(ws)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((plan.as_str(), audits), ("free", 0));
}

#[tokio::test]
async fn a_disabled_user_is_locked_out_of_every_door() {
    let app = spawn_app().await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;
    let user = app.new_user().await;
    let bystander = app.new_user().await;
    let key: Value = call(
        &app,
        Some(&user.access_token),
        Method::POST,
        "/api/keys",
        json!({ "name": "k" }),
    )
    .await
    .json()
    .await
    .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let models = |k: String| {
        let app = &app;
        async move {
            call(app, Some(&k), Method::GET, "/v1/models", Value::Null)
                .await
                .status()
        }
    };
    assert_eq!(models(key.clone()).await, 200);

    let path = format!("/api/admin/users/{}/disabled", user.id);
    let out: Value = call(
        &app,
        Some(&admin.access_token),
        Method::PUT,
        &path,
        json!({ "disabled": true }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(out["action"], "disable_user");
    assert_eq!(out["sessions_revoked"], 1);
    assert_eq!(out["keys_revoked"], 1);

    // The access token still verifies as a JWT, but the account check stops it.
    let res = call(
        &app,
        Some(&user.access_token),
        Method::GET,
        "/api/auth/me",
        Value::Null,
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "forbidden");
    let res = app.signin(&user.email, PASSWORD).await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_json(
            "/api/auth/refresh",
            &json!({ "refresh_token": user.refresh_token }),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(models(key.clone()).await, 401);
    let mut ws = app.ws(&user.access_token).await;
    assert_eq!(
        ws.next_or_close().await.ok().map(|f| f["code"].clone()),
        Some(json!("forbidden"))
    );
    // A wrong password still says only "invalid email or password".
    let res = app.signin(&user.email, "wrong password here").await;
    assert_eq!(res.status(), 401);
    // Nobody else is affected.
    let res = call(
        &app,
        Some(&bystander.access_token),
        Method::GET,
        "/api/auth/me",
        Value::Null,
    )
    .await;
    assert_eq!(res.status(), 200);

    let out = call(
        &app,
        Some(&admin.access_token),
        Method::PUT,
        &path,
        json!({ "disabled": false }),
    )
    .await;
    assert_eq!(out.status(), 200);
    assert_eq!(app.signin(&user.email, PASSWORD).await.status(), 200);
    assert_eq!(
        call(
            &app,
            Some(&user.access_token),
            Method::GET,
            "/api/auth/me",
            Value::Null
        )
        .await
        .status(),
        200
    );
    // Revoked keys stay revoked.
    assert_eq!(models(key).await, 401);
}

#[tokio::test]
async fn revoke_sessions_signs_a_user_out_everywhere() {
    let app = spawn_app().await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;
    let user = app.new_user().await;
    let second = app
        .signin(&user.email, PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/api/admin/users/{}/revoke-sessions", user.id);
    let out: Value = call(
        &app,
        Some(&admin.access_token),
        Method::POST,
        &path,
        Value::Null,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(out["sessions_revoked"], 2);
    for rt in [
        user.refresh_token.as_str(),
        second["refresh_token"].as_str().unwrap(),
    ] {
        let res = app
            .post_json("/api/auth/refresh", &json!({ "refresh_token": rt }))
            .await;
        assert_eq!(res.status(), 401);
    }
    // Signing in again works: this is a sign-out, not a ban.
    assert_eq!(app.signin(&user.email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn the_command_line_grants_lists_and_audits() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let url = app
        .config
        .database
        .url
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_ENV", "test")
            .env("USER", "ops-test")
            .env("DATABASE_URL", &url)
            .arg("admin")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["grant", &user.email.to_uppercase()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["users"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&user.email) && l.ends_with("admin")),
        "{listing}"
    );
    let ws = app.workspace_of(&user).await;
    assert!(run(&["set-plan", &ws.to_string(), "pro"]).status.success());
    let out = run(&["set-plan", &ws.to_string(), "gold"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan: must be one of"));
    let out = run(&["disable", "nobody@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
    assert!(run(&["disable", &user.id.to_string()]).status.success());
    assert_eq!(app.signin(&user.email, PASSWORD).await.status(), 403);
    let out = run(&["workspaces"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{ws}  pro")));
    let rows: Vec<(String, String)> =
        sqlx::query_as("select actor, action from admin_audit order by created_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let want = ["grant_admin", "set_plan", "disable_user"]
        .map(|a| ("cli:ops-test".to_owned(), a.to_owned()));
    assert_eq!(rows, want);
}
