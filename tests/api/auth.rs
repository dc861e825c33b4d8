use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn signup_signin_me_refresh_signout() {
    let app = spawn_app().await;
    let res = app.signup("Ada@Example.com", "ada", PASSWORD).await;
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["username"], "ada");
    assert!(user.get("password_hash").is_none());

    // Emails compare case-insensitively.
    let res = app.signin("ada@example.COM", PASSWORD).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let me: Value = app
        .client
        .get(app.url("/api/auth/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], user["id"]);

    // The stored password is an argon2id hash with OWASP parameters.
    let (hash,): (String,) =
        sqlx::query_as("select password_hash from users where username = 'ada'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    // The personal workspace and membership exist.
    let (n,): (i64,) = sqlx::query_as(
        "select count(*) from workspace_members where user_id = $1 and role = 'owner'",
    )
    .bind(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(n, 1);

    // Refresh rotates: a new pair, and the refresh token is not stored in clear.
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.unwrap();
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    let (clear,): (i64,) =
        sqlx::query_as("select count(*) from refresh_tokens where token_hash = $1")
            .bind(&refresh2)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(clear, 0);

    // Sign-out revokes the family: the current refresh token stops working.
    let res = app
        .post_json("/api/auth/signout", &json!({ "refresh_token": refresh2 }))
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": refresh2 }))
        .await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let first = user.refresh_token.clone();
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": first }))
        .await;
    assert_eq!(res.status(), 200);
    let second = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // An attacker replays the first token: refused, and the legitimate second one dies with it.
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": first }))
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "unauthorized");
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": second }))
        .await;
    assert_eq!(res.status(), 401);

    // A separate sign-in is a separate family and still works.
    let res = app.signin(&user.email, PASSWORD).await;
    let third = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": third }))
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn concurrent_refresh_with_one_token_succeeds_once() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let body = json!({ "refresh_token": user.refresh_token });
    let (a, b) = tokio::join!(
        app.post_json("/api/auth/refresh", &body),
        app.post_json("/api/auth/refresh", &body)
    );
    let ok = [a.status(), b.status()]
        .iter()
        .filter(|s| s.as_u16() == 200)
        .count();
    assert_eq!(ok, 1, "{} {}", a.status(), b.status());
}

#[tokio::test]
async fn bad_refresh_tokens_are_401() {
    let app = spawn_app().await;
    for token in ["", "nope", &"f".repeat(64), &"x".repeat(10_000)] {
        let res = app
            .post_json("/api/auth/refresh", &json!({ "refresh_token": token }))
            .await;
        assert_eq!(res.status(), 401, "{token:.20}");
        assert_eq!(error_code(res).await, "unauthorized");
    }
}

#[tokio::test]
async fn signup_rejects_bad_fields_naming_them() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "username": "ada", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "", "username": "ada", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "a@b.co", "username": "a", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"email": "a@b.co", "username": "bad name!", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"email": "a@b.co", "username": "ada", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "a@b.co", "username": "ada", "password": "aaaaaaaaaaaaaaa"}),
            "password",
        ),
        (
            json!({"email": "a@b.co", "username": "ada", "password": "x".repeat(300)}),
            "password",
        ),
        (json!({"email": "a@b.co", "username": "ada"}), "password"),
        (
            json!({"email": "a@b.co", "username": 7, "password": PASSWORD}),
            "username",
        ),
    ];
    for (body, field) in cases {
        let res = app.post_json("/api/auth/signup", &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{msg:?} should name {field}");
    }
    let (n,): (i64,) = sqlx::query_as("select count(*) from users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing is written for bad input");
}

#[tokio::test]
async fn signup_conflicts_on_taken_email_or_username() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("ada@example.com", "ada", PASSWORD)
            .await
            .status(),
        201
    );
    let res = app.signup("ADA@example.com", "other", PASSWORD).await;
    assert_eq!(res.status(), 409);
    assert_eq!(error_code(res).await, "conflict");
    let res = app.signup("other@example.com", "ADA", PASSWORD).await;
    assert_eq!(res.status(), 409);
    let (n,): (i64,) = sqlx::query_as("select count(*) from workspaces")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 1, "a failed signup leaves no workspace behind");
}

#[tokio::test]
async fn signin_does_not_tell_unknown_email_from_wrong_password() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let wrong = app.signin(&user.email, "wrong password here").await;
    let unknown = app.signin("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let (a, b): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(a, b);
}

