//! A headless Chromium driven over W3C WebDriver (chromedriver), for the
//! browser-client tests. WebDriver is JSON over HTTP, so this is a thin layer
//! over reqwest rather than another crate. Each `Browser` has its own
//! chromedriver on a free port and a fresh profile directory; dropping it ends both.
//! Waits poll (every 50 ms) up to a generous deadline, so a loaded CI machine
//! is slow rather than flaky.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::Client;
use serde_json::{Value, json};

/// Long enough for a 2-core machine running the whole suite; polls end early.
pub const WAIT: Duration = Duration::from_secs(30);
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";

/// Whether this machine can run the browser tests (scripts/setup.sh installs both).
pub fn available() -> bool {
    ["chromium", "chromedriver"].iter().all(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

pub struct Browser {
    http: Client,
    base: String,
    port: u16,
    session: String,
    driver: Child,
    _profile: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280×900 unless resized).
    pub async fn launch() -> Browser {
        assert!(
            available(),
            "chromium and chromedriver are required (scripts/setup.sh installs them)"
        );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile =
            std::env::temp_dir().join(format!("sb-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(started.elapsed() < WAIT, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Without these flags Chromium hangs on the closed network (QUIC, updates, sync).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-renderer-backgrounding",
            "--disable-background-timer-throttling",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium_binary(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let res: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        Browser {
            http,
            base: format!("{root}/session/{id}"),
            port,
            session: id,
            driver,
            _profile: TempDir(profile),
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req.send().await.expect("webdriver").json().await.unwrap();
        if let Some(err) = res["value"]["error"].as_str() {
            panic!("webdriver {path}: {err}: {}", res["value"]["message"]);
        }
        res["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT_KEY].as_str().unwrap().to_owned()
    }

    /// Waits for `css`, then types `text` into it (WebDriver key codes allowed).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_for(css).await;
        let el = self.element(css).await;
        self.post(&format!("/element/{el}/value"), json!({ "text": text }))
            .await;
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await;
        let el = self.element(css).await;
        self.post(&format!("/element/{el}/click"), json!({})).await;
    }

    /// Polls until `script` returns something truthy; returns it.
    pub async fn wait_until(&self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0));
            if truthy {
                return v;
            }
            if started.elapsed() > WAIT {
                panic!("timed out waiting for {what}; {}", self.diagnostics().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a `prompt`/`confirm` dialog, types `text` into it if given, and accepts it.
    pub async fn accept_dialog(&self, text: Option<&str>) {
        let started = Instant::now();
        loop {
            let res: Value = self
                .http
                .get(format!("{}/alert/text", self.base))
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .unwrap();
            if res["value"]["error"].is_null() {
                break;
            }
            assert!(started.elapsed() < WAIT, "no dialog appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(t) = text {
            self.post("/alert/text", json!({ "text": t })).await;
        }
        self.post("/alert/accept", json!({})).await;
    }

    /// Waits until a visible element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        self.wait_until(
            css,
            "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0;",
            json!([css]),
        )
        .await;
    }

    /// Console messages since the last call (level and text).
    pub async fn console(&self) -> Vec<String> {
        let v = self.post("/se/log", json!({"type": "browser"})).await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The page's URL, its main region's text and the browser console, for failure messages.
    pub async fn diagnostics(&self) -> String {
        let page = self
            .js("return location.href + ' | ' + (document.querySelector('main')?.innerText ?? '').slice(0, 2000);", json!([]))
            .await;
        let logs = self
            .http
            .post(format!("{}/se/log", self.base))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .ok();
        let logs = match logs {
            Some(r) => r
                .json::<Value>()
                .await
                .map(|v| v["value"].to_string())
                .unwrap_or_default(),
            None => String::new(),
        };
        format!("page: {page}; console: {logs}")
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Opens a new window and makes it current; returns the previous handle.
    pub async fn new_window(&self) -> (String, String) {
        let old = self.cmd(reqwest::Method::GET, "/window", None).await;
        let new = self.post("/window/new", json!({"type": "window"})).await;
        let handle = new["handle"].as_str().unwrap().to_owned();
        self.switch_to(&handle).await;
        (old.as_str().unwrap().to_owned(), handle)
    }

    pub async fn switch_to(&self, handle: &str) {
        self.post("/window", json!({ "handle": handle })).await;
    }

    pub async fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
}

fn chromium_binary() -> String {
    // Debian's /usr/bin/chromium is a wrapper script; chromedriver wants the binary.
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
        .to_owned()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium with the session (a raw request: Drop cannot await), then
        // the driver we started.
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
