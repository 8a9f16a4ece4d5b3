//! Anthropic's Messages API: `POST /v1/messages` (whole, or streamed as its
//! event sequence `message_start` … `content_block_delta` … `message_stop`),
//! with `tools`, `tool_use` and `tool_result` blocks, and
//! `POST /v1/messages/count_tokens`. A translation: the request becomes an
//! OpenAI chat request run by the same handler (one request path), and its
//! reply becomes Anthropic's. Errors come in Anthropic's shape.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::dto::ChatRequest;
use crate::error::{ApiError, ErrorShape, ShapedError};
use crate::relay::{self, Tally, Target, Translator};
use crate::AppState;

/// Anthropic's error body.
pub struct Anthropic;

/// An error as Anthropic's clients read it.
pub type AnthropicError = ShapedError<Anthropic>;

impl ErrorShape for Anthropic {
    fn body(e: &ApiError) -> Value {
        let kind = match e.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": e.message}})
    }
}

fn bad(field: &str, message: impl Into<String>) -> AnthropicError {
    ApiError::invalid(field, message).into()
}

/// The text of a `content` that is a string or a list of text blocks.
fn text_of(content: &Value, at: &str) -> Result<String, AnthropicError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => Ok(b.get("text").and_then(Value::as_str).unwrap_or("").to_owned()),
                other => Err(bad(at, format!("block type {} is not supported here (text only)", other.unwrap_or("(missing)")))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.concat()),
        Value::Null => Ok(String::new()),
        _ => Err(bad(at, "content must be a string or a list of blocks")),
    }
}

/// The OpenAI chat request for an Anthropic Messages request.
fn to_openai(req: &Value) -> Result<Map<String, Value>, AnthropicError> {
    let mut messages = Vec::new();
    if let Some(system) = req.get("system").filter(|s| !s.is_null()) {
        messages.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    let Some(turns) = req.get("messages").and_then(Value::as_array) else {
        return Err(bad("messages", "messages must be a list"));
    };
    for (i, m) in turns.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "user" | "assistant") {
            return Err(bad(&format!("messages.{i}.role"), format!("role {role:?} is not user or assistant")));
        }
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        let Value::Array(blocks) = content else {
            messages.push(json!({"role": role, "content": text_of(&content, &format!("messages.{i}.content"))?}));
            continue;
        };
        let (mut text, mut calls) = (String::new(), Vec::new());
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match b.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                "tool_use" if role == "assistant" => calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": b.get("name").cloned().unwrap_or(Value::Null), "arguments": b.get("input").cloned().unwrap_or(json!({}))},
                })),
                "tool_result" if role == "user" => {
                    // Each result is a tool turn of its own, answering its call.
                    if !text.is_empty() {
                        messages.push(json!({"role": "user", "content": std::mem::take(&mut text)}));
                    }
                    let mut result = text_of(b.get("content").unwrap_or(&Value::Null), &at)?;
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        result = format!("Error: {result}");
                    }
                    messages.push(json!({"role": "tool", "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null), "content": result}));
                }
                "image" | "document" => return Err(bad(&at, "images and documents are not supported: the served model reads text only")),
                other => return Err(bad(&at, format!("block type {other:?} is not supported in a {role} message"))),
            }
        }
        if role == "assistant" {
            let mut msg = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            messages.push(msg);
        } else if !text.is_empty() {
            messages.push(json!({"role": "user", "content": text}));
        }
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    for (from, to) in [("model", "model"), ("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"), ("stop_sequences", "stop")] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "description": t.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                }})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}}),
            _ => return Err(bad("tool_choice", "tool_choice type must be auto, any, tool or none")),
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(out)
}


fn stop_reason(finish: Option<&str>, tool_calls: bool) -> &'static str {
    match finish {
        _ if tool_calls => "tool_use",
        Some("length") => "max_tokens",
        _ => "end_turn",
    }
}

pub async fn messages(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, AnthropicError> {
    let req: Value = crate::parse(&body)?;
    let Some(max_tokens) = req.get("max_tokens").and_then(Value::as_u64) else {
        return Err(bad("max_tokens", "max_tokens is required"));
    };
    let asked = req.get("model").and_then(Value::as_str).unwrap_or("");
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut openai = to_openai(&req)?;
    openai.insert("max_tokens".into(), json!(max_tokens));
    openai.insert("stream".into(), json!(stream));
    if stream {
        // Counts on every chunk: `message_start` reports the prompt's size.
        openai.insert("stream_options".into(), json!({"include_usage": true, "continuous_usage_stats": true}));
    }
    let reply = relay::call(&state, Target::Chat, &Value::Object(openai)).await?;
    // The reply names the model that answered (the router's choice, or the
    // default model for a name not served).
    let (model, headers) = (relay::answered_by(&state, asked, &reply), reply.headers().clone());
    let id = crate::format::unique_id("msg");
    if !stream {
        let v = relay::whole(reply).await?;
        let choice = &v["choices"][0];
        let message = &choice["message"];
        let mut content = Vec::new();
        if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        let calls = message["tool_calls"].as_array().cloned().unwrap_or_default();
        for c in &calls {
            content.push(tool_use_block(c));
        }
        let message = Json(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(choice["finish_reason"].as_str(), !calls.is_empty()),
            "stop_sequence": null,
            "usage": usage(&v["usage"]),
        }));
        return Ok(relay::with_route_headers_of(&headers, message.into_response()));
    }
    Ok(relay::with_route_headers_of(&headers, relay::translate(relay::events(reply), Relay::new(&id, &model)).into_response()))
}

