//! The browser client (docs/WEB.md): `web.dir`'s index.html at `/` (and at the
//! paths emails link to), its `assets/` tree at `/assets/...`.
//!
//! The files are read once when the router is built and served from memory, so
//! a request never touches the file system (no path traversal, no partial reads
//! while scripts/build-web.sh rewrites vendor/). Every file is `no-cache` with a
//! strong content ETag: the browser revalidates and gets a 304 while nothing
//! changed, and never runs a stale module next to a fresh one. Every page carries
//! a content-security policy without inline script, the last line of defence
//! should model output ever slip past the client's sanitiser.
//! This module owns no API route; an unknown asset is the usual JSON 404.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::Bytes,
    extract::Path as UrlPath,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use crate::{config::WebConfig, error::ApiError, state::AppState};

/// What the pages may load and run: only this origin's own files, no inline
/// script or style, no plugins, not framed. `connect-src 'self'` covers the
/// same-origin WebSocket (CSP level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Client-side pages that are deep-linked (from emails) and answered with index.html.
const PAGES: &[&str] = &["/", "/verify-email", "/reset-password"];

struct Asset {
    body: Bytes,
    etag: HeaderValue,
    content_type: &'static str,
}

#[derive(Default)]
struct Assets {
    files: HashMap<String, Asset>,
}

/// The client's routes, or none when `web.enabled` is off or the files are missing
/// (then `/` is the ordinary JSON 404 and the log says why).
pub fn router(config: &WebConfig) -> Router<AppState> {
    if !config.enabled {
        return Router::new();
    }
    let assets = match load(&config.dir) {
        Ok(a) if a.files.contains_key("index.html") => Arc::new(a),
        Ok(_) => {
            tracing::warn!(dir = %config.dir.display(), "web client not served: no index.html");
            return Router::new();
        }
        Err(e) => {
            tracing::warn!(dir = %config.dir.display(), error = %e, "web client not served");
            return Router::new();
        }
    };
    tracing::info!(dir = %config.dir.display(), files = assets.files.len(), "web client served at /");
    let mut router = Router::new();
    for page in PAGES {
        let assets = assets.clone();
        router = router.route(
            page,
            get(move |headers: HeaderMap| {
                std::future::ready(serve(&assets, "index.html", &headers))
            }),
        );
    }
    router.route(
        "/assets/{*path}",
        get(move |UrlPath(path): UrlPath<String>, headers: HeaderMap| {
            std::future::ready(serve(&assets, &format!("assets/{path}"), &headers))
        }),
    )
}

fn serve(assets: &Assets, key: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = assets.files.get(key) else {
        return ApiError::not_found("asset").into_response();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.trim_start_matches("W/") == asset.etag)
        });
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body.clone(),
        )
            .into_response()
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, asset.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

/// Reads index.html and everything under assets/ (dot-files skipped).
fn load(dir: &Path) -> std::io::Result<Assets> {
    let mut assets = Assets::default();
    let mut pending: Vec<PathBuf> = vec![dir.join("assets")];
    let mut files = vec![dir.join("index.html")];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    for path in files {
        let Some(content_type) = content_type(&path) else {
            continue;
        };
        let body = std::fs::read(&path)?;
        let key = path
            .strip_prefix(dir)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .replace('\\', "/");
        let digest = hex::encode(&Sha256::digest(&body)[..12]);
        let etag =
            HeaderValue::from_str(&format!("\"{digest}\"")).map_err(std::io::Error::other)?;
        assets.files.insert(
            key,
            Asset {
                body: body.into(),
                etag,
                content_type,
            },
        );
    }
    Ok(assets)
}

/// Only types the client uses are served; anything else in the tree is ignored.
fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webmanifest" => "application/manifest+json",
        "woff2" => "font/woff2",
        _ => return None,
    })
}
