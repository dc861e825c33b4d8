//! `report`: turns a directory of JSON results into docs/BENCHMARKS.md.
//!
//! The hand-written parts (method, targets, profiling) live in a template;
//! the generated parts replace its placeholders: `{{generated_at}}`, `{{run_date}}`,
//! `{{machine}}`, `{{settings}}`, `{{targets}}`, `{{summary}}`, `{{cluster}}`, `{{results}}`.
//! Every number comes from a result file: a target no run measured says so.

use std::{fmt::Write as _, path::PathBuf};

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use crate::stats::RunResult;

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A directory of result files (`*.json`), e.g. loadtest/results/latest.
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    pub out: PathBuf,
    #[arg(long, default_value = "loadtest/BENCHMARKS.template.md")]
    pub template: PathBuf,
}

/// `meta.json` beside the results, written by scripts/bench.sh: how the server ran.
#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    settings: Vec<(String, String)>,
}

pub fn run(args: &ReportArgs) -> Result<(), String> {
    let mut results = Vec::new();
    let dir = std::fs::read_dir(&args.results)
        .map_err(|e| format!("cannot read {}: {e}", args.results.display()))?;
    let mut paths: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut meta = Meta::default();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if p.file_name().is_some_and(|n| n == "meta.json") {
            meta = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            continue;
        }
        let r: RunResult =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        results.push(r);
    }
    if results.is_empty() {
        return Err(format!("no results in {}", args.results.display()));
    }
    results.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    let template = std::fs::read_to_string(&args.template)
        .map_err(|e| format!("cannot read the template {}: {e}", args.template.display()))?;
    let doc = template
        .replace(
            "{{generated_at}}",
            &chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        )
        .replace("{{run_date}}", &run_date(&results))
        .replace("{{machine}}", &machine())
        .replace("{{settings}}", &settings(&meta))
        .replace(
            "{{targets}}",
            &format!(
                "{}\nThe seed's earlier targets, from the same runs:\n\n{}",
                crate::targets::table(&results),
                targets(&results)
            ),
        )
        .replace("{{summary}}", &summary(&results))
        .replace("{{cluster}}", &cluster(&results))
        .replace("{{results}}", &details(&results));
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(&args.out, doc)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    eprintln!("[report] {} runs → {}", results.len(), args.out.display());
    Ok(())
}

/// When the first run started, as `YYYY-MM-DD HH:MM UTC`.
fn run_date(results: &[RunResult]) -> String {
    results
        .iter()
        .filter_map(|r| chrono::DateTime::parse_from_rfc3339(&r.started_at).ok())
        .min()
        .map_or_else(
            || "unknown".into(),
            |t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string()
            },
        )
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let ram = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let files =
        crate::procfs::max_open_files(None).map_or_else(|| "unknown".into(), |n| n.to_string());
    let mut s = String::from("| | |\n|---|---|\n");
    for (k, v) in [
        ("CPU", cpu),
        ("cores (nproc)", cores.to_string()),
        ("memory", ram),
        ("kernel", kernel),
        ("rustc", rustc),
        ("open files limit", files),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}

fn settings(meta: &Meta) -> String {
    if meta.settings.is_empty() {
        return "_(no meta.json beside the results)_\n".into();
    }
    let mut s = String::from("| | |\n|---|---|\n");
    for (k, v) in &meta.settings {
        let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
    }
    s
}

fn ok_runs<'a>(results: &'a [RunResult], scenarios: &[&str]) -> Vec<&'a RunResult> {
    results
        .iter()
        .filter(|r| r.status == "ok" && scenarios.contains(&r.scenario.as_str()))
        .collect()
}

fn param_u64(r: &RunResult, key: &str) -> Option<u64> {
    r.params.get(key).and_then(Value::as_u64)
}

