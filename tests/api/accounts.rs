//! Accounts over the real pipeline: sign up, verify, forget the password,
//! reset it, and the rules around one-time tokens and unverified accounts.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    email::{email_app, signup_and_get_token},
    helpers::{PASSWORD, error_code, spawn_app_with},
    smtp_sink::SmtpSink,
};

const NEW_PASSWORD: &str = "a brand new passphrase 42";

#[tokio::test]
async fn sign_up_verify_forget_and_reset_the_password() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let email = format!("ada-{}@example.com", Uuid::new_v4().simple());
    let token = signup_and_get_token(&app, &sink, &email).await;
    let mail = &sink.mails_to(&email)[0];
    assert!(
        mail.text()
            .contains(&format!("http://127.0.0.1:8080/verify-email?token={token}"))
    );
    assert!(mail.data.contains("text/html"), "an HTML part too");

    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), 200);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email_verified"], true);
    // A link works once.
    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_request");

    // Forgot the password.
    let signed_in: Value = app.signin(&email, PASSWORD).await.json().await.unwrap();
    let old_refresh = signed_in["refresh_token"].as_str().unwrap().to_owned();
    let res = app
        .post_json(
            "/api/auth/password-reset/request",
            &json!({ "email": email.to_uppercase() }),
        )
        .await;
    assert_eq!(res.status(), 202);
    let reset = sink
        .wait_for(&email, "Reset your password")
        .await
        .token_for("reset-password")
        .unwrap();
    // The sign-up rules hold, and a refused password leaves the link working.
    let res = app
        .post_json(
            "/api/auth/password-reset/confirm",
            &json!({ "token": reset, "password": "short" }),
        )
        .await;
    assert_eq!(res.status(), 400);
    // A reset token is no verification token.
    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": reset }))
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .post_json(
            "/api/auth/password-reset/confirm",
            &json!({ "token": reset, "password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .post_json(
            "/api/auth/password-reset/confirm",
            &json!({ "token": reset, "password": "another fine passphrase" }),
        )
        .await;
    assert_eq!(res.status(), 400, "used once");

    assert_eq!(app.signin(&email, PASSWORD).await.status(), 401);
    assert_eq!(app.signin(&email, NEW_PASSWORD).await.status(), 200);
    // Every session signed in before the reset is gone.
    let res = app
        .post_json(
            "/api/auth/refresh",
            &json!({ "refresh_token": old_refresh }),
        )
        .await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn tokens_cannot_be_forged_tampered_or_used_after_expiry() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let email = format!("eve-{}@example.com", Uuid::new_v4().simple());
    let token = signup_and_get_token(&app, &sink, &email).await;

    let forged = hex_token();
    let mut tampered = token.clone().into_bytes();
    tampered[0] = if tampered[0] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        json!({ "token": forged }),
        json!({ "token": tampered }),
        json!({ "token": "" }),
        json!({ "token": "' or 1=1 --" }),
        json!({ "token": "a".repeat(100_000) }),
    ] {
        let res = app.post_json("/api/auth/verify-email", &bad).await;
        assert!(
            matches!(res.status().as_u16(), 400 | 413),
            "{}",
            res.status()
        );
    }
    for bad in [json!({}), json!({ "token": 5 }), json!([])] {
        let res = app.post_json("/api/auth/verify-email", &bad).await;
        assert_eq!(res.status(), 400);
    }
    let res = app
        .client
        .post(app.url("/api/auth/verify-email"))
        .body("token=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);

    // Expired: the real token stops working once past its expiry.
    sqlx::query("update email_tokens set expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), 400);
    let verified: bool =
        sqlx::query_scalar("select email_verified from users where lower(email) = lower($1)")
            .bind(&email)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(!verified);
    // Only hashes are stored.
    let stored: i64 = sqlx::query_scalar("select count(*) from email_tokens where token_hash = $1")
        .bind(&token)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

fn hex_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

#[tokio::test]
async fn resend_replaces_the_link_and_is_throttled() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| c.accounts.resend_max = 2).await;
    let email = format!("re-{}@example.com", Uuid::new_v4().simple());
    let first = signup_and_get_token(&app, &sink, &email).await;
    let body: Value = app.signin(&email, PASSWORD).await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let resend = || {
        app.client
            .post(app.url("/api/auth/verify-email/resend"))
            .bearer_auth(&access)
            .send()
    };
    assert_eq!(resend().await.unwrap().status(), 202);
    let mails = sink.wait_for_count(2).await;
    let second = mails[1].token_for("verify-email").unwrap();
    assert_ne!(first, second);
    assert_eq!(resend().await.unwrap().status(), 202);
    let res = resend().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let res = app
        .client
        .post(app.url("/api/auth/verify-email/resend"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "needs a signed-in user");

    // Only the newest link works.
    let newest = sink.wait_for_count(3).await[2]
        .token_for("verify-email")
        .unwrap();
    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": first }))
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": newest }))
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .post(app.url("/api/auth/verify-email/resend"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409, "already verified");
}

#[tokio::test]
async fn reset_requests_look_the_same_and_are_throttled() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| {
        c.accounts.reset_max_per_email = 2;
        c.accounts.reset_max_per_ip = 4;
    })
    .await;
    let known = format!("known-{}@example.com", Uuid::new_v4().simple());
    signup_and_get_token(&app, &sink, &known).await;
    let unknown = format!("nobody-{}@example.com", Uuid::new_v4().simple());
    let app = &app;
    let ask = |email: String| async move {
        app.post_json(
            "/api/auth/password-reset/request",
            &json!({ "email": email }),
        )
        .await
    };
    let a = ask(known.clone()).await;
    let b = ask(unknown.clone()).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 202));
    assert_eq!(
        a.text().await.unwrap(),
        b.text().await.unwrap(),
        "the same answer"
    );
    assert_eq!(ask(known.clone()).await.status(), 202);
    let res = ask(known.clone()).await;
    assert_eq!(res.status(), 429, "per email");
    assert_eq!(error_code(res).await, "rate_limited");
    // Four from this address so far counts against the IP too.
    assert_eq!(ask(format!("x-{}", unknown)).await.status(), 429, "per IP");

    for bad in [
        json!({}),
        json!({ "email": "not-an-email" }),
        json!({ "email": "a".repeat(300) }),
    ] {
        let res = app
            .post_json("/api/auth/password-reset/request", &bad)
            .await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    // Only the known address got mail (verification plus two resets).
    sink.wait_for_count(3).await;
    assert!(sink.mails_to(&unknown).is_empty());
}

