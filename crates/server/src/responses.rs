//! OpenAI's Responses API: `POST /v1/responses` (whole, or streamed as its
//! semantic events `response.created` … `response.output_text.delta` …
//! `response.completed`), `GET` and `DELETE /v1/responses/{id}`. Input is a
//! string or a list of items (messages, `function_call`,
//! `function_call_output`); `instructions`, function `tools`, `text.format`
//! (JSON object or schema) and `previous_response_id` (responses kept in a
//! bounded store for the server's lifetime, unless `store: false`).
//!
//! A translation like the other protocols: the request becomes an OpenAI
//! chat request run by the chat handler (one request path), and its reply
//! becomes a response object. Fields Hearth cannot honour (hosted tools,
//! `background`, `include`, images) are refused with a 400 naming them,
//! never silently dropped.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::BoxStream;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::format::unique_id;
use crate::relay::{self, Tally, Target};
use crate::AppState;

/// Responses kept for `previous_response_id` and `GET`, at most.
const MAX_STORED: usize = 1024;
/// Bytes of stored conversations, at most (the oldest go first).
const MAX_STORED_BYTES: usize = 64 << 20;

/// One stored response: the object as returned, and the whole conversation
/// it ended (chat messages, without `instructions`, which do not carry over).
struct Stored {
    response: Value,
    conversation: Vec<Value>,
    bytes: usize,
}

/// The responses kept for this server's lifetime: bounded in number and in
/// bytes, the oldest evicted first. Memory, never disk: a restart forgets.
#[derive(Default)]
pub struct ResponseStore {
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<Stored>>,
    bytes: usize,
}

impl ResponseStore {
    fn get(&self, id: &str) -> Option<Arc<Stored>> {
        self.inner.lock().ok()?.by_id.get(id).cloned()
    }

    fn put(&self, id: String, response: Value, conversation: Vec<Value>) {
        let bytes = response.to_string().len() + conversation.iter().map(|m| m.to_string().len()).sum::<usize>();
        let Ok(mut s) = self.inner.lock() else { return };
        s.bytes += bytes;
        s.by_id.insert(id.clone(), Arc::new(Stored { response, conversation, bytes }));
        s.order.push_back(id);
        while s.order.len() > MAX_STORED || (s.bytes > MAX_STORED_BYTES && s.order.len() > 1) {
            let Some(old) = s.order.pop_front() else { break };
            if let Some(gone) = s.by_id.remove(&old) {
                s.bytes -= gone.bytes;
            }
        }
    }

    fn delete(&self, id: &str) -> bool {
        let Ok(mut s) = self.inner.lock() else { return false };
        let Some(gone) = s.by_id.remove(id) else { return false };
        s.bytes -= gone.bytes;
        s.order.retain(|o| o != id);
        true
    }
}

fn not_stored(id: &str, param: Option<&str>) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: Some(if param.is_some() { "previous_response_not_found" } else { "not_found" }),
        param: param.map(str::to_owned),
        ..ApiError::bad_json(format!("no stored response with id {id:?} (responses live in memory until the server restarts; `store: false` keeps none)"))
    }
}

/// Fields read (and echoed) here; anything else must be a chat sampling
/// extension Hearth knows, or the request is refused.
const RESPONSES_FIELDS: &[&str] = &[
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
    "parallel_tool_calls", "text", "stream", "store", "previous_response_id", "metadata", "user", "truncation",
    "reasoning", "service_tier", "safety_identifier", "prompt_cache_key", "include", "background", "max_tool_calls",
];
/// Hearth's chat extensions, passed through as they are.
const PASSED_THROUGH: &[&str] =
    &["seed", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "logit_bias", "ignore_eos", "chat_template_kwargs", "reasoning_budget"];