fn fmt_ms(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// One row per target: what was measured, and met / not met / not shown.
fn targets(results: &[RunResult]) -> String {
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. TTFT overhead at 1,000 concurrent streams.
    let mut with_overhead: Vec<&RunResult> = ok_runs(results, &["ws-chat", "openai"])
        .into_iter()
        .filter(|r| r.overhead_ms.is_some())
        .collect();
    with_overhead.sort_by_key(|r| std::cmp::Reverse(r.peak_in_flight));
    rows.push(match with_overhead.first() {
        Some(r) => {
            let o = r.overhead_ms.as_ref().expect("filtered");
            let measured = format!(
                "p99 {} (p50 {}) over a {} ms provider TTFT, at a peak of {} concurrent streams (`{}`)",
                fmt_ms(o.p99_ms),
                fmt_ms(o.p50_ms),
                o.provider_ttft_ms,
                r.peak_in_flight,
                r.label
            );
            let mut measured = measured;
            if let Some(light) = with_overhead
                .iter()
                .filter(|l| l.scenario == r.scenario && l.peak_in_flight < r.peak_in_flight)
                .min_by_key(|l| l.peak_in_flight)
            {
                let lo = light.overhead_ms.as_ref().expect("filtered");
                let _ = write!(
                    measured,
                    "; at {} streams (`{}`): p99 {} (p50 {})",
                    light.peak_in_flight,
                    light.label,
                    fmt_ms(lo.p99_ms),
                    fmt_ms(lo.p50_ms)
                );
            }
            let status = if r.peak_in_flight >= 1000 {
                met(o.p99_ms < 1.0)
            } else if o.p99_ms >= 1.0 {
                "not met".into()
            } else {
                format!("not shown (only {} concurrent)", r.peak_in_flight)
            };
            ("Gateway TTFT overhead p99 < 1 ms at 1,000 concurrent streams".into(), measured, status)
        }
        None => not_measured("Gateway TTFT overhead p99 < 1 ms at 1,000 concurrent streams"),
    });

    // 2. Streamed completions per second.
    let best = ok_runs(results, &["ws-chat", "openai"])
        .into_iter()
        .max_by(|a, b| a.throughput_per_sec.total_cmp(&b.throughput_per_sec));
    rows.push(match best {
        Some(r) => (
            "5,000 streamed completions/s, everything on".into(),
            format!(
                "{:.0}/s (`{}`, {} errors)",
                r.throughput_per_sec,
                r.label,
                r.errors.values().sum::<u64>()
            ),
            met(r.throughput_per_sec >= 5000.0),
        ),
        None => not_measured("5,000 streamed completions/s, everything on"),
    });

    // 3. Idle WebSockets and memory per connection.
    let conns = ok_runs(results, &["connections"])
        .into_iter()
        .max_by_key(|r| r.extra.get("live").and_then(Value::as_u64).unwrap_or(0));
    let title = "50,000 concurrent idle WebSockets at ≤ 10 KiB of server memory each";
    rows.push(match conns {
        Some(r) => {
            let live = r.extra.get("live").and_then(Value::as_u64).unwrap_or(0);
            match r
                .extra
                .get("server_bytes_per_connection")
                .and_then(Value::as_f64)
            {
                Some(bytes) => {
                    let kib = bytes / 1024.0;
                    let status = if live >= 50_000 {
                        met(kib <= 10.0)
                    } else if kib > 10.0 {
                        "not met".into()
                    } else {
                        format!("not shown (held {live}, not 50,000)")
                    };
                    let mut measured = format!(
                        "{kib:.1} KiB per connection with {live} open (`{}`)",
                        r.label
                    );
                    if live < 50_000
                        && let Some(limit) = r
                            .extra
                            .get("server_open_files_limit")
                            .and_then(Value::as_u64)
                    {
                        let _ = write!(
                            measured,
                            "; 50,000 not attempted: the server may open {limit} files here"
                        );
                    }
                    (title.into(), measured, status)
                }
                None => (
                    title.into(),
                    format!("{live} held; no server memory figure (no --server-pid)"),
                    "not shown".into(),
                ),
            }
        }
        None => not_measured(title),
    });

    // 4. Send → durable ack at 1,000 messages/s.
    let acks = ok_runs(results, &["ws-chat"])
        .into_iter()
        .filter(|r| r.acks_per_sec.is_some() && r.latency_ms.contains_key("ack"))
        .max_by(|a, b| {
            a.acks_per_sec
                .unwrap_or(0.0)
                .total_cmp(&b.acks_per_sec.unwrap_or(0.0))
        });
    let title = "Send → durable ack p99 < 5 ms at 1,000 messages/s";
    rows.push(match acks {
        Some(r) => {
            let rate = r.acks_per_sec.unwrap_or(0.0);
            let p99 = r.latency_ms["ack"].p99;
            let status = if rate >= 1000.0 {
                met(p99 < 5.0)
            } else if p99 >= 5.0 {
                "not met".into()
            } else {
                format!("not shown (only {rate:.0} messages/s)")
            };
            (
                title.into(),
                format!(
                    "p99 {} at {rate:.0} messages/s (`{}`)",
                    fmt_ms(p99),
                    r.label
                ),
                status,
            )
        }
        None => not_measured(title),
    });

    // 5. Sign-in at 50 concurrent.
    let signin = ok_runs(results, &["http"])
        .into_iter()
        .filter(|r| r.latency_ms.contains_key("signin"))
        .max_by_key(|r| param_u64(r, "concurrency").unwrap_or(0));
    let title = "Sign-in p95 < 100 ms at 50 concurrent";
    rows.push(match signin {
        Some(r) => {
            let c = param_u64(r, "concurrency").unwrap_or(0);
            let p95 = r.latency_ms["signin"].p95;
            let status = if c >= 50 {
                met(p95 < 100.0)
            } else if p95 >= 100.0 {
                "not met".into()
            } else {
                format!("not shown (only {c} concurrent)")
            };
            (
                title.into(),
                format!("p95 {} at {c} concurrent (`{}`)", fmt_ms(p95), r.label),
                status,
            )
        }
        None => not_measured(title),
    });

    // 6. Zero errors.
    let errors: u64 = results.iter().map(|r| r.errors.values().sum::<u64>()).sum();
    let not_run: Vec<&str> = results
        .iter()
        .filter(|r| r.status != "ok")
        .map(|r| r.label.as_str())
        .collect();
    let mut by_code = std::collections::BTreeMap::<&str, u64>::new();
    for r in results {
        for (k, v) in &r.errors {
            *by_code.entry(k).or_default() += v;
        }
    }
    let mut measured = if errors == 0 {
        format!("0 errors in {} runs", results.len() - not_run.len())
    } else {
        let list: Vec<String> = by_code.iter().map(|(k, v)| format!("`{k}` {v}")).collect();
        format!("{errors} errors: {}", list.join(", "))
    };
    if !not_run.is_empty() {
        let _ = write!(measured, "; could not run: {}", not_run.join(", "));
    }
    let status = if errors > 0 {
        "not met".into()
    } else if !not_run.is_empty() {
        "met for the runs done".into()
    } else {
        "met".into()
    };
    rows.push(("Zero errors".into(), measured, status));

    let mut s = String::from("| target | measured | status |\n|---|---|---|\n");
    for (t, m, st) in rows {
        let _ = writeln!(s, "| {t} | {m} | **{st}** |");
    }
    s
}

fn met(ok: bool) -> String {
    if ok { "met".into() } else { "not met".into() }
}

fn not_measured(title: &str) -> (String, String, String) {
    (
        title.into(),
        "no run measured it".into(),
        "not shown".into(),
    )
}

fn lat(r: &RunResult, name: &str, f: impl Fn(&crate::stats::Percentiles) -> f64) -> String {
    r.latency_ms
        .get(name)
        .map_or_else(|| "–".into(), |p| format!("{:.1}", f(p)))
}

fn summary(results: &[RunResult]) -> String {
    let mut s = String::from(
        "| run | scenario | done/s | ack p50 / p99 (ms) | TTFT p50 / p99 (ms) | overhead p50 / p99 (ms) | total p50 / p99 (ms) | peak in flight | errors | server CPU (% of 1 core) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        if r.status != "ok" {
            let _ = writeln!(
                s,
                "| {} | {} | could not run: {} | | | | | | | |",
                r.label,
                r.scenario,
                r.failure.as_deref().unwrap_or("").replace('|', "\\|")
            );
            continue;
        }
        let overhead = r.overhead_ms.as_ref().map_or_else(
            || "–".into(),
            |o| format!("{:.1} / {:.1}", o.p50_ms, o.p99_ms),
        );
        let rate = if r.scenario == "connections" {
            "–".to_owned()
        } else {
            format!("{:.1}", r.throughput_per_sec)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} | {} / {} | {} | {} / {} | {} | {} | {} |",
            r.label,
            r.scenario,
            rate,
            lat(r, "ack", |p| p.p50),
            lat(r, "ack", |p| p.p99),
            lat(r, "ttft", |p| p.p50),
            lat(r, "ttft", |p| p.p99),
            overhead,
            lat(r, "total", |p| p.p50),
            lat(r, "total", |p| p.p99),
            r.peak_in_flight,
            r.errors.values().sum::<u64>(),
            r.server
                .as_ref()
                .map_or_else(|| "–".into(), |sv| format!("{:.0}", sv.cpu_percent)),
        );
    }
    s
}

