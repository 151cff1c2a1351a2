//! Wire requests (OpenAI's `/v1/completions` and `/v1/chat/completions`) and their validation into
//! a typed [`ValidatedRequest`].
//!
//! Everything the engine relies on is checked here, before a request is queued: the JSON parses
//! (an error names the field, via `serde_path_to_error`), sampling parameters are in range, the
//! prompt fits, and `model` resolves to the base model or a published adapter version. The alias
//! `datanet` is resolved now, so a request runs to the end on the version it was admitted with
//! even if a newer one is published meanwhile.

use serde::Deserialize;

use crate::adapter_cache::{AdapterKey, Registry};
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use tributary_jobs::tokenizer::Tokenizer;

/// Most stop strings per request (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 64;

/// A string or a list of strings (`prompt`, `stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Fields shared by both endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    /// Adapter id (`datanet/version`), alias (`datanet`), or empty / the base model's name.
    #[serde(default)]
    pub model: String,
    /// Most tokens to generate (default 16).
    pub max_tokens: Option<u64>,
    /// Newer name of `max_tokens` in the chat API.
    pub max_completion_tokens: Option<u64>,
    /// 0 (greedy) to 2.
    pub temperature: Option<f64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    /// Must be 1.
    pub n: Option<u64>,
    /// Server-sent events instead of one JSON body.
    #[serde(default)]
    pub stream: bool,
    /// Up to four stop strings.
    pub stop: Option<OneOrMany>,
    /// Seed of the sampler (random if absent).
    pub seed: Option<u64>,
    /// vLLM's extension: keep generating past the end-of-text token.
    #[serde(default)]
    pub ignore_eos: bool,
    /// vLLM's extension: return the generated token ids in the choice (`token_ids`).
    #[serde(default)]
    pub return_token_ids: bool,
}

/// `POST /v1/completions` body, besides [`CommonParams`].
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt (a string, or a list holding one string).
    pub prompt: OneOrMany,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text, or a list of `{"type": "text", "text": …}` parts.
    pub content: ChatContent,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ChatContent {
    /// Plain text.
    Text(String),
    /// Content parts; only text parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Must be `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: String,
}

/// `POST /v1/chat/completions` body, besides [`CommonParams`].
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
}

/// Which API a request came through (shapes the response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `/v1/completions`.
    Completion,
    /// `/v1/chat/completions`.
    Chat,
}

/// A request the engine can run as is.
#[derive(Debug, Clone)]
pub struct ValidatedRequest {
    /// `cmpl-…` id, also the usage row's `request_id`.
    pub id: String,
    /// `model` as the caller wrote it (echoed in the response).
    pub model: String,
    /// The adapter version to run, `None` for the base model.
    pub adapter: Option<AdapterKey>,
    /// Prompt token ids (opening token, prompt, newline).
    pub prompt_tokens: Vec<u32>,
    /// Decoding settings.
    pub params: SamplingParams,
    /// Stream the answer as server-sent events.
    pub stream: bool,
    /// Return the generated token ids.
    pub return_token_ids: bool,
    /// Which API.
    pub api: ApiKind,
}

/// Limits a request must respect.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest prompt in tokens.
    pub max_prompt_tokens: usize,
    /// Most tokens one request may generate.
    pub max_new_tokens: usize,
    /// Prompt + generated tokens must fit the model's positions.
    pub context_tokens: usize,
}

/// Parse a body as one JSON object (a syntax error is reported against `body`).
pub fn parse_body(body: &[u8]) -> Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid("body", "invalid_json", format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid("body", "invalid_json", "the body must be a JSON object"));
    }
    Ok(value)
}

/// Read `T` out of a parsed body, naming the offending field on error.
pub fn from_body<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            // A missing required field is reported at the root; serde names it in the message.
            let field = missing_field(&inner.to_string()).unwrap_or_else(|| "body".to_string());
            Error::invalid(field, "invalid_field", inner.to_string())
        } else {
            Error::invalid(path, "invalid_type", inner.to_string())
        }
    })
}

/// Parse and read `T` in one go (tests, admin bodies).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    from_body(&parse_body(body)?)
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Validates requests against the model, the adapters and the limits.
#[derive(Clone)]
pub struct Validator {
    tokenizer: Tokenizer,
    registry: Registry,
    limits: Limits,
}

impl Validator {
    /// A validator.
    pub fn new(tokenizer: Tokenizer, registry: Registry, limits: Limits) -> Validator {
        Validator { tokenizer, registry, limits }
    }

    /// The limits enforced.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validate a `/v1/completions` body.
    pub fn completion(&self, body: &[u8]) -> Result<ValidatedRequest> {
        let value = parse_body(body)?;
        let common: CommonParams = from_body(&value)?;
        let req: CompletionRequest = from_body(&value)?;
        let prompts = req.prompt.into_vec();
        let [prompt] = prompts.as_slice() else {
            return Err(Error::invalid("prompt", "unsupported", format!("exactly one prompt per request (got {})", prompts.len())));
        };
        self.finish(prompt, common, ApiKind::Completion)
    }

    /// Validate a `/v1/chat/completions` body.
    pub fn chat(&self, body: &[u8]) -> Result<ValidatedRequest> {
        let value = parse_body(body)?;
        let common: CommonParams = from_body(&value)?;
        let req: ChatRequest = from_body(&value)?;
        let prompt = render_chat(&req.messages)?;
        self.finish(&prompt, common, ApiKind::Chat)
    }