#[tokio::test]
async fn signin_is_throttled_per_email() {
    let app = spawn_app().await;
    let user = app.new_user().await; // one successful sign-in resets the count
    for _ in 0..5 {
        assert_eq!(
            app.signin(&user.email, "wrong password here")
                .await
                .status(),
            401
        );
    }
    // Even the right password is refused while throttled.
    let res = app.signin(&user.email, PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    assert_eq!(error_code(res).await, "rate_limited");
    // Another email from the same address is not affected by this email's count.
    let other = app.new_user().await;
    assert_eq!(app.signin(&other.email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn signin_is_throttled_per_ip_across_emails() {
    let app = spawn_app_with(|c| c.auth.signin_max_per_ip = 3).await;
    for i in 0..3 {
        let res = app
            .signin(&format!("nobody{i}@example.com"), PASSWORD)
            .await;
        assert_eq!(res.status(), 401);
    }
    let res = app.signin("nobody9@example.com", PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn throttle_counts_are_shared_between_nodes() {
    // Two servers, one Redis prefix: the count made on one holds on the other.
    let first = spawn_app().await;
    let prefix = first.config.redis.key_prefix.clone();
    let db_url = first.config.database.url.clone();
    let second = spawn_app_with(move |c| {
        c.redis.key_prefix = prefix;
        c.database.url = db_url;
    })
    .await;
    let user = first.new_user().await;
    for i in 0..5 {
        let node = if i % 2 == 0 { &first } else { &second };
        assert_eq!(
            node.signin(&user.email, "wrong password here")
                .await
                .status(),
            401
        );
    }
    assert_eq!(second.signin(&user.email, PASSWORD).await.status(), 429);
    assert_eq!(first.signin(&user.email, PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn throttle_falls_back_to_local_counts_without_redis() {
    let app = spawn_app_with(|c| {
        c.redis.url = Some(switchboard::config::Secret::new("redis://127.0.0.1:1"))
    })
    .await;
    let user = app.new_user().await;
    for _ in 0..5 {
        assert_eq!(
            app.signin(&user.email, "wrong password here")
                .await
                .status(),
            401
        );
    }
    assert_eq!(app.signin(&user.email, PASSWORD).await.status(), 429);
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["limits"], "local");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn tampered_and_foreign_jwts_are_rejected() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let secret = app
        .config
        .auth
        .jwt_secret
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let sign = |claims: Value, key: &str, alg: Algorithm| {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let good = json!({"sub": user.id, "iat": now(), "exp": now() + 600, "iss": "switchboard", "aud": "switchboard-api"});
    // Sanity: a correctly signed token of our own making is accepted, so the rejections below are meaningful.
    let ok = sign(good.clone(), &secret, Algorithm::HS256);
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .bearer_auth(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let mut flipped = user.access_token.clone();
    let mid = flipped.find('.').unwrap() + 5;
    let c = if &flipped[mid..=mid] == "A" { "B" } else { "A" };
    flipped.replace_range(mid..=mid, c);

    let bad = [
        ("alg none", alg_none),
        (
            "wrong key",
            sign(
                good.clone(),
                "another-secret-another-secret-0123456789",
                Algorithm::HS256,
            ),
        ),
        ("HS512", sign(good.clone(), &secret, Algorithm::HS512)),
        (
            "expired",
            sign(with("exp", json!(now() - 3600)), &secret, Algorithm::HS256),
        ),
        (
            "wrong aud",
            sign(
                with("aud", json!("someone-else")),
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "wrong iss",
            sign(with("iss", json!("evil")), &secret, Algorithm::HS256),
        ),
        ("no exp", sign(without("exp"), &secret, Algorithm::HS256)),
        ("no iat", sign(without("iat"), &secret, Algorithm::HS256)),
        ("no sub", sign(without("sub"), &secret, Algorithm::HS256)),
        ("tampered payload", flipped),
        ("garbage", "not.a.jwt".into()),
    ];
    for (name, token) in bad {
        let res = app
            .client
            .get(app.url("/api/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{name}");
        assert_eq!(error_code(res).await, "unauthorized", "{name}");
    }
    for header in ["", "Bearer", "Bearer ", "Basic abc", "token"] {
        let res = app
            .client
            .get(app.url("/api/auth/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{header:?}");
    }
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn auth_endpoints_reject_malformed_bodies() {
    let app = spawn_app().await;
    for path in [
        "/api/auth/signup",
        "/api/auth/signin",
        "/api/auth/refresh",
        "/api/auth/signout",
    ] {
        let res = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(error_code(res).await, "invalid_request");
        let res = app
            .client
            .post(app.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{path}");
        assert_eq!(error_code(res).await, "unsupported_media_type");
        let res = app.post_json(path, &json!([1, 2, 3])).await;
        assert_eq!(res.status(), 400, "{path}");
        let huge = json!({ "email": "x".repeat(2 * 1024 * 1024) });
        let res = app.post_json(path, &huge).await;
        assert_eq!(res.status(), 413, "{path}");
        assert_eq!(error_code(res).await, "payload_too_large");
    }
}