/// One node against three (scripts/bench.sh, runs `cluster-1-node` and
/// `cluster-3-nodes`): throughput, what the sender's own socket sees, what a
/// socket on another node sees, and the CPU all nodes spent per answer.
fn cluster(results: &[RunResult]) -> String {
    let mut s = String::from(
        "| run | nodes | answers/s | ack p50 / p99 (ms) | TTFT, sender's node p50 / p99 (ms) | TTFT, next node p50 / p99 (ms) | done, sender's node p50 / p99 (ms) | done, next node p50 / p99 (ms) | server CPU per answer, all nodes (ms) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut any = false;
    for label in ["cluster-1-node", "cluster-3-nodes"] {
        let Some(r) = results
            .iter()
            .rfind(|r| r.label == label && r.status == "ok")
        else {
            continue;
        };
        any = true;
        let nodes = param_u64(r, "nodes").unwrap_or(1);
        let others: Option<f64> = match r.extra.get("other_nodes") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|n| n.get("cpu_secs").and_then(Value::as_f64))
                .sum(),
            _ => Some(0.0),
        };
        let cpu_per_answer = match (r.server.as_ref(), others) {
            (Some(sv), Some(o)) if r.completed > 0 => {
                format!("{:.2}", 1000.0 * (sv.cpu_secs + o) / r.completed as f64)
            }
            _ => "–".into(),
        };
        let pair =
            |name: &str| format!("{} / {}", lat(r, name, |p| p.p50), lat(r, name, |p| p.p99));
        let _ = writeln!(
            s,
            "| {label} | {nodes} | {:.1} | {} | {} | {} | {} | {} | {cpu_per_answer} |",
            r.throughput_per_sec,
            pair("ack"),
            pair("ttft"),
            pair("watch_ttft"),
            pair("total"),
            pair("watch_done"),
        );
    }
    if any {
        s
    } else {
        "No cluster run in these results.\n".into()
    }
}

