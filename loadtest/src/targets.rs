//! The performance targets (issue 19) next to what the runs measured: each
//! row names the run it comes from (by the label `scripts/bench.sh` gives
//! it), and says "met", "not met", or "not measured" — never a number that
//! no run produced.

use std::fmt::Write as _;

use serde_json::Value;

use crate::stats::RunResult;

struct Row {
    figure: &'static str,
    target: &'static str,
    measured: String,
    status: String,
}

fn ok<'a>(results: &'a [RunResult], label: &str) -> Option<&'a RunResult> {
    results
        .iter()
        .rfind(|r| r.label == label && r.status == "ok")
}

fn extra_f64(r: &RunResult, key: &str) -> Option<f64> {
    r.extra.get(key).and_then(Value::as_f64)
}

fn param_f64(r: &RunResult, key: &str) -> Option<f64> {
    r.params.get(key).and_then(Value::as_f64)
}

fn ms(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn status(measured_at_load: bool, ok: bool) -> String {
    match (measured_at_load, ok) {
        (true, true) => "met".into(),
        (_, false) => "not met".into(),
        (false, true) => "not shown (load not reached)".into(),
    }
}

fn not_measured(figure: &'static str, target: &'static str, why: &str) -> Row {
    Row {
        figure,
        target,
        measured: format!("not measured: {why}"),
        status: "not measured".into(),
    }
}

/// The markdown table.
pub fn table(results: &[RunResult]) -> String {
    let rows = vec![
        cpu_per_completion(results),
        added_ttft(
            results,
            "openai-vs-mock-10",
            10,
            1.0,
            "p99 ≤ 1 ms at 10 concurrent",
        ),
        added_ttft(
            results,
            "openai-vs-mock-100",
            100,
            5.0,
            "p99 ≤ 5 ms at 100 concurrent",
        ),
        realistic(results),
        ws_ack_open_loop(results),
        ws_answers(results),
        ws_streams(results),
        idle_sockets(results),
        signin(results),
        memory_after(results),
    ];
    let mut s = String::from("| figure | target | measured | status |\n|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | **{}** |",
            r.figure, r.target, r.measured, r.status
        );
    }
    s
}

fn cpu_per_completion(results: &[RunResult]) -> Row {
    let (figure, target) = (
        "server CPU per streamed `/v1` completion (20 tokens)",
        "≤ 0.2 ms",
    );
    let Some(r) = ok(results, "openai-cpu") else {
        return not_measured(figure, target, "no `openai-cpu` run");
    };
    let Some(cpu) = r.server.as_ref().map(|s| s.cpu_secs) else {
        return not_measured(figure, target, "the run had no server pid");
    };
    if r.completed == 0 {
        return not_measured(figure, target, "no completion in `openai-cpu`");
    }
    let per = cpu * 1000.0 / r.completed as f64;
    Row {
        figure,
        target,
        measured: format!(
            "{} ({:.1} s of server CPU over {} completions, `{}`)",
            ms(per),
            cpu,
            r.completed,
            r.label
        ),
        status: status(true, per <= 0.2),
    }
}

fn signin(results: &[RunResult]) -> Row {
    let (figure, target) = ("sign-in", "p95 < 100 ms at 40 sign-ins/s, open loop");
    let label = "signin-open-40";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, "no `signin-open-40` run");
    };
    let Some(p) = r.latency_ms.get("signin") else {
        return not_measured(figure, target, "no sign-in succeeded in `signin-open-40`");
    };
    let rate = param_f64(r, "signin_rate").unwrap_or(0.0);
    let errors: u64 = r.errors.values().sum();
    Row {
        figure,
        target,
        measured: format!(
            "p95 {} (p50 {}, p99 {}) at {rate:.0} sign-ins/s offered, {:.1}/s done, {errors} errors (`{label}`, from each sign-in's intended start; argon2id m = 19 MiB, t = 2)",
            ms(p.p95),
            ms(p.p50),
            ms(p.p99),
            r.throughput_per_sec,
        ),
        status: status(rate >= 40.0, p.p95 < 100.0 && errors == 0),
    }
}

fn added_ttft(
    results: &[RunResult],
    label: &'static str,
    concurrency: u64,
    limit_ms: f64,
    target: &'static str,
) -> Row {
    let figure = "`/v1` added TTFT (vs the bare mock)";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, &format!("no `{label}` run"));
    };
    let (Some(p99), Some(p50)) = (
        extra_f64(r, "added_ttft_p99_ms"),
        extra_f64(r, "added_ttft_p50_ms"),
    ) else {
        return not_measured(
            figure,
            target,
            &format!("`{label}` ran without --compare-direct"),
        );
    };
    let c = r
        .params
        .get("concurrency")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Row {
        figure,
        target,
        measured: format!(
            "p99 {} (p50 {}) at {c} concurrent (`{label}`; TTFT percentile through Switchboard minus the mock's, same run)",
            ms(p99),
            ms(p50)
        ),
        status: status(c >= concurrency, p99 <= limit_ms),
    }
}

