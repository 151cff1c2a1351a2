//! A small client of the serving API (the demo and the tests use it; any OpenAI client works too).

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// A response: status, `Retry-After` (for 429s) and the JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds, when present.
    pub retry_after: Option<u64>,
    /// The body (`Value::Null` when it is not JSON).
    pub body: Value,
}

/// An HTTP client bound to one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

fn transport(e: reqwest::Error) -> Error {
    Error::Io(std::io::Error::other(e))
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Result<Client> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().map_err(transport)?;
        Ok(Client { base: base.into().trim_end_matches('/').to_string(), http, token: None })
    }

    /// Send `Authorization: Bearer <token>` (admin calls).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    async fn finish(resp: reqwest::Response) -> Result<Reply> {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text().await.map_err(transport)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, retry_after, body })
    }

    /// POST raw bytes to `path`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<Reply> {
        let mut req = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::finish(req.send().await.map_err(transport)?).await
    }

    /// POST a JSON body to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.post_raw(path, body.to_string()).await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::finish(req.send().await.map_err(transport)?).await
    }

    /// GET `path` as text (`/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.map_err(transport)?))
    }

    /// `POST /v1/completions` with `model`, `prompt` and extra fields merged in.
    pub async fn complete(&self, model: &str, prompt: &str, extra: Value) -> Result<Reply> {
        let mut body = json!({"model": model, "prompt": prompt});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        self.post("/v1/completions", &body).await
    }

    /// A streaming request: the `data:` payloads of the server-sent events, in order.
    pub async fn stream(&self, path: &str, body: &Value) -> Result<(u16, Vec<String>)> {
        let mut resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let mut raw = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            raw.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&raw);
        let events = text
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data:")).map(|l| l.trim_start()).collect();
                (!data.is_empty()).then(|| data.join("\n"))
            })
            .collect();
        Ok((status, events))
    }
}
