//! The HTTP and WebSocket edge (issue 11, items 6–9): slow consumers, a
//! provider silent mid-stream, connection caps and timeouts, and the smaller
//! edge findings. Raw TCP where the point is what a misbehaving client does.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::config::{AppEnv, Config, Secret};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, error_code, eventually, spawn_app_with},
    mock_llm::{Behavior, MockLlm},
};

fn addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP connection to the app from the given loopback address.
async fn connect_from(app: &TestApp, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
    socket.connect(addr(app)).await.unwrap()
}

/// Reads until the server closes (or `within` passes): what it sent, and
/// whether it closed.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP response head (and whatever body came with it).
pub(crate) async fn read_response(tcp: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "no response within {within:?}: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    // The rest of a short body, if it is already there.
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let app = spawn_app_with(|c| c.edge.header_read_timeout_secs = 1).await;
    let mut tcp = connect_from(&app, "127.0.0.1").await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header line every 200 ms, never the blank line that ends the head:
    // the server must give up on its own.
    let closed = async {
        for i in 0..100 {
            if tcp
                .write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            let mut buf = [0u8; 512];
            // Closed (EOF or an error); a timeout or data means still open.
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await
            {
                return true;
            }
        }
        false
    };
    assert!(
        closed.await,
        "a dribbled request head kept its connection for 20 s"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = spawn_app_with(|c| c.edge.keepalive_timeout_secs = 1).await;
    let mut tcp = connect_from(&app, "127.0.0.1").await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut tcp, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, closed) = read_to_close(&mut tcp, Duration::from_secs(15)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    eventually(Duration::from_secs(5), "the slot is freed", || async {
        (app.state.edge.conns.open_from(ip("127.0.0.1")) == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_oversized_content_length_is_refused_before_the_body() {
    // A long body timeout: only an answer given without waiting for the body
    // arrives within the read below.
    let app = spawn_app_with(|c| c.edge.body_timeout_secs = 600).await;
    for path in ["/api/auth/signin", "/api/documents", "/v1/chat/completions"] {
        let mut tcp = connect_from(&app, "127.0.0.1").await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            if path == "/api/documents" {
                50_000_000
            } else {
                5_000_000
            }
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let res = read_response(&mut tcp, Duration::from_secs(20)).await;
        assert!(res.starts_with("HTTP/1.1 413"), "{path}: {res}");
        assert!(res.contains("payload_too_large"), "{path}: {res}");
        let (_, closed) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
        assert!(closed, "{path}: the unread body's connection stays open");
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let app = spawn_app_with(|c| c.edge.body_timeout_secs = 1).await;
    let mut tcp = connect_from(&app, "127.0.0.1").await;
    tcp.write_all(
        b"POST /api/auth/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let res = read_response(&mut tcp, Duration::from_secs(20)).await;
    assert!(res.starts_with("HTTP/1.1 408"), "{res}");
    assert!(res.contains("request_timeout"), "{res}");
}

#[tokio::test]
async fn the_per_address_cap_refuses_one_more_and_others_still_get_in() {
    let app = spawn_app_with(|c| {
        c.edge.max_connections_per_ip = 3;
        c.edge.header_read_timeout_secs = 60;
        c.edge.keepalive_timeout_secs = 60;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&app, "127.0.0.1").await);
    }
    eventually(Duration::from_secs(5), "3 connections counted", || async {
        (app.state.edge.conns.open_from(ip("127.0.0.1")) == 3).then_some(())
    })
    .await;

    // The fourth from the same address: a 429 in our shape, then closed.
    let mut fourth = connect_from(&app, "127.0.0.1").await;
    let _ = fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (res, closed) = read_to_close(&mut fourth, Duration::from_secs(10)).await;
    assert!(res.starts_with("HTTP/1.1 429"), "{res}");
    assert!(res.contains("rate_limited"), "{res}");
    assert!(closed);

    // Another address is not affected: /health answers.
    let other = reqwest::Client::builder()
        .local_address(ip("127.0.0.2"))
        .build()
        .unwrap();
    let res = other.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // Closing the held connections frees the address's slots.
    drop(held);
    eventually(Duration::from_secs(5), "slots freed", || async {
        (app.state.edge.conns.open_from(ip("127.0.0.1")) == 0).then_some(())
    })
    .await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn sse_streams_are_capped_per_user() {
    let app = spawn_app_with(|c| c.edge.max_sse_streams_per_user = 2).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let chat = app.create_chat(&alice.access_token).await;
    let bob_chat = app.create_chat(&bob.access_token).await;
    let open = |token: String, chat: Uuid| {
        let client = app.client.clone();
        let url = app.url(&format!("/api/chats/{chat}/events"));
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let first = open(alice.access_token.clone(), chat).await;
    let second = open(alice.access_token.clone(), chat).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open(alice.access_token.clone(), chat).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    assert_eq!(error_code(third).await, "rate_limited");
    // A streamed send counts too, and is refused before it starts an answer.
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&alice.access_token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let (n,): (i64,) = sqlx::query_as("select count(*) from messages where chat_id = $1")
        .bind(chat)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0, "a refused stream must not send");

    // Another user has their own allowance.
    let bobs = open(bob.access_token.clone(), bob_chat).await;
    assert_eq!(bobs.status(), 200);

    // Closing a stream gives its place back.
    drop(first);
    eventually(Duration::from_secs(5), "a stream place freed", || {
        let open = open(alice.access_token.clone(), chat);
        async move { (open.await.status() == 200).then_some(()) }
    })
    .await;
    drop((second, bobs));
}

#[tokio::test]
async fn sockets_waiting_to_authenticate_are_capped() {
    let app = spawn_app_with(|c| c.edge.max_unauthenticated_ws = 2).await;
    let user = app.new_user().await;
    let mut a = app.ws_anonymous().await;
    let _b = app.ws_anonymous().await;
    let refused = tokio_tungstenite::connect_async(app.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
        }
        other => panic!("a third unauthenticated socket was let in: {other:?}"),
    }
    // A socket with a Bearer header is not waiting to authenticate.
    let mut bearer = app.ws(&user.access_token).await;
    bearer.send(json!({"type": "ping"})).await;
    assert_eq!(bearer.next().await["type"], "pong");
    // Authenticating frees the place.
    a.send(json!({"type": "auth", "token": user.access_token}))
        .await;
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.next_of("pong").await["type"], "pong");
    let _c = app.ws_anonymous().await;
}

#[tokio::test]
async fn subscribe_attempts_are_capped_per_socket() {
    let app = spawn_app_with(|c| c.edge.ws_subscribes_per_minute = 3).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    for _ in 0..3 {
        ws.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 0}))
            .await;
        ws.send(json!({"type": "ping"})).await;
        assert_eq!(ws.next().await["type"], "pong");
    }
    ws.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 0}))
        .await;
    let refused = ws.next().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(
        refused["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s))
    );
    // The socket itself stays usable.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");
}

