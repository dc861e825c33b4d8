//! Serving the browser client: `/` and `/assets/*` with ETag revalidation, a
//! content-security policy without inline script, and nothing else exposed;
//! plus `GET /api/models`, the model picker's list for signed-in users.

use reqwest::header;
use serde_json::Value;

use crate::helpers::{error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn index_is_served_with_csp_and_etag_revalidation() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
    let body = res.text().await.unwrap();
    assert!(body.contains(r#"<script type="module" src="/assets/main.js">"#));
    assert!(!body.contains("<script>"), "no inline script in the page");

    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10);
    let again = app
        .client
        .get(app.url("/"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = app
        .client
        .get(app.url("/"))
        .header(header::IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    // The pages emails link to are the same client.
    for page in ["/verify-email?token=abc", "/reset-password"] {
        let res = app.client.get(app.url(page)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{page}");
        assert_eq!(res.headers()[header::ETAG].to_str().unwrap(), etag);
    }
}

#[tokio::test]
async fn assets_have_types_and_nothing_outside_is_reachable() {
    let app = spawn_app().await;
    for (path, ty) in [
        ("/assets/main.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/vendor/marked.js", "text/javascript"),
        ("/assets/vendor/languages/rust.js", "text/javascript"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(ty),
            "{path}"
        );
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(res.headers().contains_key(header::ETAG));
    }
    // Only files loaded at start are served: no traversal, no package files, no dotfiles.
    for path in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/..%2fpackage.json",
        "/package.json",
        "/node_modules/marked/package.json",
        "/assets/vendor",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(error_code(res).await, "not_found", "{path}");
    }
    let res = app.client.post(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    // The API's own 404 is untouched.
    let res = app
        .client
        .get(app.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
}

#[tokio::test]
async fn the_client_can_be_switched_off() {
    let app = spawn_app_with(|c| c.web.enabled = false).await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
    let res = app
        .client
        .get(app.url("/assets/main.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_missing_client_directory_is_a_config_problem() {
    let mut config = crate::helpers::test_config();
    config.web.dir = "/nonexistent/web".into();
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("web.dir:") && p.contains("index.html")),
        "{problems:?}"
    );
    config.web.enabled = false;
    assert!(!config.problems().iter().any(|p| p.starts_with("web.dir")));
}

#[tokio::test]
async fn models_lists_routes_and_priced_models_for_signed_in_users() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/api/models")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "unauthorized");
    let res = app
        .client
        .get(app.url("/api/models"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let user = app.new_user().await;
    let res = app
        .client
        .get(app.url("/api/models"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["plan"], "free");
    let models = body["models"].as_array().unwrap();
    let sim = models
        .iter()
        .find(|m| m["id"] == "sim-1")
        .expect("sim-1 listed");
    assert_eq!(sim["kind"], "model");
    assert_eq!(sim["provider"], "simulated");
    assert!(sim["output_micros_per_mtok"].is_u64());
    assert!(models.iter().any(|m| m["kind"] == "route"), "{body}");
    // Only models whose provider runs: the simulated one is the only provider here.
    assert!(
        models
            .iter()
            .filter(|m| m["kind"] == "model")
            .all(|m| m["provider"] == "simulated"),
        "{body}"
    );
    // The same ids /v1/models gives an API key of this workspace.
    let key: Value = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&user.access_token)
        .json(&serde_json::json!({"name": "cmp"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v1: Value = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut a: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut b: Vec<&str> = v1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // `/v1/models` also lists the embedding model, which is no chat model.
    let embedding = app.state.embedder.model();
    assert!(b.contains(&embedding));
    b.retain(|m| *m != embedding);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

/// The served page opens `/ws` from the server's own origin, which need not be
/// listed in `cors_origins`; a look-alike origin still gets 403.
#[tokio::test]
async fn the_pages_own_origin_may_open_the_socket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app =
        spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    let user = app.new_user().await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let connect = |origin: String| {
        let mut req = format!("ws://{host}/ws").into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", user.access_token).parse().unwrap(),
        );
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    assert!(connect(format!("http://{host}")).await.is_ok());
    assert!(
        connect(format!("https://{host}")).await.is_ok(),
        "behind a TLS proxy"
    );
    for bad in [
        format!("http://{host}.evil.example"),
        format!("http://evil.example/{host}"),
        "http://127.0.0.1".to_owned(),
        "null".to_owned(),
    ] {
        let err = connect(bad.clone()).await.unwrap_err();
        assert!(err.to_string().contains("403"), "{bad}: {err}");
    }
}
