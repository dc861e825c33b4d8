//! Races and floods against accounts: refresh against refresh and against
//! sign-out, and the sign-up and sign-in throttles under concurrency.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, spawn_app, spawn_app_with};

async fn refresh(app: &TestApp, token: &str) -> Option<String> {
    let res = app
        .post_json("/api/auth/refresh", &json!({ "refresh_token": token }))
        .await;
    if res.status() != 200 {
        return None;
    }
    let body: Value = res.json().await.unwrap();
    Some(body["refresh_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_reused_token_revokes_the_winners_successor_too() {
    let app = spawn_app().await;
    for _ in 0..15 {
        let user = app.new_user().await;
        let (a, b) = tokio::join!(
            refresh(&app, &user.refresh_token),
            refresh(&app, &user.refresh_token)
        );
        let winners: Vec<String> = [a, b].into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "one refresh succeeds");
        // The loser presented a spent token: the whole family is revoked,
        // including the successor the winner just received.
        assert_eq!(
            refresh(&app, &winners[0]).await,
            None,
            "the winner's successor died with its family"
        );
    }
}

#[tokio::test]
async fn a_refresh_racing_sign_out_leaves_nothing_alive() {
    let app = spawn_app().await;
    for _ in 0..15 {
        let user = app.new_user().await;
        let body = json!({ "refresh_token": user.refresh_token });
        let (signed_out, refreshed) = tokio::join!(
            app.post_json("/api/auth/signout", &body),
            refresh(&app, &user.refresh_token)
        );
        assert_eq!(signed_out.status(), 204);
        if let Some(successor) = refreshed {
            assert_eq!(
                refresh(&app, &successor).await,
                None,
                "a successor issued beside a sign-out is revoked with its family"
            );
        }
    }
}

#[tokio::test]
async fn sign_ups_are_throttled_per_address() {
    let app = spawn_app_with(|c| c.auth.signup_max_per_ip = 3).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let res = app
            .signup(
                &format!("flood{i}@example.com"),
                &format!("flood{i}"),
                PASSWORD,
            )
            .await;
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, vec![201, 201, 201, 429, 429]);
    let made: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(made, 3, "refused sign-ups create nothing");
}

#[tokio::test]
async fn concurrent_failed_sign_ins_cannot_race_past_the_per_address_limit() {
    const LIMIT: u32 = 5;
    let app = spawn_app_with(|c| c.auth.signin_max_per_ip = LIMIT).await;
    let attempts = (0..30).map(|i| {
        let app = &app;
        async move {
            app.signin(&format!("nobody{i}@example.com"), "wrong password here")
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let processed = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(processed + throttled, 30, "{statuses:?}");
    assert!(
        processed <= LIMIT as usize,
        "{processed} failures processed against a limit of {LIMIT}"
    );

    // A success does not count against the address, and its tokens are never cached.
    let app = spawn_app_with(|c| c.auth.signin_max_per_ip = 2).await;
    let user = app.new_user().await;
    for _ in 0..4 {
        let res = app.signin(&user.email, PASSWORD).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
    let res = app
        .post_json(
            "/api/auth/refresh",
            &json!({ "refresh_token": user.refresh_token }),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
}