/// The text of a content that is a string or a list of text parts.
fn text_of(content: &Value, at: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| match p.get("type").and_then(Value::as_str).unwrap_or("") {
                "input_text" | "output_text" | "text" => Ok(p.get("text").and_then(Value::as_str).unwrap_or("").to_owned()),
                "refusal" => Ok(p.get("refusal").and_then(Value::as_str).unwrap_or("").to_owned()),
                "input_image" | "input_file" | "input_audio" => {
                    Err(ApiError::invalid(&format!("{at}[{i}]"), "images, files and audio are not supported: the served model reads text only"))
                }
                other => Err(ApiError::invalid(&format!("{at}[{i}].type"), format!("content part type {other:?} is not supported"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|p| p.concat()),
        _ => Err(ApiError::invalid(at, "content must be a string or a list of parts")),
    }
}

/// The chat messages for `input` (a string, or a list of items).
fn input_messages(input: &Value) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        Value::String(s) => return Ok(vec![json!({"role": "user", "content": s})]),
        Value::Array(items) => items,
        Value::Null => return Err(ApiError::invalid("input", "input is required")),
        _ => return Err(ApiError::invalid("input", "input must be a string or a list of items")),
    };
    let mut messages: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or(if item.get("role").is_some() { "message" } else { "" });
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                if !matches!(role, "user" | "assistant" | "system" | "developer") {
                    return Err(ApiError::invalid(&format!("{at}.role"), format!("role {role:?} is not user, assistant, system or developer")));
                }
                let content = text_of(item.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
                messages.push(json!({"role": role, "content": content}));
            }
            "function_call" => {
                let call = json!({
                    "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": item.get("name").cloned().unwrap_or(Value::Null), "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))},
                });
                // Calls in a row are one assistant turn (parallel calls).
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" && last["tool_calls"].is_array() => {
                        if let Some(calls) = last["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    Some(last) if last["role"] == "assistant" => last["tool_calls"] = json!([call]),
                    _ => messages.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let output = text_of(item.get("output").unwrap_or(&Value::Null), &format!("{at}.output"))?;
                messages.push(json!({"role": "tool", "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null), "content": output}));
            }
            // Earlier thoughts are not shown to the model again (templates drop them too).
            "reasoning" => {}
            "item_reference" => {
                return Err(ApiError::invalid(&at, "item references are not supported: send the item itself, or use previous_response_id"));
            }
            other => return Err(ApiError::invalid(&format!("{at}.type"), format!("input item type {other:?} is not supported"))),
        }
    }
    Ok(messages)
}

/// A checked Responses request: the chat request it runs as, and what the
/// response and the store need.
struct Translated {
    chat: Map<String, Value>,
    /// Previous conversation and this input (stored with the reply).
    conversation: Vec<Value>,
    store: bool,
    stream: bool,
}

fn translate(state: &AppState, req: &Map<String, Value>) -> Result<Translated, ApiError> {
    for key in req.keys() {
        if !RESPONSES_FIELDS.contains(&key.as_str()) && !PASSED_THROUGH.contains(&key.as_str()) {
            return Err(ApiError::invalid(key, format!("field {key:?} is not supported by this server's Responses API")));
        }
    }
    let get = |k: &str| req.get(k).filter(|v| !v.is_null());
    if get("background").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid("background", "background responses are not supported: stream the response instead"));
    }
    if get("include").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::invalid("include", "include is not supported (there are no hosted tool outputs or encrypted reasoning to add)"));
    }
    if let Some(t) = get("truncation").and_then(Value::as_str).filter(|t| !matches!(*t, "auto" | "disabled")) {
        return Err(ApiError::invalid("truncation", format!("truncation {t:?} is not auto or disabled")));
    }
    let mut conversation = Vec::new();
    if let Some(prev) = get("previous_response_id") {
        let id = prev.as_str().ok_or_else(|| ApiError::invalid("previous_response_id", "previous_response_id must be a string"))?;
        let stored = state.responses.get(id).ok_or_else(|| not_stored(id, Some("previous_response_id")))?;
        conversation.extend(stored.conversation.iter().cloned());
    }
    conversation.extend(input_messages(req.get("input").unwrap_or(&Value::Null))?);
    let mut messages = Vec::new();
    if let Some(instructions) = get("instructions") {
        let text = instructions.as_str().ok_or_else(|| ApiError::invalid("instructions", "instructions must be a string"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    messages.extend(conversation.iter().cloned());

    let mut chat = Map::new();
    chat.insert("messages".into(), Value::Array(messages));
    for (from, to) in [("model", "model"), ("temperature", "temperature"), ("top_p", "top_p"), ("max_output_tokens", "max_tokens"), ("tool_choice", "tool_choice"), ("parallel_tool_calls", "parallel_tool_calls")] {
        if let Some(v) = get(from) {
            chat.insert(to.into(), v.clone());
        }
    }
    for key in PASSED_THROUGH {
        if let Some(v) = get(key) {
            chat.insert((*key).into(), v.clone());
        }
    }
    if get("max_tool_calls").and_then(Value::as_u64) == Some(1) {
        chat.insert("parallel_tool_calls".into(), json!(false));
    }
    if get("truncation").and_then(Value::as_str) == Some("auto") {
        chat.insert("context_overflow".into(), json!("truncate"));
    }
    if let Some(tools) = get("tools") {
        let list = tools.as_array().ok_or_else(|| ApiError::invalid("tools", "tools must be a list"))?;
        let mut out = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => out.push(json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "description": t.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": t.get("parameters").cloned().unwrap_or(Value::Null),
                }})),
                other => {
                    return Err(ApiError::invalid(
                        &format!("tools[{i}].type"),
                        format!("tool type {} is not supported: only function tools run here (hosted tools such as web search live in OpenAI's cloud)", other.unwrap_or("(missing)")),
                    ))
                }
            }
        }
        chat.insert("tools".into(), Value::Array(out));
    }
    if let Some(format) = get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) {
        let response_format = match format.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_object") => Some(json!({"type": "json_object"})),
            Some("json_schema") => Some(json!({"type": "json_schema", "json_schema": {
                "name": format.get("name").cloned().unwrap_or(json!("response")),
                "schema": format.get("schema").cloned().unwrap_or(Value::Null),
                "strict": format.get("strict").cloned().unwrap_or(json!(true)),
            }})),
            _ => return Err(ApiError::invalid("text.format.type", "text.format type must be text, json_object or json_schema")),
        };
        if let Some(f) = response_format {
            chat.insert("response_format".into(), f);
        }
    }
    if get("reasoning").and_then(|r| r.get("effort")).and_then(Value::as_str).is_some_and(|e| matches!(e, "none" | "minimal")) {
        // The templates of hybrid thinking models take this switch.
        let mut kwargs = chat.get("chat_template_kwargs").and_then(Value::as_object).cloned().unwrap_or_default();
        kwargs.insert("enable_thinking".into(), json!(false));
        chat.insert("chat_template_kwargs".into(), Value::Object(kwargs));
    }
    let stream = get("stream").and_then(Value::as_bool).unwrap_or(false);
    chat.insert("stream".into(), json!(stream));
    if stream {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Translated { chat, conversation, store: get("store").and_then(Value::as_bool).unwrap_or(true), stream })
}

