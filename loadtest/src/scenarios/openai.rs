//! `openai`: streaming `POST /v1/chat/completions` with an API key, C at a
//! time: response headers, first content chunk (TTFT), `data: [DONE]` (total).
//! The key comes from `POST /api/keys` as a signed-in user.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use clap::Args;
use futures::StreamExt;
use reqwest::header;
use serde_json::{Value, json};

use super::{Common, Run, join_all_until};
use crate::{
    api::{self, ApiError},
    stats::{Recorder, RunResult},
};

#[derive(Debug, Clone, Args)]
pub struct OpenAiArgs {
    #[command(flatten)]
    pub common: Common,
    /// Streams in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// The `model` of each request.
    #[arg(long, default_value = "sim-1")]
    pub model: String,
    /// `max_tokens` of each request (default: none sent).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Longest wait for one completion's `[DONE]`.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    #[arg(long, default_value = "Name three things a load test should report.")]
    pub content: String,
    /// Side by side: first drive the bare provider at this base URL (the
    /// `mock-openai` this server uses, e.g. http://127.0.0.1:18090/v1) with
    /// the same load for the same time, then Switchboard; the result carries
    /// both, so ratios come from one run.
    #[arg(long)]
    pub compare_direct: Option<String>,
}

/// Why one stream failed: a code to count and a message.
type StreamError = (String, String);