/// A socket that stops reading is dropped by the server (its writes time
/// out), and counts toward the user's cap until then.
#[tokio::test]
async fn a_slow_consumer_that_never_reads_is_closed_and_released() {
    let app = spawn_app_with(|c| {
        c.ws.outbound_queue = 32;
        c.ws.max_connections_per_user = 1;
        c.edge.ws_write_timeout_secs = 1;
        c.edge.ws_slow_grace_secs = 1;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    // 24 messages of 400 kB: ~10 MB to replay, more than the kernel buffers
    // on both sides hold, and fewer frames than the queue.
    let big = "x".repeat(400_000);
    for seq in 1..=24_i64 {
        sqlx::query(
            "insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status) \
             values ($1, $2, $3, 'user', $4, $5, $6, 'complete')",
        )
        .bind(Uuid::now_v7())
        .bind(chat)
        .bind(seq)
        .bind(user.id)
        .bind(format!("m{seq}"))
        .bind(&big)
        .execute(&app.db)
        .await
        .unwrap();
    }
    sqlx::query("update chats set last_seq = 24 where id = $1")
        .bind(chat)
        .execute(&app.db)
        .await
        .unwrap();

    // From its own address, with a small receive buffer, never read.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::new(ip("127.0.0.3"), 0)).unwrap();
    let tcp = socket.connect(addr(&app)).await.unwrap();
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", user.access_token).parse().unwrap(),
    );
    let (mut slow, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    slow.send(Message::Text(
        json!({"type": "subscribe", "chat_id": chat, "since_seq": 0})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    // Pings whose pongs overflow the queue behind the stuck replay.
    for _ in 0..64 {
        if slow
            .send(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }

    // The user may open a socket again only once the slow one is dropped
    // (one socket per user), and its connection is then released too: the
    // TCP slot is freed when the connection's task ends, just after the
    // socket's, so that is awaited rather than sampled.
    eventually(Duration::from_secs(30), "a new socket admitted", || async {
        let mut ws = app.ws(&user.access_token).await;
        ws.answers_ping().await.then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the slow connection released",
        || async { (app.state.edge.conns.open_from(ip("127.0.0.3")) == 0).then_some(()) },
    )
    .await;
    drop(slow);
}

impl crate::ws_client::WsClient {
    /// After a connect: whether the socket answers a ping (false when the
    /// server refuses it, closes it, or says nothing).
    async fn answers_ping(&mut self) -> bool {
        let ping = Message::Text(json!({"type": "ping"}).to_string().into());
        if self.ws.send(ping).await.is_err() {
            return false;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("pong") => return true,
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return false,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

#[tokio::test]
async fn a_provider_silent_mid_stream_fails_the_answer_explicitly() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::slow(3, Duration::from_secs(30)));
    let app = spawn_app_with(|c| {
        c.providers.openai_base_url = Some(mock.openai_base());
        c.providers.openai_api_key = Some(Secret::new("sk-test-key"));
        c.providers.free_tier = "openai".into();
        c.routing.inter_token_timeout_ms = 300;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "m1", "hello").await;
    let answer = ws.answer().await;
    assert_eq!(answer.text, "t0 ", "the first token went out");
    assert_eq!(answer.end["type"], "error", "{}", answer.end);
    assert_eq!(answer.end["code"], "provider_unavailable");
    let msg = answer.end["message"].as_str().unwrap();
    assert!(msg.contains("silent mid-answer"), "{msg}");
    let status: String = eventually(Duration::from_secs(10), "the answer is final", || async {
        let s: String = sqlx::query_scalar("select status from messages where id = $1")
            .bind(answer.assistant_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        (s != "streaming").then_some(s)
    })
    .await;
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn rest_json_answers_keep_the_failures_retry_after() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::Status {
        code: 429,
        retry_after: Some(7),
    });
    let app = spawn_app_with(|c| {
        c.providers.openai_base_url = Some(mock.openai_base());
        c.providers.openai_api_key = Some(Secret::new("sk-test-key"));
        c.providers.free_tier = "openai".into();
        c.routing.max_retries = 0;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error() || res.status().is_server_error());
    assert_eq!(
        res.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("7".to_owned()),
        "status {}",
        res.status()
    );
}

#[tokio::test]
async fn forwarded_for_counts_from_the_right() {
    let app = spawn_app_with(|c| {
        c.server.trust_forwarded_for = true;
        c.auth.signup_max_per_ip = 1;
    })
    .await;
    let signup = |xff: &'static str| {
        let client = app.client.clone();
        let url = app.url("/api/auth/signup");
        async move {
            let tag = &Uuid::new_v4().simple().to_string()[..12];
            client
                .post(url)
                .header("x-forwarded-for", xff)
                .json(&json!({"email": format!("f-{tag}@example.com"), "username": format!("f{tag}"), "password": crate::helpers::PASSWORD}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(signup("1.1.1.1, 9.9.9.9").await, 201);
    // The client controls the left part only: changing it changes nothing.
    assert_eq!(signup("2.2.2.2, 9.9.9.9").await, 429);
    assert_eq!(signup("9.9.9.9").await, 429);
    // Our proxy saw another client.
    assert_eq!(signup("1.1.1.1, 8.8.8.8").await, 201);
}

#[tokio::test]
async fn nul_bytes_are_invalid_requests_everywhere() {
    let app = spawn_app_with(|_| {}).await;
    let res = app.signin("nul\u{0}@example.com", "pass\u{0}word!!").await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_request");
    let res = app
        .signup("a@example.com", "user\u{0}name", crate::helpers::PASSWORD)
        .await;
    assert_eq!(res.status(), 400);

    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({"content": "hello\u{0}world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_request");
    let res = app
        .client
        .post(app.url("/api/chats"))
        .bearer_auth(&user.access_token)
        .json(&json!({"title": "t\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "nul-1", "hello\u{0}").await;
    let f = ws.next().await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], "invalid_request", "{f}");
    // Nothing was stored.
    let (n,): (i64,) = sqlx::query_as("select count(*) from messages where chat_id = $1")
        .bind(chat)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn caller_request_ids_are_kept_only_when_safe() {
    let app = spawn_app_with(|_| {}).await;
    let id_for = |sent: String| {
        let client = app.client.clone();
        let url = app.url("/health");
        async move {
            let res = client
                .get(url)
                .header("x-request-id", sent)
                .send()
                .await
                .unwrap();
            res.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(id_for("abc-123_x.y:z".into()).await, "abc-123_x.y:z");
    for bad in [
        "<script>alert(1)</script>".to_owned(),
        "a".repeat(65),
        "two words".into(),
    ] {
        let got = id_for(bad.clone()).await;
        assert_ne!(got, bad);
        assert!(Uuid::parse_str(&got).is_ok(), "a generated id, got {got}");
    }
}

#[tokio::test]
async fn names_and_titles_refuse_bidi_and_zero_width_characters() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user().await;
    let post = |path: &'static str, body: Value| {
        let client = app.client.clone();
        let url = app.url(path);
        let token = user.access_token.clone();
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
    for bad in ["invoice\u{202E}fdp.exe", "zero\u{200B}width", "a\u{2066}b"] {
        for (path, field) in [
            ("/api/chats", "title"),
            ("/api/workspaces", "name"),
            ("/api/keys", "name"),
        ] {
            let res = post(path, json!({ field: bad })).await;
            assert_eq!(res.status(), 400, "{path} {bad:?}");
            let body: Value = res.json().await.unwrap();
            let msg = body["error"]["message"].as_str().unwrap();
            assert!(msg.starts_with(field), "{path}: {msg}");
        }
    }
    // A rename is checked the same way.
    let chat = app.create_chat(&user.access_token).await;
    let res = app
        .client
        .patch(app.url(&format!("/api/chats/{chat}")))
        .bearer_auth(&user.access_token)
        .json(&json!({"title": "x\u{202E}y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Emoji joined by a zero-width joiner are still fine.
    let res = post("/api/chats", json!({"title": "dev 👩\u{200D}💻"})).await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn last_event_ids_that_would_wrap_are_refused() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    for id in [
        "-9223372036854775808:0",
        "9223372036854775808",
        "-1",
        "1:99999999999",
    ] {
        let res = app
            .client
            .get(app.url(&format!("/api/chats/{chat}/events")))
            .bearer_auth(&user.access_token)
            .header("last-event-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{id}");
        assert_eq!(error_code(res).await, "invalid_request");
    }
}

fn production(vars: &[(&str, &str)]) -> Vec<String> {
    let base = [
        (
            "DATABASE_URL",
            "postgres://app:pw@db.internal:5432/switchboard",
        ),
        ("REDIS_URL", "redis://cache.internal:6379"),
        ("AMQP_URL", "amqp://app:pw@mq.internal:5672/%2f"),
        ("JWT_SECRET", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"),
        (
            "REFRESH_TOKEN_SECRET",
            "2c26b46b68ffc68ff99b453c1d30413413422d70",
        ),
        ("AUTH_SECRET", "fcde2b2edba56bf408601fb721fe9b5c338d10ee"),
        ("FRONTEND_URL", "https://chat.example.com"),
        ("CORS_ORIGIN", "https://chat.example.com"),
        // The browser client's files are not what this test is about.
        ("SWITCHBOARD_WEB__ENABLED", "false"),
    ];
    let merged: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !vars.iter().any(|(o, _)| o == k))
        .chain(vars.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        AppEnv::Production,
        merged,
    )
    .unwrap()
    .problems()
}

#[test]
fn production_refuses_guessable_and_shared_secrets() {
    assert_eq!(production(&[]), Vec::<String>::new());
    let a32 = "a".repeat(32);
    let p = production(&[("JWT_SECRET", a32.as_str())]);
    assert!(
        p.iter()
            .any(|p| p.contains("JWT_SECRET is too predictable")),
        "{p:#?}"
    );
    let p = production(&[("AUTH_SECRET", "abababababababababababababababab")]);
    assert!(
        p.iter()
            .any(|p| p.contains("AUTH_SECRET is too predictable")),
        "{p:#?}"
    );
    let p = production(&[("AUTH_SECRET", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b")]);
    assert!(
        p.iter()
            .any(|p| p.contains("AUTH_SECRET and JWT_SECRET must differ")),
        "{p:#?}"
    );
}