/// The response object around `output`, echoing the request's settings.
fn response_object(id: &str, created: u64, req: &Map<String, Value>, model: &str, status: &str, output: &[Value], usage: &Value) -> Value {
    let echo = |k: &str, default: Value| req.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": echo("instructions", Value::Null),
        "max_output_tokens": echo("max_output_tokens", Value::Null),
        "model": model,
        "output": output,
        "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
        "previous_response_id": echo("previous_response_id", Value::Null),
        "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
        "store": echo("store", json!(true)),
        "temperature": echo("temperature", json!(1.0)),
        "text": echo("text", json!({"format": {"type": "text"}})),
        "tool_choice": echo("tool_choice", json!("auto")),
        "tools": echo("tools", json!([])),
        "top_p": echo("top_p", json!(1.0)),
        "truncation": echo("truncation", json!("disabled")),
        "metadata": echo("metadata", json!({})),
        "user": echo("user", Value::Null),
        "usage": usage,
    })
}

/// Responses' `usage` for OpenAI chat usage (`reasoning` tokens are not
/// counted apart: the chat reply does not split them).
fn usage_of(u: &Value) -> Value {
    let (input, output) = (u["prompt_tokens"].as_u64().unwrap_or(0), u["completion_tokens"].as_u64().unwrap_or(0));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" { json!([]) } else { json!([text_part(text)]) };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]})
}

fn call_item(id: &str, call: &Value, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call["id"], "name": call["function"]["name"],
        "arguments": if status == "in_progress" { json!("") } else { call["function"]["arguments"].clone() }, "status": status,
    })
}

/// The assistant turn a reply adds to the conversation.
fn assistant_turn(text: &str, calls: &[Value]) -> Value {
    let mut turn = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        turn["tool_calls"] = Value::Array(calls.to_vec());
    }
    turn
}

fn status_of(finish: Option<&str>) -> &'static str {
    if finish == Some("length") {
        "incomplete"
    } else {
        "completed"
    }
}

