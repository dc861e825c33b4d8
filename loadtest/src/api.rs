//! The server's REST API as the load generator needs it: sign-up, sign-in,
//! chats, messages, API keys. Every failure carries the server's error code
//! (`{"error":{"code":...}}`), or `http_<status>` / a transport word when there
//! is none, so runs can count errors by code.

use std::time::Duration;

use futures::{StreamExt, stream};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::target::Target;

/// A failed request: a code to count it by, and what to tell a person.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: String,
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} (HTTP {s}): {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl ApiError {
    pub fn transport(e: &reqwest::Error) -> Self {
        let code = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect_error"
        } else if e.is_body() || e.is_decode() {
            "body_error"
        } else {
            "transport_error"
        };
        Self {
            code: code.into(),
            status: None,
            message: e.to_string(),
        }
    }

    /// Reads the error envelope of a non-2xx response.
    pub async fn from_response(res: Response) -> Self {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        Self::from_body(status, &body)
    }

    pub fn from_body(status: StatusCode, body: &str) -> Self {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let err = parsed.as_ref().and_then(|v| v.get("error"));
        // Switchboard's envelope names a `code`; OpenAI's shape may leave it
        // null and name a `type` instead.
        let code = err
            .and_then(|e| {
                e.get("code")
                    .and_then(Value::as_str)
                    .or_else(|| e.get("type").and_then(Value::as_str))
            })
            .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
        let message = err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| body.chars().take(200).collect(), str::to_owned);
        Self {
            code,
            status: Some(status.as_u16()),
            message,
        }
    }
}

/// The HTTP client every scenario uses: loopback only, no proxy.
pub fn http_client(pool: usize) -> Client {
    Client::builder()
        // A proxy from the environment must never carry load traffic elsewhere.
        .no_proxy()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
        .expect("HTTP client")
}

#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub base: String,
}

async fn json_or_error(res: Result<Response, reqwest::Error>) -> Result<Value, ApiError> {
    let res = res.map_err(|e| ApiError::transport(&e))?;
    if !res.status().is_success() {
        return Err(ApiError::from_response(res).await);
    }
    if res.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    res.json::<Value>()
        .await
        .map_err(|e| ApiError::transport(&e))
}

impl Api {
    pub fn new(target: &Target, pool: usize) -> Self {
        Self {
            client: http_client(pool),
            base: target.base.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /ready`: the server is up and its dependencies too.
    pub async fn ready(&self) -> Result<(), ApiError> {
        json_or_error(self.client.get(self.url("/ready")).send().await)
            .await
            .map(drop)
    }

    pub async fn signup(
        &self,
        email: &str,
        username: &str,
        password: &str,
    ) -> Result<(), ApiError> {
        let body = json!({"email": email, "username": username, "password": password});
        json_or_error(
            self.client
                .post(self.url("/api/auth/signup"))
                .json(&body)
                .send()
                .await,
        )
        .await
        .map(drop)
    }

    /// Signs in; answers the access token.
    pub async fn signin(&self, email: &str, password: &str) -> Result<String, ApiError> {
        let body = json!({"email": email, "password": password});
        let v = json_or_error(
            self.client
                .post(self.url("/api/auth/signin"))
                .json(&body)
                .send()
                .await,
        )
        .await?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError {
                code: "bad_response".into(),
                status: Some(200),
                message: "sign-in answer has no access_token".into(),
            })
    }

    pub async fn create_chat(&self, token: &str, title: &str) -> Result<Uuid, ApiError> {
        let v = json_or_error(
            self.client
                .post(self.url("/api/chats"))
                .bearer_auth(token)
                .json(&json!({"title": title}))
                .send()
                .await,
        )
        .await?;
        v.get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError {
                code: "bad_response".into(),
                status: Some(201),
                message: "chat answer has no id".into(),
            })
    }

    /// `GET /api/chats`; answers how many came back.
    pub async fn list_chats(&self, token: &str) -> Result<usize, ApiError> {
        let v = json_or_error(
            self.client
                .get(self.url("/api/chats"))
                .bearer_auth(token)
                .send()
                .await,
        )
        .await?;
        Ok(v.get("chats").and_then(Value::as_array).map_or(0, Vec::len))
    }

    /// `POST /api/chats/{id}/messages` without SSE: the finished assistant message.
    pub async fn send_message(
        &self,
        token: &str,
        chat_id: Uuid,
        content: &str,
        client_msg_id: &str,
    ) -> Result<Value, ApiError> {
        json_or_error(
            self.client
                .post(self.url(&format!("/api/chats/{chat_id}/messages")))
                .bearer_auth(token)
                .json(&json!({"content": content, "client_msg_id": client_msg_id}))
                .send()
                .await,
        )
        .await
    }

    /// `POST /api/keys`: answers the plaintext key.
    pub async fn create_key(&self, token: &str, name: &str) -> Result<String, ApiError> {
        let v = json_or_error(
            self.client
                .post(self.url("/api/keys"))
                .bearer_auth(token)
                .json(&json!({"name": name}))
                .send()
                .await,
        )
        .await?;
        v.get("key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError {
                code: "bad_response".into(),
                status: None,
                message: format!("POST /api/keys answered without a `key` field: {v}"),
            })
    }
}

/// A user created for this run.
#[derive(Debug, Clone)]
pub struct Account {
    pub email: String,
    pub username: String,
    pub password: String,
    pub token: String,
}

impl Account {
    pub fn new(run_id: &str, i: usize) -> Self {
        let username = format!("lt{run_id}u{i}");
        Self {
            email: format!("{username}@loadtest.example.com"),
            password: format!("Lt-{run_id}-pw-{i}!"),
            username,
            token: String::new(),
        }
    }
}

/// Signs up and signs in `n` fresh users, `concurrency` at a time (argon2
/// makes each call cost the server tens of milliseconds of CPU).
pub async fn create_accounts(
    api: &Api,
    run_id: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Account>, String> {
    let started = std::time::Instant::now();
    let results: Vec<Result<Account, String>> = stream::iter(0..n)
        .map(|i| async move {
            let mut a = Account::new(run_id, i);
            api.signup(&a.email, &a.username, &a.password)
                .await
                .map_err(|e| format!("sign-up of {} failed: {e}", a.username))?;
            a.token = api
                .signin(&a.email, &a.password)
                .await
                .map_err(|e| format!("sign-in of {} failed: {e}", a.username))?;
            Ok(a)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let accounts = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "[setup] {n} users signed up and in, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(accounts)
}

/// A short random id for this run's names.
pub fn run_id() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_from_bodies() {
        let e = ApiError::from_body(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
        );
        assert_eq!(e.code, "rate_limited");
        assert_eq!(e.message, "slow down");
        let e = ApiError::from_body(
            StatusCode::PAYMENT_REQUIRED,
            r#"{"error":{"code":null,"type":"budget_exceeded","message":"x"}}"#,
        );
        assert_eq!(e.code, "budget_exceeded");
        let e = ApiError::from_body(StatusCode::NOT_FOUND, "nope");
        assert_eq!(e.code, "http_404");
    }

    #[test]
    fn account_names_fit_the_rules() {
        let a = Account::new("0123abcd", 12345);
        assert!(a.username.len() <= 32);
        assert!(a.password.len() >= 10);
        assert!(a.email.contains('@'));
    }
}
