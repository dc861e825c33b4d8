//! Documents and retrieval: uploads in every format, background indexing,
//! search, answers with citations over WebSocket and REST, deletion, bad
//! input, tenant scoping, the embedding cache, resume after a restart, and
//! HNSW recall against exact search.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, error_code, eventually, spawn_app, spawn_app_with};

pub const MARKDOWN: &str = "# Falcon handbook\n\nThe Falcon project ships telemetry gateways.\n\n\
## Refund policy\n\nCustomers may request a refund within 45 days of purchase by emailing the billing desk.\n\n\
## Office hours\n\nThe support office opens at nine in the morning on weekdays.\n";

/// A one-page PDF whose text is `lines`, written with lopdf (no fixture files).
pub fn pdf_with(lines: &[&str]) -> Vec<u8> {
    use lopdf::{
        Document, Object, Stream,
        content::{Content, Operation},
        dictionary,
    };
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut ops = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
        Operation::new("Td", vec![72.into(), 720.into()]),
    ];
    for line in lines {
        ops.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        ops.push(Operation::new("Td", vec![0.into(), (-16).into()]));
    }
    ops.push(Operation::new("ET", vec![]));
    let content = Content { operations: ops };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

impl TestApp {
    pub async fn upload_text(&self, user: &TestUser, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/documents"))
            .bearer_auth(&user.access_token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn upload_file(
        &self,
        user: &TestUser,
        name: &str,
        mime: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let part = Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(mime)
            .unwrap();
        self.client
            .post(self.url("/api/documents"))
            .bearer_auth(&user.access_token)
            .multipart(Form::new().part("file", part))
            .send()
            .await
            .unwrap()
    }

    /// Polls the document until it is ready (or fails the test on `failed`).
    pub async fn until_ready(&self, user: &TestUser, id: &str) -> Value {
        eventually(Duration::from_secs(20), "document ready", || async {
            let doc: Value = self
                .client
                .get(self.url(&format!("/api/documents/{id}")))
                .bearer_auth(&user.access_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_ne!(doc["status"], "failed", "{doc}");
            (doc["status"] == "ready").then_some(doc)
        })
        .await
    }

    pub async fn search(&self, user: &TestUser, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/documents/search"))
            .bearer_auth(&user.access_token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

pub async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    body
}

#[tokio::test]
async fn a_markdown_file_and_a_pdf_answer_a_question_with_citations() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let md = created(
        app.upload_file(
            &user,
            "handbook.md",
            "text/markdown",
            MARKDOWN.as_bytes().to_vec(),
        )
        .await,
    )
    .await;
    let pdf_bytes = pdf_with(&[
        "Warehouse safety manual.",
        "Forklift drivers must wear orange helmets at all times.",
    ]);
    let pdf = created(
        app.upload_file(&user, "safety.pdf", "application/pdf", pdf_bytes)
            .await,
    )
    .await;
    let (md_id, pdf_id) = (md["id"].as_str().unwrap(), pdf["id"].as_str().unwrap());
    let md = app.until_ready(&user, md_id).await;
    let pdf = app.until_ready(&user, pdf_id).await;
    for d in [&md, &pdf] {
        assert!(d["chunk_count"].as_i64().unwrap() >= 1, "{d}");
        assert_eq!(d["chunks_done"], d["chunk_count"]);
        assert!(d["tokens"].as_i64().unwrap() > 0, "{d}");
    }
    assert_eq!(md["title"], "handbook.md");
    assert_eq!(pdf["content_type"], "application/pdf");

    // Search ranks the chunk about refunds first.
    let res = app
        .search(&user, json!({"query": "refund within 45 days"}))
        .await;
    assert_eq!(res.status(), 200);
    let hits: Value = res.json().await.unwrap();
    let first = &hits["results"][0];
    assert_eq!(first["document_id"], md_id, "{hits}");
    assert!(
        first["content"].as_str().unwrap().contains("refund"),
        "{hits}"
    );
    assert!(first["score"].as_f64().unwrap() > 0.2);

    // Over WebSocket: the answer's done frame cites both documents' chunks.
    let chat_id = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "send", "chat_id": chat_id, "client_msg_id": "q1",
        "content": "What do forklift drivers wear, and what is the refund window?", "documents": true}))
        .await;
    let done = ws.next_of("done").await;
    let cites = done["citations"].as_array().expect("citations in done");
    let cited: Vec<&str> = cites
        .iter()
        .map(|c| c["document_id"].as_str().unwrap())
        .collect();
    assert!(cited.contains(&md_id) && cited.contains(&pdf_id), "{done}");
    assert_eq!(cites[0]["n"], 1);
    assert!(
        cites
            .iter()
            .all(|c| c["end"].as_i64() > c["start"].as_i64())
    );
    // The prompt held the sources: the answer billed more input than the question alone.
    assert!(
        done["usage"]["input_tokens"].as_u64().unwrap() > 60,
        "{done}"
    );

    // Only the PDF when asked for it; the stored answer keeps its citations.
    ws.send(
        json!({"type": "send", "chat_id": chat_id, "client_msg_id": "q2",
        "content": "helmets", "documents": [pdf_id]}),
    )
    .await;
    let done2 = ws.next_of("done").await;
    let only: Vec<&Value> = done2["citations"].as_array().unwrap().iter().collect();
    assert!(
        !only.is_empty() && only.iter().all(|c| c["document_id"] == pdf_id),
        "{done2}"
    );
    let msgs: Value = app
        .client
        .get(app.url(&format!("/api/chats/{chat_id}/messages")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == done["message_id"])
        .unwrap();
    assert_eq!(answer["citations"], done["citations"]);

    // Without `documents` an answer has no citations.
    ws.send(json!({"type": "send", "chat_id": chat_id, "client_msg_id": "q3", "content": "hello"}))
        .await;
    assert!(ws.next_of("done").await.get("citations").is_none());

    // REST send with documents answers with the cited message.
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat_id}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({"content": "refund policy?", "documents": [md_id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rest: Value = res.json().await.unwrap();
    assert_eq!(rest["citations"][0]["document_id"], md_id, "{rest}");

    // Deleting the document removes its chunks.
    let res = app
        .client
        .delete(app.url(&format!("/api/documents/{md_id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let left: i64 =
        sqlx::query_scalar("select count(*) from document_chunks where document_id = $1")
            .bind(md_id.parse::<Uuid>().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(left, 0);
    let res = app
        .client
        .get(app.url(&format!("/api/documents/{md_id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let list: Value = app
        .client
        .get(app.url("/api/documents"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], pdf_id);
}

#[tokio::test]
async fn bad_uploads_and_searches_get_clear_errors() {
    let app = spawn_app_with(|c| c.documents.max_upload_bytes = 2_000).await;
    let user = app.new_user().await;
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            app.upload_file(&user, "x.png", "image/png", vec![0x89, 0x50])
                .await,
            415,
            "unsupported_media_type",
        ),
        (
            app.upload_file(&user, "data.zip", "application/octet-stream", vec![1, 2])
                .await,
            415,
            "unsupported_media_type",
        ),
        (
            app.upload_file(&user, "big.md", "text/markdown", vec![b'a'; 2_001])
                .await,
            413,
            "payload_too_large",
        ),
        (
            app.upload_file(&user, "huge.md", "text/markdown", vec![b'a'; 200_000])
                .await,
            413,
            "payload_too_large",
        ),
        (
            app.upload_file(
                &user,
                "bad.pdf",
                "application/pdf",
                b"%PDF-1.4 garbage".to_vec(),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            app.upload_file(&user, "latin1.txt", "text/plain", vec![0xff, 0xfe, 0x41])
                .await,
            400,
            "invalid_request",
        ),
        (
            app.upload_file(&user, "blank.md", "text/markdown", b"   \n\n ".to_vec())
                .await,
            400,
            "invalid_request",
        ),
        (
            app.upload_file(&user, "", "text/markdown", b"text".to_vec())
                .await,
            400,
            "invalid_request",
        ),
        (
            app.upload_text(&user, json!({"content": "a,b", "content_type": "text/csv"}))
                .await,
            415,
            "unsupported_media_type",
        ),
        (
            app.upload_text(
                &user,
                json!({"content": "x", "content_type": "application/pdf"}),
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (
            app.upload_text(&user, json!({"content": 5})).await,
            400,
            "invalid_request",
        ),
        (
            app.upload_text(&user, json!({"content": "ok", "title": "\u{7}"}))
                .await,
            400,
            "invalid_request",
        ),
        (
            app.upload_text(
                &user,
                json!({"content": "ok", "workspace_id": Uuid::now_v7()}),
            )
            .await,
            404,
            "not_found",
        ),
    ];
    for (i, (res, status, code)) in cases.into_iter().enumerate() {
        assert_eq!(res.status().as_u16(), status, "case {i}");
        assert_eq!(error_code(res).await, code, "case {i}");
    }
    let raw = |ct: &'static str, body: &'static str| {
        app.client
            .post(app.url("/api/documents"))
            .bearer_auth(&user.access_token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = raw("text/plain", "hello").await.unwrap();
    assert_eq!(res.status(), 415);
    let res = raw("multipart/form-data; boundary=zz", "--zz\r\nnot a part")
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_request");
    let res = raw("multipart/form-data; boundary=zz", "--zz--\r\n")
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "no file part");
    let res = raw("application/json", "{not json").await.unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .post(app.url("/api/documents"))
        .json(&json!({"content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    for (body, code) in [
        (json!({"query": "  "}), 400),
        (json!({"query": "x".repeat(2_001)}), 400),
        (json!({"query": "x", "limit": 0}), 400),
        (json!({"query": "x", "limit": 10_000}), 400),
        (json!({"query": "x", "documents": []}), 400),
        (json!({"query": "x", "documents": [Uuid::now_v7()]}), 404),
        (json!({"nope": 1}), 400),
    ] {
        let res = app.search(&user, body.clone()).await;
        assert_eq!(res.status().as_u16(), code, "{body}");
        error_code(res).await;
    }
    let res = app
        .client
        .get(app.url("/api/documents/not-a-uuid"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn documents_belong_to_their_workspace() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let doc = created(
        app.upload_text(
            &alice,
            json!({"content": MARKDOWN, "title": "Alice's handbook"}),
        )
        .await,
    )
    .await;
    let id = doc["id"].as_str().unwrap();
    app.until_ready(&alice, id).await;

    for (method, path) in [
        (reqwest::Method::GET, format!("/api/documents/{id}")),
        (reqwest::Method::DELETE, format!("/api/documents/{id}")),
        (
            reqwest::Method::POST,
            format!("/api/documents/{id}/reindex"),
        ),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&bob.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{method} {path}");
    }
    let list: Value = app
        .client
        .get(app.url("/api/documents"))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));
    let hits: Value = app
        .search(&bob, json!({"query": "refund within 45 days"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        hits["results"],
        json!([]),
        "bob's search never sees alice's chunks"
    );
    let res = app
        .search(&bob, json!({"query": "refund", "documents": [id]}))
        .await;
    assert_eq!(res.status(), 404);
    let alice_ws: Value = app
        .client
        .get(app.url("/api/documents"))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_workspace = alice_ws[0]["workspace_id"].clone();
    let res = app
        .upload_text(
            &bob,
            json!({"content": "x", "workspace_id": alice_workspace}),
        )
        .await;
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .get(app.url(&format!(
            "/api/documents?workspace_id={}",
            alice_workspace.as_str().unwrap()
        )))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Bob cannot draw on Alice's document from his own chat.
    let chat_id = app.create_chat(&bob.access_token).await;
    let mut ws = app.ws(&bob.access_token).await;
    ws.send(json!({"type": "send", "chat_id": chat_id, "client_msg_id": "a", "content": "refund?", "documents": [id]})).await;
    let err = ws.next_of("error").await;
    assert_eq!(err["code"], "invalid_request", "{err}");
    ws.send(json!({"type": "send", "chat_id": chat_id, "client_msg_id": "b", "content": "refund?", "documents": "all"})).await;
    assert_eq!(ws.next_of("error").await["code"], "invalid_request");
    // Bob's own (empty) library: an answer without citations.
    ws.send(json!({"type": "send", "chat_id": chat_id, "client_msg_id": "c", "content": "refund?", "documents": true})).await;
    assert!(ws.next_of("done").await.get("citations").is_none());

    // Alice's document is untouched; re-indexing it works and is idempotent while queued.
    let res = app
        .client
        .post(app.url(&format!("/api/documents/{id}/reindex")))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let again = app
        .client
        .post(app.url(&format!("/api/documents/{id}/reindex")))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert!(
        again.status() == 409 || again.status() == 202,
        "{}",
        again.status()
    );
    let doc = app.until_ready(&alice, id).await;
    assert!(doc["chunk_count"].as_i64().unwrap() >= 1);
}