#[tokio::test]
async fn an_unverified_account_cannot_spend_until_it_verifies() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| c.accounts.unverified_may_spend = false).await;
    let email = format!("new-{}@example.com", Uuid::new_v4().simple());
    let token = signup_and_get_token(&app, &sink, &email).await;
    let body: Value = app.signin(&email, PASSWORD).await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let chat = app.create_chat(&access).await;

    let send = || {
        app.client
            .post(app.url(&format!("/api/chats/{chat}/messages")))
            .bearer_auth(&access)
            .json(&json!({ "content": "hello" }))
            .send()
    };
    let res = send().await.unwrap();
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("verify your email")
    );
    let res = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&access)
        .json(&json!({ "name": "k" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let mut ws = app.ws(&access).await;
    ws.send_message(chat, "c1", "hello").await;
    let frame = ws.next_of("error").await;
    assert_eq!(frame["code"], "forbidden");
    let used: i64 = sqlx::query_scalar("select count(*) from usage_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(used, 0, "nothing spent");

    let res = app
        .post_json("/api/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(send().await.unwrap().status(), 200);
    ws.send_message(chat, "c2", "hello again").await;
    assert_eq!(ws.next_of("ack").await["client_msg_id"], "c2");
}

#[tokio::test]
async fn development_and_test_settings_let_unverified_accounts_chat() {
    let app = spawn_app_with(|_| {}).await;
    assert!(app.config.accounts.unverified_may_spend);
    let user = app.new_user().await;
    let res = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "name": "k" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Sign-up queued a verification email in the same transaction, even with the relay off.
    let queued: Vec<(String, Value)> =
        sqlx::query_as("select template, payload from email_outbox where to_address = $1")
            .bind(&user.email)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0, "verify_email");
    assert!(
        queued[0].1["link"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:8080/verify-email?token=")
    );
}
