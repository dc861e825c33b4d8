//! `ServerProcess`: the real `switchboard serve` binary as a child process,
//! for what is installed once per process (the trace exporter, the Sentry
//! client and its panic hook) and what happens at exit (flushing them),
//! which an in-process `spawn_app` cannot show.
//!
//! The child gets a clean environment: `APP_ENV=test`, the test's database,
//! a Redis prefix of its own, port 0 (the address is read from its log), and
//! whatever the test adds.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use uuid::Uuid;

use crate::helpers::eventually;

pub struct ServerProcess {
    child: Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `switchboard serve` on `database_url` and waits until `/health` answers.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_ENV", "test")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("DATABASE_URL", database_url)
            .env("PORT", "0")
            .env(
                "SWITCHBOARD_REDIS__KEY_PREFIX",
                format!("sbtest:{}", Uuid::new_v4().simple()),
            )
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start switchboard serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        // Drained to the end, so a full pipe never blocks the server.
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let mut readers = Vec::new();
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let logs = logs.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            }));
        }
        let mut server = Self {
            child,
            base: String::new(),
            logs,
            readers,
        };
        let base = eventually(Duration::from_secs(60), "the server's address", || {
            let found = server.listening_on();
            if found.is_none()
                && let Ok(Some(status)) = server.child.try_wait()
            {
                panic!("switchboard exited with {status}:\n{}", server.logs());
            }
            async move { found }
        })
        .await;
        server.base = base;
        let client = reqwest::Client::new();
        let health = format!("{}/health", server.base);
        eventually(Duration::from_secs(10), "/health", || {
            let res = client.get(&health).send();
            async move { res.await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        server
    }

    fn listening_on(&self) -> Option<String> {
        let logs = self.logs.lock().unwrap();
        logs.iter().find_map(|l| {
            let at = l.find("listening on http://")? + "listening on ".len();
            let url: String = l[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !c.is_control())
                .collect();
            Some(url)
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the server wrote so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM, as an orchestrator stops it, and waits for the exit.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = eventually(Duration::from_secs(30), "the server to exit", || {
            let s = self.child.try_wait().ok().flatten();
            async move { s }
        })
        .await;
        // The readers end with the pipes: then the log is complete.
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        (status, self.logs())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failing test must not leave a server behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