pub async fn run(args: OpenAiArgs) -> Result<RunResult, String> {
    let c = args.concurrency.max(1);
    let run = Run::new("openai", args.common.clone(), c).await?;
    let accounts = api::create_accounts(&run.api, &run.run_id, 1, 1).await?;
    let key = run
        .api
        .create_key(&accounts[0].token, &format!("loadtest {}", run.run_id))
        .await
        .map_err(|e| match e.status {
            Some(404 | 405) => format!(
                "POST /api/keys is not available on this server ({e}): the API-key and /v1 endpoints are not deployed yet"
            ),
            _ => format!("cannot create an API key with POST /api/keys: {e}"),
        })?;
    let body = request_body(&args);
    let url = run.api.url("/v1/chat/completions");
    // One request first, so a missing endpoint fails clearly instead of as N errors.
    let probe = Recorder::default();
    if let Err((code, msg)) = stream_once(
        &run.api.client,
        &url,
        &key,
        &body,
        &probe,
        args.timeout_secs,
    )
    .await
    {
        return Err(
            if code == "http_404" || code == "http_405" || code == "not_found" {
                format!(
                    "POST /v1/chat/completions is not available on this server ({code}: {msg}): the OpenAI-compatible API is not deployed yet"
                )
            } else {
                format!("the first streamed completion failed: {code}: {msg}")
            },
        );
    }

    // The bare provider first, with the same load, for as long as the main phase.
    let direct = match &args.compare_direct {
        Some(base) => Some(drive_direct(&run, &args, base, &body, c).await?),
        None => None,
    };

    run.begin_measuring();
    let run = Arc::new(run);
    let issued = Arc::new(AtomicU64::new(0));
    let body = Arc::new(body);
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (run, issued, body, key, url) = (
                run.clone(),
                issued.clone(),
                body.clone(),
                key.clone(),
                url.clone(),
            );
            let timeout = args.timeout_secs;
            tokio::spawn(async move {
                while run.claim(&issued) {
                    run.rec.begin();
                    let res =
                        stream_once(&run.api.client, &url, &key, &body, &run.rec, timeout).await;
                    if let Err((code, msg)) = &res {
                        run.rec.error(code);
                        if run.rec.error_total() <= 5 {
                            eprintln!("[openai] {code}: {msg}");
                        }
                    }
                    run.rec.end(res.is_ok());
                    if res.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    join_all_until(
        tasks,
        run.duration() + Duration::from_secs(args.timeout_secs + 5),
        &run.rec,
    )
    .await;
    let params = json!({
        "concurrency": c,
        "model": args.model,
        "max_tokens": args.max_tokens,
        "duration_limit_secs": run.common.duration,
        "count_limit": run.common.count,
        "provider_ttft_ms": run.common.provider_ttft_ms,
        "compare_direct": args.compare_direct.is_some(),
    });
    let mut result = run.finish(params, json!({})).await;
    if let Some(d) = direct {
        result.extra = compare(&result, &d);
    }
    Ok(result)
}

/// What the bare provider did under the same load.
struct Direct {
    completions_per_sec: f64,
    errors: u64,
    latency: std::collections::BTreeMap<String, crate::stats::Percentiles>,
}

/// C streams at a time straight at the provider for the run's duration.
async fn drive_direct(
    run: &Run,
    args: &OpenAiArgs,
    base: &str,
    body: &Value,
    c: usize,
) -> Result<Direct, String> {
    let url = reqwest::Url::parse(base).map_err(|e| format!("--compare-direct: {e}"))?;
    let host = url.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(crate::target::is_loopback);
    if !loopback {
        return Err(format!(
            "--compare-direct: {host} is not a loopback address"
        ));
    }
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let rec = Arc::new(Recorder::default());
    let until = Instant::now() + run.duration();
    eprintln!(
        "[openai] bare provider at {url}: {c} streams for {:?}",
        run.duration()
    );
    let began = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (client, rec, url, body) = (
                run.api.client.clone(),
                rec.clone(),
                url.clone(),
                body.clone(),
            );
            let timeout = args.timeout_secs;
            tokio::spawn(async move {
                while Instant::now() < until {
                    rec.begin();
                    let res = stream_once(&client, &url, "direct", &body, &rec, timeout).await;
                    if let Err((code, _)) = &res {
                        rec.error(code);
                    }
                    rec.end(res.is_ok());
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let secs = began.elapsed().as_secs_f64().max(0.001);
    let done = rec.completed.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Direct {
        completions_per_sec: done as f64 / secs,
        errors: rec.error_total(),
        latency: rec.percentiles(),
    })
}

/// Both sides and their ratios: completions/s through Switchboard over the
/// bare provider's, and TTFT percentiles through Switchboard minus the bare
/// provider's (a difference of percentiles, not a percentile of differences).
fn compare(through: &RunResult, direct: &Direct) -> Value {
    let ratio = if direct.completions_per_sec > 0.0 {
        Some(through.throughput_per_sec / direct.completions_per_sec)
    } else {
        None
    };
    let added = |q: fn(&crate::stats::Percentiles) -> f64| match (
        through.latency_ms.get("ttft"),
        direct.latency.get("ttft"),
    ) {
        (Some(a), Some(b)) => Some(q(a) - q(b)),
        _ => None,
    };
    json!({
        "direct_completions_per_sec": direct.completions_per_sec,
        "direct_errors": direct.errors,
        "direct_latency_ms": direct.latency,
        "throughput_ratio": ratio,
        "added_ttft_p50_ms": added(|p| p.p50),
        "added_ttft_p99_ms": added(|p| p.p99),
    })
}

fn request_body(args: &OpenAiArgs) -> Value {
    let mut body = json!({
        "model": args.model,
        "messages": [{"role": "user", "content": args.content}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(m) = args.max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

/// One streamed completion, timed into `rec`: `headers`, `ttft`, `total`.
async fn stream_once(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
    rec: &Recorder,
    timeout_secs: u64,
) -> Result<(), StreamError> {
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(timeout_secs);
    let timed_out = || {
        (
            "timeout".to_owned(),
            format!("no [DONE] within {timeout_secs}s"),
        )
    };
    let send = client
        .post(url)
        .bearer_auth(key)
        .header(header::ACCEPT, "text/event-stream")
        .json(body)
        .send();
    let res = tokio::time::timeout_at(deadline.into(), send)
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| {
            let e = ApiError::transport(&e);
            (e.code, e.message)
        })?;
    if !res.status().is_success() {
        let e = ApiError::from_response(res).await;
        return Err((e.code, e.message));
    }
    rec.record("headers", sent.elapsed());
    let mut body = res.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut first = true;
    loop {
        let chunk = match tokio::time::timeout_at(deadline.into(), body.next()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => {
                return Err((
                    "truncated_stream".into(),
                    "the stream ended without data: [DONE]".into(),
                ));
            }
            Ok(Some(Err(e))) => return Err(("stream_error".into(), e.to_string())),
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        while let Some((end, sep)) = event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&event[..end]);
            for line in text.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    rec.record("total", sent.elapsed());
                    return Ok(());
                }
                let v: Value = serde_json::from_str(data)
                    .map_err(|e| ("bad_chunk".to_owned(), format!("{e}: {data}")))?;
                if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                    let code = err
                        .get("code")
                        .and_then(Value::as_str)
                        .or_else(|| err.get("type").and_then(Value::as_str))
                        .unwrap_or("stream_error");
                    let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
                    return Err((code.to_owned(), msg.to_owned()));
                }
                let content = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if first && !content.is_empty() {
                    first = false;
                    rec.record("ttft", sent.elapsed());
                }
            }
        }
    }
}

/// The end of the first complete SSE event in `buf`, and the separator's length.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::event_end;

    #[test]
    fn finds_event_ends() {
        assert_eq!(event_end(b"data: x\n\ndata: y"), Some((7, 2)));
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some((7, 4)));
        assert_eq!(event_end(b"data: x\n"), None);
    }
}