pub async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: Map<String, Value> = crate::parse(&body)?;
    let Translated { chat, mut conversation, store, stream } = translate(&state, &req)?;
    let reply = relay::call(&state, Target::Chat, &Value::Object(chat)).await?;
    let (id, created) = (unique_id("resp"), SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let model = relay::answered_by(&state, req.get("model").and_then(Value::as_str).unwrap_or(""), &reply);
    let headers = reply.headers().clone();
    if stream {
        let run = StreamRun { state: Arc::clone(&state), req, id, created, model, conversation, store };
        return Ok(relay::with_route_headers_of(&headers, stream_events(relay::events(reply), run).into_response()));
    }
    let v = relay::whole(reply).await?;
    let (choice, message) = (&v["choices"][0], &v["choices"][0]["message"]);
    let text = message["content"].as_str().unwrap_or("");
    let calls = message["tool_calls"].as_array().cloned().unwrap_or_default();
    let mut output = Vec::new();
    if let Some(thoughts) = message["reasoning_content"].as_str().filter(|t| !t.is_empty()) {
        output.push(reasoning_item(&unique_id("rs"), thoughts));
    }
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&unique_id("msg"), text, "completed"));
    }
    output.extend(calls.iter().map(|c| call_item(&unique_id("fc"), c, "completed")));
    let response = response_object(&id, created, &req, &model, status_of(choice["finish_reason"].as_str()), &output, &usage_of(&v["usage"]));
    if store {
        conversation.push(assistant_turn(text, &calls));
        state.responses.put(id, response.clone(), conversation);
    }
    Ok(relay::with_route_headers_of(&headers, Json(response).into_response()))
}

pub async fn retrieve(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    state.responses.get(&id).map(|s| Json(s.response.clone())).ok_or_else(|| not_stored(&id, None))
}

pub async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if state.responses.delete(&id) {
        Ok(Json(json!({"id": id, "object": "response", "deleted": true})))
    } else {
        Err(not_stored(&id, None))
    }
}

/// What a streamed response needs to finish: its identity, the request it
/// echoes and the conversation to store.
struct StreamRun {
    state: Arc<AppState>,
    req: Map<String, Value>,
    id: String,
    created: u64,
    model: String,
    conversation: Vec<Value>,
    store: bool,
}

/// The item being streamed: thoughts or the message text.
enum Open {
    Reasoning { index: usize, id: String, text: String },
    Message { index: usize, id: String, text: String },
}

struct Relay {
    run: StreamRun,
    pending: VecDeque<SseEvent>,
    sequence: u64,
    open: Option<Open>,
    output: Vec<Value>,
    text: String,
    calls: Vec<Value>,
    tally: Tally,
    done: bool,
}

impl Relay {
    fn emit(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.pending.push_back(SseEvent::default().event(kind).data(data.to_string()));
    }

    fn snapshot(&self, status: &str, usage: &Value) -> Value {
        let r = &self.run;
        response_object(&r.id, r.created, &r.req, &r.model, status, &self.output, usage)
    }