    fn finish(&self, prompt: &str, common: CommonParams, api: ApiKind) -> Result<ValidatedRequest> {
        let params = sampling(&common, self.limits.max_new_tokens)?;
        let adapter = self.registry.resolve(&common.model)?;
        let prompt_tokens = match api {
            ApiKind::Completion => self.tokenizer.encode_continuation(prompt)?,
            ApiKind::Chat => self.tokenizer.encode_prompt(prompt)?,
        };
        if prompt_tokens.len() > self.limits.max_prompt_tokens {
            return Err(Error::invalid(
                "prompt",
                "prompt_too_long",
                format!("the prompt is {} tokens; the limit is {}", prompt_tokens.len(), self.limits.max_prompt_tokens),
            ));
        }
        if prompt_tokens.len() + params.max_tokens > self.limits.context_tokens {
            let param = if prompt_tokens.len() >= self.limits.context_tokens { "prompt" } else { "max_tokens" };
            return Err(Error::invalid(
                param,
                "context_length_exceeded",
                format!(
                    "prompt ({} tokens) + max_tokens ({}) exceeds the model's context of {} tokens",
                    prompt_tokens.len(),
                    params.max_tokens,
                    self.limits.context_tokens
                ),
            ));
        }
        let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
        Ok(ValidatedRequest {
            id,
            model: common.model,
            adapter,
            prompt_tokens,
            params,
            stream: common.stream,
            return_token_ids: common.return_token_ids,
            api,
        })
    }
}

/// Check and default the sampling parameters.
pub fn sampling(c: &CommonParams, max_new_tokens: usize) -> Result<SamplingParams> {
    let (max_field, max_tokens) = match (c.max_tokens, c.max_completion_tokens) {
        (Some(m), _) => ("max_tokens", m),
        (None, Some(m)) => ("max_completion_tokens", m),
        (None, None) => ("max_tokens", 16.min(max_new_tokens as u64)),
    };
    if max_tokens == 0 || max_tokens > max_new_tokens as u64 {
        return Err(Error::invalid(max_field, "out_of_range", format!("must be between 1 and {max_new_tokens} (got {max_tokens})")));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(Error::invalid("temperature", "out_of_range", format!("must be between 0 and 2 (got {temperature})")));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !top_p.is_finite() || top_p <= 0.0 || top_p > 1.0 {
        return Err(Error::invalid("top_p", "out_of_range", format!("must be in (0, 1] (got {top_p})")));
    }
    if let Some(n) = c.n
        && n != 1
    {
        return Err(Error::invalid("n", "unsupported", format!("only n = 1 is supported (got {n})")));
    }
    let stop = c.stop.clone().map(OneOrMany::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(Error::invalid("stop", "out_of_range", format!("at most {MAX_STOP_STRINGS} stop strings (got {})", stop.len())));
    }
    for (i, s) in stop.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_STOP_BYTES {
            return Err(Error::invalid(
                format!("stop[{i}]"),
                "out_of_range",
                format!("stop strings must be 1 to {MAX_STOP_BYTES} bytes (got {})", s.len()),
            ));
        }
    }
    let seed = c.seed.unwrap_or_else(rand::random);
    Ok(SamplingParams { max_tokens: max_tokens as usize, temperature, top_p, seed, stop, ignore_eos: c.ignore_eos })
}

/// The prompt a conversation becomes: each message's text on its own line, in order.
pub fn render_chat(messages: &[ChatMessage]) -> Result<String> {
    if messages.is_empty() {
        return Err(Error::invalid("messages", "invalid_field", "at least one message is required"));
    }
    let mut lines = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer") {
            return Err(Error::invalid(
                format!("messages[{i}].role"),
                "invalid_field",
                format!("role `{}` is not one of system, developer, user, assistant", m.role),
            ));
        }
        let text = match &m.content {
            ChatContent::Text(t) => t.clone(),
            ChatContent::Parts(parts) => {
                let mut out = String::new();
                for (j, p) in parts.iter().enumerate() {
                    if p.kind != "text" {
                        return Err(Error::invalid(
                            format!("messages[{i}].content[{j}].type"),
                            "unsupported",
                            format!("content part type `{}` is not supported (only text)", p.kind),
                        ));
                    }
                    out.push_str(&p.text);
                }
                out
            }
        };
        lines.push(text);
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(json: &str) -> Result<SamplingParams> {
        let c: CommonParams = parse_json(json.as_bytes())?;
        sampling(&c, 64)
    }

    #[test]
    fn errors_name_the_field() {
        let e = common(r#"{"temperature": 7}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("temperature"));
        let e = common(r#"{"top_p": 0}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("top_p"));
        let e = common(r#"{"max_tokens": 65}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("max_tokens"));
        let e = common(r#"{"max_tokens": "ten"}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("max_tokens"));
        let e = common(r#"{"stop": ["a", ""]}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("stop[1]"));
        let e = common(r#"{"n": 2}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("n"));
        let e = common(r#"{"max_tokens": 3"#).expect_err("rejected");
        assert_eq!((e.param(), e.code()), (Some("body"), "invalid_json"));
        let e = parse_json::<CompletionRequest>(br#"{"model": ""}"#).expect_err("rejected");
        assert_eq!(e.param(), Some("prompt"));
        let p = common(r#"{"temperature": 0, "seed": 5, "stop": "\n"}"#).expect("valid");
        assert_eq!((p.temperature, p.seed, p.stop.clone(), p.max_tokens), (0.0, 5, vec!["\n".to_string()], 16));
    }

    #[test]
    fn chat_renders_messages_in_order() {
        let req: ChatRequest = parse_json(
            br#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}"#,
        )
        .expect("parses");
        assert_eq!(render_chat(&req.messages).expect("renders"), "be brief\nhi");
        let bad: ChatRequest = parse_json(br#"{"messages": [{"role": "robot", "content": "x"}]}"#).expect("parses");
        assert_eq!(render_chat(&bad.messages).expect_err("rejected").param(), Some("messages[0].role"));
    }
}