/// Anthropic's `usage` for OpenAI's: input read from the prefix cache is
/// counted apart (`cache_read_input_tokens`), as Anthropic counts it.
fn usage(u: &Value) -> Value {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0).min(prompt);
    json!({
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// A `tool_use` block for an OpenAI tool call (arguments parsed back to an object).
fn tool_use_block(c: &Value) -> Value {
    let input = c["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(json!({}));
    json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input})
}

fn event(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// OpenAI chunks in, Anthropic's event sequence out: `message_start` (with
/// the first chunk, which carries the prompt's size), a text block opened at
/// the first text and streamed as `text_delta`s, each tool call as a
/// `tool_use` block with its arguments as one `input_json_delta`, then
/// `message_delta` (stop reason, usage) and `message_stop`.
struct Relay {
    pending: VecDeque<SseEvent>,
    start: Option<Value>,
    text_open: Option<usize>,
    blocks: usize,
    tally: Tally,
    tool_calls: bool,
    failed: bool,
}

impl Relay {
    fn new(id: &str, model: &str) -> Self {
        let start = json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(&Value::Null),
        }});
        Self { pending: VecDeque::new(), start: Some(start), text_open: None, blocks: 0, tally: Tally::default(), tool_calls: false, failed: false }
    }

    fn push(&mut self, name: &str, data: &Value) {
        self.pending.push_back(event(name, data));
    }

    fn started(&mut self, chunk: Option<&Value>) {
        if let Some(mut start) = self.start.take() {
            if let Some(v) = chunk {
                start["message"]["usage"] = usage(&v["usage"]);
            }
            self.push("message_start", &start);
        }
    }

    fn close_text(&mut self) {
        if let Some(i) = self.text_open.take() {
            self.push("content_block_stop", &json!({"type": "content_block_stop", "index": i}));
        }
    }
}

impl Translator for Relay {
    fn chunk(&mut self, v: &Value) {
        self.started(Some(v));
        if let Some(err) = v.get("error") {
            self.push("error", &json!({"type": "error", "error": {"type": "api_error", "message": err["message"]}}));
            self.failed = true;
            return;
        }
        self.tally.note(v);
        let delta = &v["choices"][0]["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = if let Some(i) = self.text_open {
                i
            } else {
                let i = self.blocks;
                self.blocks += 1;
                self.push("content_block_start", &json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}));
                self.text_open = Some(i);
                i
            };
            self.push("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}));
        }
        for c in delta["tool_calls"].as_array().into_iter().flatten() {
            self.close_text();
            self.tool_calls = true;
            let i = self.blocks;
            self.blocks += 1;
            let mut block = tool_use_block(c);
            let input = std::mem::replace(&mut block["input"], json!({}));
            self.push("content_block_start", &json!({"type": "content_block_start", "index": i, "content_block": block}));
            self.push("content_block_delta", &json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}));
            self.push("content_block_stop", &json!({"type": "content_block_stop", "index": i}));
        }
    }

    fn end(&mut self) {
        self.started(None);
        self.close_text();
        let reason = stop_reason(self.tally.finish.as_deref(), self.tool_calls);
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": null},
            "usage": usage(&self.tally.usage),
        });
        self.push("message_delta", &delta);
        self.push("message_stop", &json!({"type": "message_stop"}));
    }

    fn queue(&mut self) -> &mut VecDeque<SseEvent> {
        &mut self.pending
    }

    fn stopped(&self) -> bool {
        self.failed
    }
}

pub async fn count_tokens(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, AnthropicError> {
    let req: Value = crate::parse(&body)?;
    let openai = to_openai(&req)?;
    let chat: ChatRequest =
        serde_json::from_value(Value::Object(openai)).map_err(|e| bad("messages", format!("invalid request: {e}")))?;
    let served = state.served(chat.sampling.model_asked()).await?;
    let prepared = crate::generation::prepare_chat(&served, &chat).await?;
    Ok(Json(json!({"input_tokens": prepared.prompt.len()})))
}
