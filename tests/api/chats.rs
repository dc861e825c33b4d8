//! `/api/chats`: CRUD, paging, isolation between users, validation, messages.

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, error_code, spawn_app};

fn req(app: &TestApp, user: &TestUser, method: Method, path: &str) -> RequestBuilder {
    app.client
        .request(method, app.url(path))
        .bearer_auth(&user.access_token)
}

async fn create_chat(app: &TestApp, user: &TestUser, body: Value) -> Value {
    let res = req(app, user, Method::POST, "/api/chats")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

async fn get(app: &TestApp, user: &TestUser, path: &str) -> Response {
    req(app, user, Method::GET, path).send().await.unwrap()
}

async fn personal_workspace(app: &TestApp, user: &TestUser) -> Uuid {
    sqlx::query_scalar(
        "select workspace_id from workspace_members where user_id = $1 and role = 'owner'",
    )
    .bind(user.id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// Asserts a 400 `invalid_request` whose message names `field`.
async fn assert_invalid(res: Response, field: &str, what: &str) {
    assert_eq!(res.status(), 400, "{what}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{what}: {body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(field), "{what}: {msg:?} should name {field}");
}

#[tokio::test]
async fn create_get_rename_delete() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let workspace = personal_workspace(&app, &user).await;

    // Without a body's fields: the default title in the personal workspace.
    let chat = create_chat(&app, &user, json!({})).await;
    assert_eq!(chat["title"], "New chat");
    assert_eq!(chat["workspace_id"], workspace.to_string());
    assert_eq!(chat["last_seq"], 0);
    let id = chat["id"].as_str().unwrap().to_owned();
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let (created_by,): (Option<Uuid>,) =
        sqlx::query_as("select created_by from chats where id = $1")
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(created_by, Some(user.id));

    // A title is trimmed; an explicit workspace the user belongs to is accepted.
    let titled = create_chat(
        &app,
        &user,
        json!({ "title": "  Plans  ", "workspace_id": workspace }),
    )
    .await;
    assert_eq!(titled["title"], "Plans");
    assert_eq!(titled["workspace_id"], workspace.to_string());
    // 200 characters is the limit, counted in characters, not bytes.
    let long = create_chat(&app, &user, json!({ "title": "é".repeat(200) })).await;
    assert_eq!(long["title"].as_str().unwrap().chars().count(), 200);

    let res = get(&app, &user, &format!("/api/chats/{id}")).await;
    assert_eq!(res.status(), 200);
    let fetched: Value = res.json().await.unwrap();
    assert_eq!(fetched, chat);

    let res = req(&app, &user, Method::PATCH, &format!("/api/chats/{id}"))
        .json(&json!({ "title": " Renamed " }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let renamed: Value = res.json().await.unwrap();
    assert_eq!(renamed["title"], "Renamed");
    assert_eq!(renamed["id"], chat["id"]);
    assert_eq!(renamed["created_at"], chat["created_at"]);
    let ts = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert!(
        ts(&renamed["updated_at"]) > ts(&chat["updated_at"]),
        "rename bumps updated_at"
    );
    let fetched: Value = get(&app, &user, &format!("/api/chats/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["title"], "Renamed");

    let res = req(&app, &user, Method::DELETE, &format!("/api/chats/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.bytes().await.unwrap().is_empty());
    let res = get(&app, &user, &format!("/api/chats/{id}")).await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["message"], "chat not found");
    let res = req(&app, &user, Method::DELETE, &format!("/api/chats/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn list_pages_newest_first() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut created = Vec::new();
    for i in 0..5 {
        let chat = create_chat(&app, &user, json!({ "title": format!("chat {i}") })).await;
        created.push(chat["id"].as_str().unwrap().to_owned());
    }
    created.reverse(); // newest first

    // Default limit: everything fits, no cursor.
    let body: Value = get(&app, &user, "/api/chats").await.json().await.unwrap();
    let all: Vec<&str> = body["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(all, created);
    assert!(body["next_cursor"].is_null());
    assert_eq!(body["chats"][0]["title"], "chat 4");

    // Pages of two: 2 + 2 + 1, each cursor the last id of its page.
    let mut seen = Vec::new();
    let mut path = "/api/chats?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let res = get(&app, &user, &path).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        pages += 1;
        let ids: Vec<String> = body["chats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(ids.len() <= 2);
        seen.extend(ids.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(Some(cursor), ids.last().map(String::as_str));
                path = format!("/api/chats?limit=2&before={cursor}");
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    // Exactly a page's worth: no cursor pointing at an empty page.
    let body: Value = get(&app, &user, "/api/chats?limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["chats"].as_array().unwrap().len(), 5);
    assert!(body["next_cursor"].is_null());

    // A fresh user sees an empty list.
    let other = app.new_user().await;
    let body: Value = get(&app, &other, "/api/chats").await.json().await.unwrap();
    assert_eq!(body, json!({ "chats": [], "next_cursor": null }));
}

#[tokio::test]
async fn other_users_chats_are_not_found() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let chat = create_chat(&app, &alice, json!({ "title": "secret" })).await;
    let id = chat["id"].as_str().unwrap();
    let missing = Uuid::now_v7();

    // Bob gets exactly the answer a chat that does not exist gets.
    let not_found: Value = get(&app, &bob, &format!("/api/chats/{missing}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(not_found["error"]["message"], "chat not found");
    for (method, path, body) in [
        (Method::GET, format!("/api/chats/{id}"), None),
        (
            Method::PATCH,
            format!("/api/chats/{id}"),
            Some(json!({ "title": "mine now" })),
        ),
        (Method::DELETE, format!("/api/chats/{id}"), None),
        (Method::GET, format!("/api/chats/{id}/messages"), None),
    ] {
        let mut r = req(&app, &bob, method.clone(), &path);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let res = r.send().await.unwrap();
        assert_eq!(res.status(), 404, "{method} {path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, not_found, "{method} {path}");
    }
    let list: Value = get(&app, &bob, "/api/chats").await.json().await.unwrap();
    assert_eq!(list["chats"], json!([]));

    // Alice's chat is untouched.
    let still: Value = get(&app, &alice, &format!("/api/chats/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still, chat);

    // Bob cannot create a chat in Alice's workspace.
    let alices_workspace = personal_workspace(&app, &alice).await;
    let res = req(&app, &bob, Method::POST, "/api/chats")
        .json(&json!({ "workspace_id": alices_workspace }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "workspace not found");
    let res = req(&app, &bob, Method::POST, "/api/chats")
        .json(&json!({ "workspace_id": Uuid::now_v7() }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Once Bob is a member of Alice's workspace, its chats are his to see too,
    // while new chats of his still default to his own workspace.
    sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) values ($1, $2, 'member')",
    )
    .bind(alices_workspace)
    .bind(bob.id)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(
        get(&app, &bob, &format!("/api/chats/{id}")).await.status(),
        200
    );
    let own = create_chat(&app, &bob, json!({})).await;
    assert_eq!(
        own["workspace_id"],
        personal_workspace(&app, &bob).await.to_string()
    );
    let shared = create_chat(&app, &bob, json!({ "workspace_id": alices_workspace })).await;
    let list: Value = get(&app, &bob, "/api/chats").await.json().await.unwrap();
    let ids: Vec<&Value> = list["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [&shared["id"], &own["id"], &chat["id"]]);
}

#[tokio::test]
async fn every_route_requires_a_token() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = create_chat(&app, &user, json!({})).await;
    let id = chat["id"].as_str().unwrap();
    for (method, path) in [
        (Method::POST, "/api/chats".to_owned()),
        (Method::GET, "/api/chats".to_owned()),
        (Method::GET, format!("/api/chats/{id}")),
        (Method::PATCH, format!("/api/chats/{id}")),
        (Method::DELETE, format!("/api/chats/{id}")),
        (Method::GET, format!("/api/chats/{id}/messages")),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .json(&json!({ "title": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
        assert_eq!(error_code(res).await, "unauthorized");
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth("not.a.jwt")
            .json(&json!({ "title": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path} with a bad token");
    }
    // Nothing changed.
    let fetched: Value = get(&app, &user, &format!("/api/chats/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, chat);
}

#[tokio::test]
async fn bad_input_is_400_naming_it() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = create_chat(&app, &user, json!({})).await;
    let id = chat["id"].as_str().unwrap();

    for title in [
        json!(""),
        json!("   "),
        json!("x".repeat(201)),
        json!("a\u{0}b"),
        json!("two\nlines"),
        json!(7),
    ] {
        let res = req(&app, &user, Method::POST, "/api/chats")
            .json(&json!({ "title": title }))
            .send()
            .await
            .unwrap();
        assert_invalid(res, "title", &format!("create with title {title}")).await;
        let res = req(&app, &user, Method::PATCH, &format!("/api/chats/{id}"))
            .json(&json!({ "title": title }))
            .send()
            .await
            .unwrap();
        assert_invalid(res, "title", &format!("rename to {title}")).await;
    }
    let res = req(&app, &user, Method::PATCH, &format!("/api/chats/{id}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_invalid(res, "title", "rename without a title").await;
    let res = req(&app, &user, Method::POST, "/api/chats")
        .json(&json!({ "workspace_id": "not-a-uuid" }))
        .send()
        .await
        .unwrap();
    assert_invalid(res, "workspace_id", "bad workspace id").await;

    // Malformed JSON.
    for (method, path) in [
        (Method::POST, "/api/chats".to_owned()),
        (Method::PATCH, format!("/api/chats/{id}")),
    ] {
        let res = req(&app, &user, method.clone(), &path)
            .header("content-type", "application/json")
            .body("{\"title\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{method} {path}");
        assert_eq!(error_code(res).await, "invalid_request");
    }

    for (path, field) in [
        ("/api/chats?limit=0", "limit"),
        ("/api/chats?limit=101", "limit"),
        ("/api/chats?limit=-1", "limit"),
        ("/api/chats?limit=abc", "limit"),
        ("/api/chats?before=nope", "before"),
    ] {
        assert_invalid(get(&app, &user, path).await, field, path).await;
    }
    assert_eq!(get(&app, &user, "/api/chats?limit=100").await.status(), 200);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("after_seq=-1", "after_seq"),
        ("after_seq=abc", "after_seq"),
    ] {
        let path = format!("/api/chats/{id}/messages?{query}");
        assert_invalid(get(&app, &user, &path).await, field, &path).await;
    }
    assert_eq!(
        get(&app, &user, &format!("/api/chats/{id}/messages?limit=200"))
            .await
            .status(),
        200
    );

    // A malformed id in the path is a 400, not a 404.
    for (method, path) in [
        (Method::GET, "/api/chats/not-a-uuid"),
        (Method::PATCH, "/api/chats/not-a-uuid"),
        (Method::DELETE, "/api/chats/not-a-uuid"),
        (Method::GET, "/api/chats/not-a-uuid/messages"),
        (Method::GET, "/api/chats/123"),
    ] {
        let res = req(&app, &user, method.clone(), path)
            .json(&json!({ "title": "x" }))
            .send()
            .await
            .unwrap();
        assert_invalid(res, "id", &format!("{method} {path}")).await;
    }

    // Nothing above changed the chat or added one.
    let fetched: Value = get(&app, &user, &format!("/api/chats/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, chat);
    let (n,): (i64,) = sqlx::query_as("select count(*) from chats")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// Inserts messages `1..=n` straight into the table, alternating user and assistant.
async fn insert_messages(app: &TestApp, chat_id: Uuid, author: Uuid, n: i64) {
    for seq in 1..=n {
        let user_turn = seq % 2 == 1;
        sqlx::query(
            "insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status,
                                   provider, model, finish_reason, input_tokens, output_tokens, cost_micros, completed_at)
             values ($1, $2, $3, $4, $5, $6, $7, 'complete', $8, $9, $10, $11, $12, $13, now())",
        )
        .bind(Uuid::now_v7())
        .bind(chat_id)
        .bind(seq)
        .bind(if user_turn { "user" } else { "assistant" })
        .bind(user_turn.then_some(author))
        .bind(user_turn.then(|| format!("c-{seq}")))
        .bind(format!("message {seq}"))
        .bind((!user_turn).then_some("mock"))
        .bind((!user_turn).then_some("mock-1"))
        .bind((!user_turn).then_some("stop"))
        .bind((!user_turn).then_some(12_i32))
        .bind((!user_turn).then_some(34_i32))
        .bind((!user_turn).then_some(56_i64))
        .execute(&app.db)
        .await
        .unwrap();
    }
    sqlx::query("update chats set last_seq = $2 where id = $1")
        .bind(chat_id)
        .bind(n)
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn messages_are_listed_after_a_seq() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = create_chat(&app, &user, json!({})).await;
    let id = chat["id"].as_str().unwrap();
    let chat_id = Uuid::parse_str(id).unwrap();

    let body: Value = get(&app, &user, &format!("/api/chats/{id}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({ "messages": [] }));

    insert_messages(&app, chat_id, user.id, 4).await;
    let seqs = |body: &Value| -> Vec<i64> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };

    let res = get(&app, &user, &format!("/api/chats/{id}/messages")).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(seqs(&body), [1, 2, 3, 4]);
    let first = &body["messages"][0];
    assert_eq!(first["chat_id"], id);
    assert_eq!(first["role"], "user");
    assert_eq!(first["author_id"], user.id.to_string());
    assert_eq!(first["client_msg_id"], "c-1");
    assert_eq!(first["content"], "message 1");
    assert_eq!(first["status"], "complete");
    for field in [
        "provider",
        "model",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "cost_micros",
    ] {
        assert!(first[field].is_null(), "{field}: {}", first[field]);
    }
    let answer = &body["messages"][1];
    assert_eq!(answer["role"], "assistant");
    assert!(answer["author_id"].is_null());
    assert!(answer["client_msg_id"].is_null());
    assert_eq!(answer["provider"], "mock");
    assert_eq!(answer["model"], "mock-1");
    assert_eq!(answer["finish_reason"], "stop");
    assert_eq!(answer["input_tokens"], 12);
    assert_eq!(answer["output_tokens"], 34);
    assert_eq!(answer["cost_micros"], 56);
    assert!(answer["created_at"].is_string() && answer["completed_at"].is_string());
    assert!(Uuid::parse_str(answer["id"].as_str().unwrap()).is_ok());
    for field in [
        "id",
        "chat_id",
        "seq",
        "role",
        "author_id",
        "client_msg_id",
        "content",
        "status",
        "provider",
        "model",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "cost_micros",
        "created_at",
        "completed_at",
    ] {
        assert!(
            answer.as_object().unwrap().contains_key(field),
            "{field} missing"
        );
    }

    let page = async |q: &str| -> Value {
        let res = get(&app, &user, &format!("/api/chats/{id}/messages?{q}")).await;
        assert_eq!(res.status(), 200, "{q}");
        res.json().await.unwrap()
    };
    assert_eq!(seqs(&page("after_seq=0").await), [1, 2, 3, 4]);
    assert_eq!(seqs(&page("after_seq=2").await), [3, 4]);
    assert_eq!(seqs(&page("after_seq=1&limit=2").await), [2, 3]);
    assert_eq!(seqs(&page("limit=1").await), [1]);
    assert!(seqs(&page("after_seq=4").await).is_empty());
    assert!(seqs(&page("after_seq=1000").await).is_empty());

    // The chat reports the last seq handed out.
    let fetched: Value = get(&app, &user, &format!("/api/chats/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["last_seq"], 4);

    // Another chat's messages do not leak in.
    let other = create_chat(&app, &user, json!({})).await;
    let other_id = other["id"].as_str().unwrap();
    let body: Value = get(&app, &user, &format!("/api/chats/{other_id}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["messages"], json!([]));
}

#[tokio::test]
async fn deleting_a_chat_deletes_its_messages() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = create_chat(&app, &user, json!({})).await;
    let keep = create_chat(&app, &user, json!({})).await;
    let chat_id = Uuid::parse_str(chat["id"].as_str().unwrap()).unwrap();
    let keep_id = Uuid::parse_str(keep["id"].as_str().unwrap()).unwrap();
    insert_messages(&app, chat_id, user.id, 3).await;
    insert_messages(&app, keep_id, user.id, 2).await;

    let res = req(
        &app,
        &user,
        Method::DELETE,
        &format!("/api/chats/{chat_id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let count = |id: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from messages where chat_id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(chat_id).await, 0);
    assert_eq!(count(keep_id).await, 2);
    let res = get(&app, &user, &format!("/api/chats/{chat_id}/messages")).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn openapi_lists_the_chat_routes() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, methods) in [
        ("/api/chats", &["get", "post"][..]),
        ("/api/chats/{id}", &["get", "patch", "delete"][..]),
        ("/api/chats/{id}/messages", &["get"][..]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} missing");
        }
    }
    for schema in [
        "Chat",
        "ChatList",
        "Message",
        "MessageList",
        "CreateChatRequest",
        "RenameChatRequest",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    // The area health route still answers next to the chat routes.
    let res = app
        .client
        .get(app.url("/api/chats/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
