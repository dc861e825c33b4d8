//! `switchboard import pinecone` against a fake Pinecone data-plane API (an
//! axum server on a random port speaking `/vectors/list` and `/vectors/fetch`)
//! and a JSONL export: 10,000 vectors imported twice, none twice.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use serde_json::{Value, json};
use switchboard::import::pinecone::{Counts, Source, import};
use uuid::Uuid;

use crate::helpers::spawn_app;

const TOTAL: usize = 10_000;

struct Fake {
    fetched: AtomicUsize,
}

fn vector(i: usize) -> Value {
    let dims = if i % 1_000 == 999 { 128 } else { 384 };
    let values: Vec<f32> = (0..dims)
        .map(|d| ((i * 7_919 + d * 104_729) % 10_007) as f32 / 10_007.0 + 0.01)
        .collect();
    json!({"id": format!("vec-{i:05}"), "values": values,
           "metadata": {"text": format!("passage number {i}"), "title": format!("Doc {}", i / 100)}})
}

fn authorised(h: &HeaderMap) -> bool {
    h.get("api-key").and_then(|v| v.to_str().ok()) == Some("pc-secret")
}

async fn list(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let _ = &f;
    if !authorised(&h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let start: usize = q
        .get("paginationToken")
        .and_then(|t| t.strip_prefix("p").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let end = (start + limit).min(TOTAL);
    let ids: Vec<Value> = (start..end)
        .map(|i| json!({"id": format!("vec-{i:05}")}))
        .collect();
    let mut page =
        json!({"vectors": ids, "namespace": q.get("namespace").cloned().unwrap_or_default()});
    if end < TOTAL {
        page["pagination"] = json!({"next": format!("p{end}")});
    }
    Ok(Json(page))
}

async fn fetch(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, StatusCode> {
    if !authorised(&h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let mut out = serde_json::Map::new();
    for (k, id) in q {
        if k == "ids" {
            let i: usize = id
                .trim_start_matches("vec-")
                .parse()
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            out.insert(id, vector(i));
            f.fetched.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(Json(json!({"vectors": out})))
}

async fn fake_pinecone() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        fetched: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/vectors/list", get(list))
        .route("/vectors/fetch", get(fetch))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), fake)
}

async fn workspace_of(app: &crate::helpers::TestApp, user: Uuid) -> Uuid {
    sqlx::query_scalar("select workspace_id from workspace_members where user_id = $1")
        .bind(user)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_vectors_from_the_api_imported_twice_land_once() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let ws = workspace_of(&app, user.id).await;
    let (base, fake) = fake_pinecone().await;
    let source = || Source::Api {
        base_url: base.clone(),
        api_key: switchboard::config::Secret::new("pc-secret"),
        namespace: Some("docs".into()),
    };
    let mut reports = 0;
    let first = import(&app.db, ws, source(), &mut |_| reports += 1)
        .await
        .unwrap();
    assert_eq!(
        first,
        Counts {
            read: 10_000,
            imported: 9_990,
            already_present: 0,
            dimension_mismatch: 10,
            malformed: 0
        }
    );
    assert!(reports >= 100, "progress is reported per page");
    let fetched_once = fake.fetched.load(Ordering::Relaxed);
    assert_eq!(fetched_once, 10_000);

    // Again: everything present is skipped before fetching; the mismatched ten are fetched and skipped again.
    let second = import(&app.db, ws, source(), &mut |_| {}).await.unwrap();
    assert_eq!(
        second,
        Counts {
            read: 10_000,
            imported: 0,
            already_present: 9_990,
            dimension_mismatch: 10,
            malformed: 0
        }
    );
    assert_eq!(fake.fetched.load(Ordering::Relaxed) - fetched_once, 10);
    let (docs, chunks): (i64, i64) = sqlx::query_as(
        "select (select count(*) from documents where workspace_id = $1), (select count(*) from document_chunks where workspace_id = $1)",
    )
    .bind(ws)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((docs, chunks), (9_990, 9_990));

    // Imported vectors are searchable like any chunk, with their text and title.
    let v: Vec<f32> = vector(42)["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let hits = switchboard::store::documents::search(
        &app.db,
        ws,
        None,
        pgvector::Vector::from(v),
        switchboard::store::documents::SearchParams {
            limit: 1,
            ef_search: 100,
            exact: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(hits[0].content, "passage number 42");
    assert_eq!(hits[0].title, "Doc 0");

    // A wrong key is a clear error, and an unknown workspace too.
    let bad = Source::Api {
        base_url: base.clone(),
        api_key: switchboard::config::Secret::new("nope"),
        namespace: None,
    };
    let err = import(&app.db, ws, bad, &mut |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let err = import(&app.db, Uuid::now_v7(), source(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_jsonl_export_is_imported_once_with_bad_lines_counted() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let ws = workspace_of(&app, user.id).await;
    let path = std::env::temp_dir().join(format!("pinecone-{}.jsonl", Uuid::new_v4()));
    let mut text = String::new();
    for i in 0..250 {
        text.push_str(&vector(i).to_string());
        text.push('\n');
    }
    text.push_str("{not json\n\n{\"id\": \"\", \"values\": []}\n");
    text.push_str(&vector(7).to_string()); // a duplicate line
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let first = import(&app.db, ws, Source::Jsonl(path.clone()), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        first,
        Counts {
            read: 253,
            imported: 250,
            already_present: 1,
            dimension_mismatch: 0,
            malformed: 2
        }
    );
    let second = import(&app.db, ws, Source::Jsonl(path.clone()), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(second.imported, 0);
    assert_eq!(second.already_present, 251);
    std::fs::remove_file(&path).unwrap();
    let missing = import(
        &app.db,
        ws,
        Source::Jsonl("/nonexistent/x.jsonl".into()),
        &mut |_| {},
    )
    .await;
    assert!(missing.is_err());
}