    /// Ends the open item, if any, with its `.done` events.
    fn close(&mut self) {
        match self.open.take() {
            Some(Open::Reasoning { index, id, text }) => {
                self.emit("response.reasoning_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}));
                let item = reasoning_item(&id, &text);
                self.emit("response.output_item.done", json!({"output_index": index, "item": item}));
                self.output.push(item);
            }
            Some(Open::Message { index, id, text }) => {
                self.emit("response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                self.emit("response.content_part.done", json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part(&text)}));
                let item = message_item(&id, &text, "completed");
                self.emit("response.output_item.done", json!({"output_index": index, "item": item}));
                self.output.push(item);
            }
            None => {}
        }
    }

    fn thoughts(&mut self, delta: &str) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close();
            let (index, id) = (self.output.len(), unique_id("rs"));
            self.emit("response.output_item.added", json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": [], "content": []}}));
            self.open = Some(Open::Reasoning { index, id, text: String::new() });
        }
        if let Some(Open::Reasoning { index, id, text }) = &mut self.open {
            text.push_str(delta);
            let data = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta});
            self.emit("response.reasoning_text.delta", data);
        }
    }

    fn answer(&mut self, delta: &str) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close();
            let (index, id) = (self.output.len(), unique_id("msg"));
            self.emit("response.output_item.added", json!({"output_index": index, "item": message_item(&id, "", "in_progress")}));
            self.emit("response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")}));
            self.open = Some(Open::Message { index, id, text: String::new() });
        }
        self.text.push_str(delta);
        if let Some(Open::Message { index, id, text }) = &mut self.open {
            text.push_str(delta);
            let data = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []});
            self.emit("response.output_text.delta", data);
        }
    }

    fn call(&mut self, call: &Value) {
        self.close();
        let (index, id) = (self.output.len(), unique_id("fc"));
        let arguments = call["function"]["arguments"].clone();
        self.emit("response.output_item.added", json!({"output_index": index, "item": call_item(&id, call, "in_progress")}));
        self.emit("response.function_call_arguments.delta", json!({"item_id": id, "output_index": index, "delta": arguments}));
        self.emit("response.function_call_arguments.done", json!({"item_id": id, "output_index": index, "name": call["function"]["name"], "arguments": arguments}));
        let item = call_item(&id, call, "completed");
        self.emit("response.output_item.done", json!({"output_index": index, "item": item}));
        self.output.push(item);
        self.calls.push(call.clone());
    }

    /// The last events: the open item's end, then `response.completed` (or
    /// `.incomplete`) with the whole response, which is stored.
    fn finish(&mut self) {
        self.close();
        if self.output.is_empty() {
            // An empty answer is still a message (as in a whole response).
            self.answer("");
            self.close();
        }
        let status = status_of(self.tally.finish.as_deref());
        let response = self.snapshot(status, &usage_of(&self.tally.usage));
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(kind, json!({"response": response}));
        if self.run.store {
            let mut conversation = std::mem::take(&mut self.run.conversation);
            conversation.push(assistant_turn(&self.text, &self.calls));
            self.run.state.responses.put(self.run.id.clone(), response, conversation);
        }
    }

    fn on_chunk(&mut self, v: &Value) {
        if let Some(err) = v.get("error") {
            self.emit("error", json!({"code": err["code"], "message": err["message"], "param": err["param"]}));
            let mut failed = self.snapshot("failed", &Value::Null);
            failed["error"] = json!({"code": "server_error", "message": err["message"]});
            self.emit("response.failed", json!({"response": failed}));
            self.done = true;
            return;
        }
        self.tally.note(v);
        let delta = &v["choices"][0]["delta"];
        if let Some(t) = delta["reasoning_content"].as_str().filter(|t| !t.is_empty()) {
            self.thoughts(t);
        }
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.answer(t);
        }
        for c in delta["tool_calls"].as_array().cloned().unwrap_or_default() {
            self.call(&c);
        }
    }
}

impl relay::Translator for Relay {
    fn chunk(&mut self, chunk: &Value) {
        self.on_chunk(chunk);
    }

    fn end(&mut self) {
        self.finish();
    }

    fn queue(&mut self) -> &mut VecDeque<SseEvent> {
        &mut self.pending
    }

    fn stopped(&self) -> bool {
        self.done
    }
}

/// OpenAI chat chunks in, the Responses API's semantic events out.
fn stream_events(chunks: BoxStream<'static, Value>, run: StreamRun) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut r = Relay {
        run,
        pending: VecDeque::new(),
        sequence: 0,
        open: None,
        output: Vec::new(),
        text: String::new(),
        calls: Vec::new(),
        tally: Tally::default(),
        done: false,
    };
    let start = r.snapshot("in_progress", &Value::Null);
    r.emit("response.created", json!({"response": start.clone()}));
    r.emit("response.in_progress", json!({"response": start}));
    relay::translate(chunks, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_become_chat_turns() {
        let input = json!([
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in "}, {"type": "input_text", "text": "Paris?"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{\"city\":\"Lyon\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "18"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ]);
        let m = input_messages(&input).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], json!({"role": "user", "content": "Weather in Paris?"}));
        assert_eq!(m[1]["tool_calls"].as_array().map(Vec::len), Some(2));
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "c1", "content": "18"}));
        assert!(input_messages(&json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])).is_err());
        assert!(input_messages(&json!([{"type": "item_reference", "id": "x"}])).is_err());
        assert!(input_messages(&json!(3)).is_err());
    }

    #[test]
    fn the_store_is_bounded_and_forgets_the_oldest() {
        let store = ResponseStore::default();
        for i in 0..MAX_STORED + 5 {
            store.put(format!("r{i}"), json!({}), vec![json!({"role": "user", "content": "x"})]);
        }
        assert!(store.get("r0").is_none() && store.get("r4").is_none());
        assert!(store.get("r5").is_some());
        assert!(store.delete("r5") && !store.delete("r5"));
        let s = store.inner.lock().unwrap();
        assert_eq!((s.order.len(), s.by_id.len()), (MAX_STORED - 1, MAX_STORED - 1));
    }
}
