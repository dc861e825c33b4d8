//! The OpenAPI document checked by a standard validator, every operation in
//! it fuzzed by schemathesis against a real server, and the WebSocket frame
//! parser fed random and mutated frames (issue 11, item 10). The Python tools
//! live in `.venv-tests`, made by scripts/setup.sh.

use std::{path::PathBuf, time::Duration};

use futures::SinkExt;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::spawn_app;

fn venv_bin(name: &str) -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-tests/bin")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup.sh (make test does)",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_complete() {
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
    for path in [
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/ws",
        "/metrics",
        "/api/chats/{id}/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    // Query parameters are in the query, never required path parameters.
    let events = &doc["paths"]["/api/chats/{id}/events"]["get"]["parameters"];
    let since = events
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "since_seq")
        .unwrap();
    assert_eq!(since["in"], "query");

    let file = std::env::temp_dir().join(format!("openapi-{}.json", Uuid::new_v4()));
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = tokio::process::Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.validation.exceptions import OpenAPIValidationError\n\
             doc = json.load(open(sys.argv[1]))\n\
             validate(doc)\n\
             print('valid')",
        ])
        .arg(&file)
        .output()
        .await
        .unwrap();
    if out.status.success() {
        let _ = std::fs::remove_file(&file);
    }
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document ({}):\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// schemathesis over every operation, a few examples each: no 5xx, no
/// response that contradicts the document.
#[tokio::test]
async fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    // Billing against the fake Stripe, so its routes answer rather than 503.
    let (app, _stripe) = crate::billing::billing_app(|c| {
        // Every example is a request from one address.
        c.auth.signin_max_per_ip = 1_000_000;
        c.edge.max_connections_per_ip = 4096;
    })
    .await;
    let user = app.new_user().await;
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(venv_bin("schemathesis"))
            .args(["run", &app.url("/api/openapi.json")])
            .args(["--base-url", &app.base])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance",
            ])
            .args(["--hypothesis-max-examples", "6"])
            .arg("--hypothesis-derandomize")
            .args(["--hypothesis-suppress-health-check", "all"])
            .args(["--experimental", "openapi-3.1"])
            .args(["--request-timeout", "20000"])
            .args(["--workers", "1"])
            .arg("--no-color")
            .args([
                "-H",
                &format!("Authorization: Bearer {}", user.access_token),
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .output(),
    )
    .await
    .expect("schemathesis finished within 5 minutes")
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A frame built from a valid one by random damage, or plain noise.
fn mutated_frame(rng: &mut StdRng) -> String {
    let chat = Uuid::new_v4();
    let valid = [
        json!({"type": "subscribe", "chat_id": chat, "since_seq": 0}),
        json!({"type": "send", "chat_id": chat, "client_msg_id": "c1", "content": "hi"}),
        json!({"type": "cancel", "chat_id": chat, "message_id": Uuid::new_v4()}),
        json!({"type": "unsubscribe", "chat_id": chat}),
        json!({"type": "auth", "token": "x"}),
    ];
    let mut v = valid[rng.random_range(0..valid.len())].clone();
    let junk = [
        json!(null),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!("\u{0}"),
        json!("x".repeat(300)),
        json!([1, 2]),
        json!({"nested": {"deep": [null]}}),
        json!(true),
        json!("not-a-uuid"),
    ];
    match rng.random_range(0..8) {
        0 => {
            // a field replaced by junk
            let obj = v.as_object_mut().unwrap();
            let keys: Vec<String> = obj.keys().cloned().collect();
            let k = &keys[rng.random_range(0..keys.len())];
            obj.insert(k.clone(), junk[rng.random_range(0..junk.len())].clone());
            v.to_string()
        }
        1 => {
            // a field removed (type kept)
            let obj = v.as_object_mut().unwrap();
            let keys: Vec<String> = obj.keys().filter(|k| *k != "type").cloned().collect();
            if let Some(k) = keys.get(rng.random_range(0..keys.len().max(1))) {
                obj.remove(k);
            }
            v.to_string()
        }
        2 => {
            // an unknown type
            v["type"] = json!(format!("t{}", rng.random::<u16>()));
            v.to_string()
        }
        3 => {
            // truncated JSON
            let s = v.to_string();
            s[..rng.random_range(0..s.len())].to_owned()
        }
        4 => {
            // random printable noise
            (0..rng.random_range(0..200))
                .map(|_| char::from(rng.random_range(32u8..127)))
                .collect()
        }
        5 => {
            // a bare JSON value that is not an object
            junk[rng.random_range(0..junk.len())].to_string()
        }
        6 => {
            // a byte flipped somewhere in the text (kept valid UTF-8)
            let mut b = v.to_string().into_bytes();
            let i = rng.random_range(0..b.len());
            b[i] = rng.random_range(32u8..127);
            String::from_utf8(b).unwrap()
        }
        _ => {
            // a frame whose type is right but every other field is junk
            let obj = v.as_object_mut().unwrap();
            for (k, val) in obj.iter_mut() {
                if k != "type" {
                    *val = junk[rng.random_range(0..junk.len())].clone();
                }
            }
            v.to_string()
        }
    }
}

/// Frames that are fine and get no reply: an `unsubscribe` of a chat not followed.
fn may_be_silent(frame: &str) -> bool {
    serde_json::from_str::<Value>(frame).is_ok_and(|v| {
        v["type"] == "unsubscribe"
            && v["chat_id"]
                .as_str()
                .is_some_and(|s| s.parse::<Uuid>().is_ok())
    })
}

#[tokio::test]
async fn every_bad_websocket_frame_gets_an_error_frame_and_the_socket_stays() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut ws = app.ws(&user.access_token).await;
    // Seeded: a failure names the frame, and a rerun sends the same ones.
    let mut rng = StdRng::seed_from_u64(0x5eed_0011);
    for round in 0..400 {
        let frame = if round % 50 == 49 {
            // now and then a binary frame
            ws.ws
                .send(Message::Binary(vec![0u8, 159, 146, 150].into()))
                .await
                .unwrap();
            "<binary>".to_owned()
        } else {
            let f = mutated_frame(&mut rng);
            ws.ws.send(Message::Text(f.clone().into())).await.unwrap();
            f
        };
        ws.send(json!({"type": "ping"})).await;
        let mut errors = 0;
        loop {
            let f = ws.next().await;
            match f["type"].as_str() {
                Some("pong") => break,
                Some("error") => {
                    errors += 1;
                    let code = f["code"].as_str().unwrap();
                    assert!(
                        ["invalid_request", "not_found"].contains(&code),
                        "frame {frame:?} got {f}"
                    );
                }
                _ => panic!("frame {frame:?} got {f}"),
            }
        }
        assert!(
            errors == 1 || (errors == 0 && may_be_silent(&frame)),
            "frame {frame:?}: {errors} error frames"
        );
    }
    // Still the same socket, still answering.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");
}
