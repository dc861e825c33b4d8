//! Disabling an account closes the WebSockets it already has open (4001),
//! and only its own: another user's socket on the same chat server stays.

use serde_json::json;

use crate::{admin::make_admin, helpers::spawn_app};

#[tokio::test]
async fn disabling_a_user_closes_their_open_sockets_with_4001() {
    let app = spawn_app().await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;
    let victim = app.new_user().await;
    let bystander = app.new_user().await;

    let mut first = app.ws(&victim.access_token).await;
    let mut second = app.ws(&victim.access_token).await;
    let mut other = app.ws(&bystander.access_token).await;
    // Every socket is admitted (and registered) before the disable.
    for ws in [&mut first, &mut second, &mut other] {
        ws.send(json!({ "type": "ping" })).await;
        assert_eq!(ws.next_of("pong").await["type"], "pong");
    }

    let res = app
        .client
        .put(app.url(&format!("/api/admin/users/{}/disabled", victim.id)))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    assert_eq!(first.close_code().await, Some(4001));
    assert_eq!(second.close_code().await, Some(4001));
    other.send(json!({ "type": "ping" })).await;
    assert_eq!(other.next_of("pong").await["type"], "pong");

    // And the account cannot come back on a new socket.
    let mut again = app.ws(&victim.access_token).await;
    assert_eq!(again.close_code().await, Some(4001));
}
