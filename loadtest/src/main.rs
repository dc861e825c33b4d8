//! `loadtest`: drives a running Switchboard server on this machine and
//! reports what it measured (docs/BENCHMARKS.md says how to read it).
//!
//! Scenarios: `ws-chat`, `connections`, `http`, `openai`. Helpers:
//! `mock-openai` (an OpenAI-compatible provider with a known TTFT) and
//! `report` (docs/BENCHMARKS.md from the JSON results).
//!
//! Traffic goes to loopback only: a `--url` whose host is not in 127.0.0.0/8,
//! `::1` or `localhost` is refused. Every run is bounded by `--duration`
//! (and `--count`) and stops by itself.

mod api;
mod mock;
mod procfs;
mod report;
mod scenarios;
mod stats;
mod target;
mod targets;
mod ws;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scenarios::{
    Common, connections::ConnectionsArgs, http::HttpArgs, openai::OpenAiArgs, ws_chat::WsChatArgs,
};
use stats::RunResult;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for a local Switchboard server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// N users on their own WebSockets, each sending M messages and reading the streamed answers.
    WsChat(WsChatArgs),
    /// Hold N idle authenticated WebSockets; report server memory per connection.
    Connections(ConnectionsArgs),
    /// Sign in, list chats, send over REST (JSON answer), C at a time.
    Http(HttpArgs),
    /// Streaming POST /v1/chat/completions with an API key, C at a time.
    Openai(OpenAiArgs),
    /// Serve a mock OpenAI-compatible provider on 127.0.0.1 with a known TTFT.
    MockOpenai(mock::MockArgs),
    /// Write docs/BENCHMARKS.md from a directory of results.
    Report(report::ReportArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (scenario, common, outcome) = match cli.cmd {
        Cmd::WsChat(a) => (
            "ws-chat",
            a.common.clone(),
            scenarios::ws_chat::run(a).await,
        ),
        Cmd::Connections(a) => (
            "connections",
            a.common.clone(),
            scenarios::connections::run(a).await,
        ),
        Cmd::Http(a) => ("http", a.common.clone(), scenarios::http::run(a).await),
        Cmd::Openai(a) => ("openai", a.common.clone(), scenarios::openai::run(a).await),
        Cmd::MockOpenai(a) => return exit(mock::serve(a).await),
        Cmd::Report(a) => return exit(report::run(&a)),
    };
    finish_scenario(scenario, &common, outcome)
}

fn exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints and writes the result; a run that could not be done is written too
/// (so reports say why) and exits non-zero.
fn finish_scenario(
    scenario: &str,
    common: &Common,
    outcome: Result<RunResult, String>,
) -> ExitCode {
    let (result, code) = match outcome {
        Ok(r) => (r, ExitCode::SUCCESS),
        Err(why) => {
            eprintln!("loadtest {scenario}: {why}");
            (
                scenarios::failed_result(scenario, common, &why),
                ExitCode::FAILURE,
            )
        }
    };
    result.print_table();
    match scenarios::write_result(common, &result) {
        Ok(path) => println!("   result: {}", path.display()),
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::FAILURE;
        }
    }
    code
}