fn details(results: &[RunResult]) -> String {
    let mut s = String::new();
    for r in results {
        let _ = writeln!(s, "### {} (`{}`)\n", r.label, r.scenario);
        if r.status != "ok" {
            let _ = writeln!(
                s,
                "Could not run: {}\n",
                r.failure.as_deref().unwrap_or("(no reason recorded)")
            );
            continue;
        }
        if let Some(p) = r.params.as_object() {
            let list: Vec<String> = p
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                .collect();
            let _ = writeln!(s, "Parameters: {}\n", list.join(", "));
        }
        if r.scenario == "connections" {
            let f = |k: &str| r.extra.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let _ = writeln!(
                s,
                "Setup {:.1} s (not measured); {} of {} sockets opened in {:.1} s ({:.0}/s), {} answered a ping; measured phase {:.1} s; {} closed cleanly at the end. Server memory: {:.1} KiB per connection.\n",
                r.setup_secs,
                f("connected"),
                f("requested"),
                f("connect_secs"),
                f("connects_per_sec"),
                f("live"),
                r.duration_secs,
                r.completed,
                f("server_bytes_per_connection") / 1024.0,
            );
        } else {
            let _ = writeln!(
                s,
                "Setup {:.1} s (not measured); measured {:.1} s: {} started, {} completed, {} failed, {:.1} {}/s{}; peak {} in flight.\n",
                r.setup_secs,
                r.duration_secs,
                r.started,
                r.completed,
                r.failed,
                r.throughput_per_sec,
                r.operation_noun(),
                r.acks_per_sec
                    .map_or_else(String::new, |a| format!(", {a:.1} acks/s")),
                r.peak_in_flight,
            );
        }
        if !r.latency_ms.is_empty() {
            s.push_str("| latency (ms) | count | p50 | p90 | p95 | p99 | max |\n|---|---|---|---|---|---|---|\n");
            for (name, p) in &r.latency_ms {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    p.count, p.p50, p.p90, p.p95, p.p99, p.max
                );
            }
            s.push('\n');
        }
        if let Some(o) = &r.overhead_ms {
            let _ = writeln!(
                s,
                "Overhead over the provider's {} ms TTFT (measured TTFT − {} ms): p50 {}, p90 {}, p99 {}, max {}.\n",
                o.provider_ttft_ms,
                o.provider_ttft_ms,
                fmt_ms(o.p50_ms),
                fmt_ms(o.p90_ms),
                fmt_ms(o.p99_ms),
                fmt_ms(o.max_ms)
            );
        }
        if r.errors.is_empty() {
            s.push_str("Errors: none.\n\n");
        } else {
            let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("`{k}` {v}")).collect();
            let _ = writeln!(s, "Errors: {}.\n", list.join(", "));
        }
        for (who, p) in [("Server", &r.server), ("Load generator", &r.client)] {
            if let Some(p) = p {
                let _ = writeln!(
                    s,
                    "{who}: RSS {:.1} → {:.1} MiB (max {:.1} MiB), CPU {:.1} s = {:.0} % of one core.\n",
                    p.rss_before_kib as f64 / 1024.0,
                    p.rss_after_kib as f64 / 1024.0,
                    p.rss_max_kib as f64 / 1024.0,
                    p.cpu_secs,
                    p.cpu_percent
                );
            }
        }
        if let Some(extra) = r.extra.as_object().filter(|e| !e.is_empty()) {
            let list: Vec<String> = extra
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v.as_f64() {
                    Some(f) if v.is_f64() => format!("{k}={f:.1}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            let _ = writeln!(s, "Also: {}.\n", list.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, nodes: u64, completed: u64, others: serde_json::Value) -> RunResult {
        let p = |p50: f64, p99: f64| serde_json::json!({"count": 10, "p50": p50, "p90": p99, "p95": p99, "p99": p99, "max": p99, "mean": p50});
        serde_json::from_value(serde_json::json!({
            "scenario": "ws-chat", "label": label, "run_id": "r", "started_at": "2026-12-03T00:00:00Z",
            "url": "http://127.0.0.1:1", "status": "ok", "failure": null,
            "params": {"nodes": nodes, "watch": true}, "setup_secs": 1.0, "duration_secs": 10.0,
            "started": completed, "completed": completed, "failed": 0, "throughput_per_sec": completed as f64 / 10.0,
            "acks_per_sec": null, "peak_in_flight": 3,
            "latency_ms": {"ttft": p(52.0, 60.0), "watch_ttft": p(53.5, 70.0), "ack": p(2.0, 5.0),
                           "total": p(900.0, 950.0), "watch_done": p(901.0, 960.0)},
            "errors": {}, "overhead_ms": null,
            "server": {"pid": 1, "rss_before_kib": 1, "rss_after_kib": 1, "rss_max_kib": 1, "hwm_kib": 1,
                       "cpu_secs": 2.0, "cpu_percent": 20.0},
            "client": null, "extra": {"other_nodes": others}
        }))
        .expect("a result")
    }

    #[test]
    fn the_cluster_table_compares_one_node_with_three() {
        let one = run("cluster-1-node", 1, 1000, serde_json::json!(null));
        let three = run(
            "cluster-3-nodes",
            3,
            1000,
            serde_json::json!([{"cpu_secs": 1.0}, {"cpu_secs": 1.0}]),
        );
        let table = cluster(&[one, three]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 2, "{table}");
        // CPU per answer sums every node: 2 s / 1000 answers, then (2 + 1 + 1) s / 1000.
        assert!(
            rows[0].starts_with("| cluster-1-node | 1 | 100.0 |"),
            "{}",
            rows[0]
        );
        assert!(rows[0].ends_with("| 2.00 |"), "{}", rows[0]);
        assert!(rows[1].ends_with("| 4.00 |"), "{}", rows[1]);
        assert!(rows[1].contains("| 53.5 / 70.0 |"), "{}", rows[1]);
        assert_eq!(cluster(&[]), "No cluster run in these results.\n");
    }
}