fn realistic(results: &[RunResult]) -> Row {
    let (figure, target) = (
        "realistic profile (first token after 200 ms, 50 tokens 10 ms apart), 1,000 concurrent streams",
        "≥ 0.95 of the bare mock's completions/s, added TTFT p99 ≤ 20 ms",
    );
    let label = "openai-realistic-1k";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, "no `openai-realistic-1k` run");
    };
    let (Some(ratio), Some(added), Some(direct)) = (
        extra_f64(r, "throughput_ratio"),
        extra_f64(r, "added_ttft_p99_ms"),
        extra_f64(r, "direct_completions_per_sec"),
    ) else {
        return not_measured(figure, target, "the run has no bare-mock side");
    };
    Row {
        figure,
        target,
        measured: format!(
            "{ratio:.3} ({:.0}/s through Switchboard, {direct:.0}/s straight to the mock), added TTFT p99 {} at a peak of {} streams (`{label}`)",
            r.throughput_per_sec,
            ms(added),
            r.peak_in_flight
        ),
        status: status(r.peak_in_flight >= 1000, ratio >= 0.95 && added <= 20.0),
    }
}

fn ws_ack_open_loop(results: &[RunResult]) -> Row {
    let (figure, target) = (
        "WebSocket send → durable ack",
        "p99 < 5 ms at 1,000 messages/s, open loop",
    );
    let label = "ws-ack-open-1k";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, "no `ws-ack-open-1k` run");
    };
    let Some(ack) = r.latency_ms.get("ack") else {
        return not_measured(figure, target, "no ack in the run");
    };
    let rate = param_f64(r, "rate").unwrap_or(0.0);
    let acks = r.acks_per_sec.unwrap_or(0.0);
    // The schedule asked for `rate`; the load counts as reached when the acks kept up.
    let reached = rate >= 1000.0 && acks >= 0.95 * rate;
    Row {
        figure,
        target,
        measured: format!(
            "p99 {} (p50 {}) from the intended send time, {rate:.0}/s scheduled, {acks:.0} acks/s (`{label}`)",
            ms(ack.p99),
            ms(ack.p50)
        ),
        status: status(reached, ack.p99 < 5.0),
    }
}

fn ws_answers(results: &[RunResult]) -> Row {
    let (figure, target) = ("WebSocket answers/s (10-token answers)", "≥ 2,000");
    let label = "ws-chat-throughput";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, "no `ws-chat-throughput` run");
    };
    Row {
        figure,
        target,
        measured: format!(
            "{:.0}/s with {} in flight at most (`{label}`)",
            r.throughput_per_sec, r.peak_in_flight
        ),
        status: status(true, r.throughput_per_sec >= 2000.0),
    }
}

fn ws_streams(results: &[RunResult]) -> Row {
    let (figure, target) = (
        "1,000 concurrent WebSocket streams",
        "added TTFT p99 ≤ 20 ms",
    );
    let label = "ws-chat-1k";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, "no `ws-chat-1k` run");
    };
    let Some(o) = &r.overhead_ms else {
        return not_measured(figure, target, "no provider TTFT given for the run");
    };
    Row {
        figure,
        target,
        measured: format!(
            "p99 {} (p50 {}) over the simulated provider's {} ms, at a peak of {} streams (`{label}`)",
            ms(o.p99_ms),
            ms(o.p50_ms),
            o.provider_ttft_ms,
            r.peak_in_flight
        ),
        status: status(r.peak_in_flight >= 1000, o.p99_ms <= 20.0),
    }
}

fn idle_sockets(results: &[RunResult]) -> Row {
    let (figure, target) = (
        "idle authenticated WebSockets",
        "19,000 open at ≤ 8 KiB each",
    );
    let label = "connections";
    let Some(r) = ok(results, label) else {
        return not_measured(figure, target, "no `connections` run");
    };
    let live = r.extra.get("live").and_then(Value::as_u64).unwrap_or(0);
    let Some(bytes) = extra_f64(r, "server_bytes_per_connection") else {
        return not_measured(figure, target, "the run had no server pid");
    };
    let kib = bytes / 1024.0;
    Row {
        figure,
        target,
        measured: format!("{kib:.1} KiB each with {live} open (`{label}`)"),
        status: status(live >= 19_000, kib <= 8.0),
    }
}

fn memory_after(results: &[RunResult]) -> Row {
    let (figure, target) = ("server memory after `make bench`", "≤ 256 MiB RSS");
    // The bench restarts the server per phase: the worst end-of-run RSS of any run.
    let worst = results
        .iter()
        .filter(|r| r.status == "ok")
        .filter_map(|r| r.server.as_ref().map(|s| (r, s.rss_after_kib)))
        .max_by_key(|(_, kib)| *kib);
    let Some((r, kib)) = worst else {
        return not_measured(figure, target, "no run sampled the server");
    };
    let mib = kib as f64 / 1024.0;
    Row {
        figure,
        target,
        measured: format!(
            "{mib:.0} MiB at the end of `{}`, the largest after any run (the server is restarted per phase)",
            r.label
        ),
        status: status(true, mib <= 256.0),
    }
}
