//! Ollama's API on the same port and the same models: `POST /api/chat` and
//! `/api/generate` (NDJSON streams by default), `/api/embed`, the legacy
//! `/api/embeddings`, `POST /api/show`, `GET /api/tags`, `/api/ps`,
//! `/api/version`, and the model cache: `/api/pull` (status lines),
//! `/api/copy`, `DELETE /api/delete` (names only, never paths or URLs). Generation is a translation: the request becomes an
//! OpenAI request run by the same handlers (one request path, the same
//! checks, metrics and engine), and their reply — JSON or SSE — becomes
//! Ollama's. Errors come in Ollama's shape (`{"error": "…"}`). Model names
//! may carry a tag (`smollm2:latest`); `latest` is the served model itself.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::embeddings::{input_rule, inputs, source};
use crate::error::{ApiError, ErrorShape, ShapedError};
use crate::relay::{self, Tally, Target};
use crate::AppState;

/// Ollama's error body: `{"error": "…"}`.
pub struct Ollama;

/// An error as Ollama's clients read it.
pub type OllamaError = ShapedError<Ollama>;

impl ErrorShape for Ollama {
    fn body(e: &ApiError) -> Value {
        json!({"error": e.message})
    }
}

fn not_found(name: &str) -> OllamaError {
    ApiError { status: StatusCode::NOT_FOUND, ..ApiError::invalid("model", format!("model '{name}' not found")) }.into()
}

/// A served chat model's entry in `/api/tags` and `/api/ps` (its GGUF
/// header is read, not its weights).
fn model_entry(spec: &hearth_engine::registry::ModelSpec) -> Value {
    let (details, size) = match hearth_gguf::GgufFile::open(&spec.path) {
        Ok(file) => gguf_details(&file),
        Err(_) => (json!({"format": "gguf", "family": spec.arch, "families": [spec.arch]}), 0),
    };
    let name = hearth_catalog::ModelName::parse(&spec.name).map_or_else(|_| spec.name.clone(), |n| n.to_string());
    json!({
        "name": name,
        "model": name,
        "modified_at": "1970-01-01T00:00:00Z",
        "size": size,
        "digest": "",
        "details": details,
    })
}

/// Ollama's `details` of a GGUF file (family, size label, the type most
/// weights are stored in as the quantization level) and its weights' bytes.
fn gguf_details(file: &hearth_gguf::GgufFile) -> (Value, u64) {
    let arch = file.get("general.architecture").and_then(hearth_gguf::MetaValue::as_str).unwrap_or("").to_owned();
    let size = file.tensor_bytes();
    let mut by_type: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for t in file.tensors().iter().filter(|t| t.dims.len() == 2) {
        *by_type.entry(t.ty.name()).or_default() += t.size as u64;
    }
    let quant = by_type.iter().max_by_key(|(_, &b)| b).map_or("unknown", |(n, _)| *n);
    let size_label = file.get("general.size_label").and_then(hearth_gguf::MetaValue::as_str).unwrap_or("");
    let details = json!({
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": size_label,
        "quantization_level": quant,
    });
    (details, size)
}

pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /api/tags`: the served model, then every other model in the cache
/// by the names it answers to.
pub async fn tags(State(state): State<Arc<AppState>>) -> Result<Json<Value>, OllamaError> {
    let mut models: Vec<Value> = state.models.specs().iter().map(model_entry).collect();
    if let Some(catalog) = state.catalog.clone() {
        // What each file says of itself (a GGUF header is read, not its weights).
        let local = tokio::task::spawn_blocking(move || {
            catalog.local_models().map(|models| {
                models
                    .into_iter()
                    .map(|m| {
                        let details = match hearth_gguf::GgufFile::open(&m.path) {
                            Ok(file) if !m.path.is_dir() => gguf_details(&file).0,
                            _ => json!({"parent_model": "", "format": if m.path.is_dir() { "safetensors" } else { "gguf" }, "family": "", "families": [], "parameter_size": "", "quantization_level": ""}),
                        };
                        (m, details)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|_| ApiError::internal("listing the models failed"))?
        .map_err(catalog_error)?;
        for (m, details) in local.into_iter().filter(|(m, _)| !state.serves(&m.name)) {
            models.push(json!({
                "name": m.name, "model": m.name,
                "modified_at": m.modified.map_or_else(|| "1970-01-01T00:00:00Z".into(), rfc3339),
                "size": m.bytes,
                "digest": m.sha256.unwrap_or_default(),
                "details": details,
            }));
        }
    }
    Ok(Json(json!({ "models": models })))
}

/// A catalog failure as Ollama's error, with the status it means.
#[allow(clippy::needless_pass_by_value)] // used as `map_err(catalog_error)`
fn catalog_error(e: hearth_catalog::CatalogError) -> OllamaError {
    use hearth_catalog::CatalogError as E;
    let status = match &e {
        E::UnknownModel(_) | E::NotPulled(_) => StatusCode::NOT_FOUND,
        E::BadName(..) | E::Refused(_) => StatusCode::BAD_REQUEST,
        E::Fetch { .. } | E::Checksum { .. } => StatusCode::BAD_GATEWAY,
        E::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError { status, ..ApiError::invalid("model", e.to_string()) }.into()
}

fn the_catalog(state: &AppState) -> Result<hearth_catalog::Catalog, OllamaError> {
    state.catalog.clone().ok_or_else(|| {
        ApiError { status: StatusCode::NOT_IMPLEMENTED, ..ApiError::bad_json("this server was started without a model cache") }.into()
    })
}

/// `/api/show` for a model in the cache that is not the one served: what
/// its file says (an encoder folder: that it embeds).
async fn show_local(state: &AppState, name: String) -> Result<Json<Value>, OllamaError> {
    let Some(catalog) = state.catalog.clone() else { return Err(not_found(&name)) };
    let asked = name.clone();
    let shown = tokio::task::spawn_blocking(move || -> Option<Value> {
        let path = catalog.resolve_name(&name).ok()?;
        if path.is_dir() {
            let details = json!({"parent_model": "", "format": "safetensors", "family": "bert", "families": ["bert"], "parameter_size": "", "quantization_level": ""});
            return Some(json!({"modelfile": "", "parameters": "", "template": "", "details": details, "model_info": {"general.architecture": "bert"}, "capabilities": ["embedding"]}));
        }
        let file = hearth_gguf::GgufFile::open(&path).ok()?;
        let (details, _) = gguf_details(&file);
        let arch = details["family"].as_str().unwrap_or("").to_owned();
        let mut info = serde_json::Map::new();
        info.insert("general.architecture".into(), json!(arch));
        for key in ["context_length", "embedding_length", "block_count"] {
            if let Some(v) = file.get(&format!("{arch}.{key}")).and_then(hearth_gguf::MetaValue::as_u64) {
                info.insert(format!("{arch}.{key}"), json!(v));
            }
        }
        let template = file.get("tokenizer.chat_template").and_then(hearth_gguf::MetaValue::as_str).unwrap_or("").to_owned();
        let mut capabilities = vec!["completion"];
        if template.contains("tools") {
            capabilities.push("tools");
        }
        Some(json!({"modelfile": "", "parameters": "", "template": template, "details": details, "model_info": info, "capabilities": capabilities}))
    })
    .await
    .map_err(|_| ApiError::internal("reading the model failed"))?;
    shown.map(Json).ok_or_else(|| not_found(&asked))
}

#[derive(Deserialize)]
struct NameRequest {
    model: Option<String>,
    name: Option<String>,
    #[serde(default = "yes")]
    stream: bool,
}

/// `POST /api/pull`: fetches a catalog model (names only: never a path or
/// URL from a client) with Ollama's status lines as NDJSON, or one line at
/// the end with `"stream": false`. A model already local answers at once.
pub async fn pull(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: NameRequest = crate::parse(&body)?;
    let name = req.model.or(req.name).unwrap_or_default();
    let catalog = the_catalog(&state)?;
    if !catalog.knows(&name) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid("model", format!("model '{name}' is not in the catalog (see `hearth list`)"))
        }
        .into());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let _ = tx.send(json!({"status": "pulling manifest"}));
    let worker = tokio::task::spawn_blocking(move || {
        use hearth_catalog::PullEvent;
        let mut current = String::new();
        let result = catalog.pull_as(&name, None, None, &mut |e| {
            let line = match e {
                PullEvent::Fetching { what, .. } => {
                    current = what;
                    json!({"status": format!("pulling {current}"), "digest": current})
                }
                PullEvent::Bytes { done, total } => {
                    json!({"status": format!("pulling {current}"), "digest": current, "completed": done, "total": total.unwrap_or(done)})
                }
                PullEvent::Verifying => json!({"status": "verifying sha256 digest"}),
                PullEvent::Tagging(_) => json!({"status": "writing manifest"}),
            };
            let _ = tx.send(line);
        });
        let _ = tx.send(match result {
            Ok(_) => json!({"status": "success"}),
            Err(e) => json!({"error": e.to_string()}),
        });
    });
    if req.stream {
        let lines = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|v| (Ok::<_, std::convert::Infallible>(format!("{v}\n")), rx))
        });
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(lines)).into_response());
    }
    let _ = worker.await;
    let mut rx = rx;
    let mut last = json!({"status": "success"});
    while let Ok(v) = rx.try_recv() {
        last = v;
    }
    if let Some(e) = last.get("error").and_then(Value::as_str) {
        return Err(ApiError { status: StatusCode::BAD_GATEWAY, ..ApiError::bad_json(e) }.into());
    }
    Ok(Json(last).into_response())
}

/// `DELETE /api/delete`: forgets a name; the file goes with its last name.
pub async fn delete(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: NameRequest = crate::parse(&body)?;
    let name = req.model.or(req.name).unwrap_or_default();
    let catalog = the_catalog(&state)?;
    tokio::task::spawn_blocking(move || catalog.delete(&name))
        .await
        .map_err(|_| ApiError::internal("deleting failed"))?
        .map_err(catalog_error)?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
struct CopyRequest {
    source: String,
    destination: String,
}

/// `POST /api/copy`: gives a local model a further name.
pub async fn copy(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: CopyRequest = crate::parse(&body)?;
    let catalog = the_catalog(&state)?;
    tokio::task::spawn_blocking(move || catalog.copy(&req.source, &req.destination))
        .await
        .map_err(|_| ApiError::internal("copying failed"))?
        .map_err(catalog_error)?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /api/ps`: the models loaded now, with the memory each holds and
/// when it unloads.
pub async fn ps(State(state): State<Arc<AppState>>) -> Json<Value> {
    let registry = &state.models;
    let models: Vec<Value> = registry
        .specs()
        .iter()
        .zip(registry.states())
        .filter(|(_, now)| now.state == "loaded")
        .map(|(spec, now)| {
            let mut entry = model_entry(spec);
            entry["size"] = json!(now.bytes);
            entry["size_vram"] = json!(0);
            // Idle with a keep-alive: when it runs out; else as long as the server runs.
            entry["expires_at"] = json!(now.expires_in.map_or_else(
                || "2318-01-01T00:00:00Z".to_owned(),
                |d| rfc3339(std::time::SystemTime::now() + d)
            ));
            entry
        })
        .collect();
    Json(json!({ "models": models }))
}

#[derive(Deserialize)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

pub async fn show(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, OllamaError> {
    let req: ShowRequest = crate::parse(&body)?;
    let name = req.model.or(req.name).unwrap_or_default();
    let Some(index) = state.find(&name) else {
        return show_local(&state, name).await;
    };
    let served = state.served(&name).await?;
    let session = served.engine.session();
    let cfg = session.model.config();
    let entry = model_entry(&state.models.specs()[index]);
    let mut info = serde_json::Map::new();
    info.insert("general.architecture".into(), json!(cfg.arch));
    info.insert(format!("{}.context_length", cfg.arch), json!(cfg.n_ctx_train));
    info.insert(format!("{}.embedding_length", cfg.arch), json!(cfg.n_embd));
    let mut capabilities = vec!["completion", "embedding"];
    if session.template.knows_tools() {
        capabilities.push("tools");
    }
    if session.template.thinks() {
        capabilities.push("thinking");
    }
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": session.template.jinja(),
        "details": entry["details"],
        "model_info": Value::Object(info),
        "capabilities": capabilities,
    })))
}

#[derive(Deserialize)]
struct EmbedRequest {
    model: String,
    input: Value,
    /// Ollama cuts over-long inputs unless told not to.
    #[serde(default = "yes")]
    truncate: bool,
}

fn yes() -> bool {
    true
}

/// Embeddings of `input` by the model Ollama's name `model` stands for,
/// and how many tokens they took.
async fn embed_with(state: &Arc<AppState>, model: &str, input: Value, truncate: bool) -> Result<(Vec<Vec<f32>>, usize), OllamaError> {
    let src = source(state, Some(model)).await.map_err(|e| if e.status == StatusCode::NOT_FOUND { not_found(model) } else { e.into() })?;
    let rule = input_rule(&src);
    let seqs = tokio::task::spawn_blocking(move || inputs(&rule, &input, truncate))
        .await
        .map_err(|_| ApiError::internal("tokenizing the inputs failed"))??;
    let tokens = seqs.iter().map(Vec::len).sum();
    Ok((src.run(seqs).await?, tokens))
}

pub async fn embed(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, OllamaError> {
    let t0 = Instant::now();
    let req: EmbedRequest = crate::parse(&body)?;
    let (vectors, tokens) = embed_with(&state, &req.model, req.input, req.truncate).await?;
    Ok(Json(json!({
        "model": req.model,
        "embeddings": vectors,
        "total_duration": t0.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    })))
}

#[derive(Deserialize)]
struct LegacyEmbedRequest {
    model: String,
    prompt: String,
}

pub async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, OllamaError> {
    let req: LegacyEmbedRequest = crate::parse(&body)?;
    let (mut vectors, _) = embed_with(&state, &req.model, Value::String(req.prompt), true).await?;
    Ok(Json(json!({"embedding": vectors.pop().unwrap_or_default()})))
}

/// `options` of Ollama's generation requests, as the OpenAI fields they
/// stand for. Unknown options are ignored, as Ollama does.
fn sampling_fields(req: &Value, openai: &mut serde_json::Map<String, Value>) -> Result<(), OllamaError> {
    let opts = req.get("options").cloned().unwrap_or(Value::Null);
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("repeat_penalty", "repeat_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("stop", "stop"),
    ] {
        if let Some(v) = opts.get(from).filter(|v| !v.is_null()) {
            openai.insert(to.into(), v.clone());
        }
    }
    // num_predict: -1 (or -2) means "until the context is full".
    if let Some(n) = opts.get("num_predict").and_then(Value::as_i64).filter(|&n| n >= 0) {
        openai.insert("max_tokens".into(), json!(n));
    }
    match req.get("format") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "json" => {
            openai.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(Value::String(s)) if s.is_empty() => {}
        Some(schema @ Value::Object(_)) => {
            openai.insert("response_format".into(), json!({"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}));
        }
        Some(other) => return Err(ApiError::invalid("format", format!("format must be \"json\" or a JSON schema, not {other}")).into()),
    }
    Ok(())
}

fn refuse_images(v: &Value, at: &str) -> Result<(), OllamaError> {
    if v.get("images").is_some_and(|i| i.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(ApiError::invalid(at, "images are not supported: the served model reads text only").into());
    }
    Ok(())
}

/// Which Ollama endpoint a translated reply goes back to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Generate,
}

pub async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: Value = crate::parse(&body)?;
    let model = req.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
    if !state.answers(&model) {
        return Err(not_found(&model));
    }
    let messages = req.get("messages").cloned().unwrap_or(Value::Null);
    for (i, m) in messages.as_array().into_iter().flatten().enumerate() {
        refuse_images(m, &format!("messages[{i}].images"))?;
    }
    let mut openai = serde_json::Map::new();
    openai.insert("messages".into(), messages);
    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        openai.insert("tools".into(), tools.clone());
    }
    sampling_fields(&req, &mut openai)?;
    translate(&state, Api::Chat, &model, openai, req.get("stream").and_then(Value::as_bool).unwrap_or(true), false).await
}

pub async fn generate(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: Value = crate::parse(&body)?;
    let model = req.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
    if !state.answers(&model) {
        return Err(not_found(&model));
    }
    refuse_images(&req, "images")?;
    let prompt = req.get("prompt").and_then(Value::as_str).unwrap_or("");
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(true);
    if prompt.is_empty() {
        // Ollama's way to load a model (an empty prompt), or with
        // `keep_alive: 0` to unload it (when no request uses it).
        let unload = match req.get("keep_alive") {
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::String(s)) => matches!(s.trim(), "0" | "0s" | "0m" | "0h"),
            _ => false,
        };
        let reason = if unload {
            if let Some(index) = state.find(&model) {
                state.models.unload(index).await;
            }
            "unload"
        } else {
            drop(state.served(&model).await?);
            "load"
        };
        return Ok(Json(json!({"model": state.answering_name(&model), "created_at": now(), "response": "", "done": true, "done_reason": reason})).into_response());
    }
    let raw = req.get("raw").and_then(Value::as_bool).unwrap_or(false);
    let mut openai = serde_json::Map::new();
    if raw {
        openai.insert("prompt".into(), json!(prompt));
    } else {
        let mut messages = Vec::new();
        if let Some(system) = req.get("system").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        openai.insert("messages".into(), Value::Array(messages));
    }
    sampling_fields(&req, &mut openai)?;
    translate(&state, Api::Generate, &model, openai, stream, raw).await
}

/// The time now in RFC 3339 (UTC, to the second), Ollama's `created_at`.
/// Hand-written: one timestamp does not justify a date crate, and the civil
/// calendar conversion below is a known ten-line algorithm.
fn now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `t` as RFC 3339 in UTC (Ollama's timestamps).
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A relayed stream's progress.
struct Relay {
    events: futures::stream::BoxStream<'static, Value>,
    tally: Tally,
    first: Option<Instant>,
    done: bool,
}

/// Runs the translated request through the OpenAI handlers (the one request
/// path) and turns their reply into Ollama's: one JSON body, or NDJSON lines
/// (a line per piece of text, then a `done` line with the counts).
async fn translate(
    state: &Arc<AppState>,
    api: Api,
    model: &str,
    mut openai: serde_json::Map<String, Value>,
    stream: bool,
    raw: bool,
) -> Result<Response, OllamaError> {
    use futures::StreamExt;
    let t0 = Instant::now();
    openai.insert("model".into(), json!(model));
    openai.insert("stream".into(), json!(stream));
    if stream {
        openai.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let target = if raw { Target::Text } else { Target::Chat };
    let reply = relay::call(state, target, &Value::Object(openai)).await?;
    // The reply names the model that answered (the router's choice, or the
    // default model for a name not served).
    let (model, headers) = (relay::answered_by(state, model, &reply), reply.headers().clone());
    if !stream {
        let v = relay::whole(reply).await?;
        let choice = &v["choices"][0];
        let text = choice["message"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or("").to_owned();
        let mut out = done_line(&model, api, &v["usage"], choice["finish_reason"].as_str(), t0, None);
        match api {
            Api::Chat => out["message"] = assistant(&text, &choice["message"]),
            Api::Generate => out["response"] = json!(text),
        }
        return Ok(relay::with_route_headers_of(&headers, Json(out).into_response()));
    }
    // Stream: OpenAI's events in, NDJSON lines out, the counts last.
    let start = Relay { events: relay::events(reply), tally: Tally::default(), first: None, done: false };
    let lines = futures::stream::unfold(start, move |mut r| {
        let model = model.clone();
        async move {
            while !r.done {
                let Some(v) = r.events.next().await else {
                    r.done = true;
                    let line = done_line(&model, api, &r.tally.usage, r.tally.finish.as_deref(), t0, r.first);
                    return Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), r));
                };
                if v.get("error").is_some() {
                    r.done = true;
                    return Some((Ok(format!("{}\n", json!({"error": v["error"]["message"]}))), r));
                }
                r.tally.note(&v);
                let choice = &v["choices"][0];
                let delta = &choice["delta"];
                let text = delta["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or("");
                if text.is_empty() && !delta["tool_calls"].is_array() {
                    continue;
                }
                r.first.get_or_insert_with(Instant::now);
                let mut line = json!({"model": model, "created_at": now(), "done": false});
                match api {
                    Api::Chat => line["message"] = assistant(text, delta),
                    Api::Generate => line["response"] = json!(text),
                }
                return Some((Ok(format!("{line}\n")), r));
            }
            None
        }
    });
    let ndjson = ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(lines));
    Ok(relay::with_route_headers_of(&headers, ndjson.into_response()))
}

/// An assistant message in Ollama's shape from OpenAI's message or delta:
/// tool calls with their arguments as objects.
fn assistant(text: &str, openai: &Value) -> Value {
    let mut m = json!({"role": "assistant", "content": text});
    if let Some(r) = openai.get("reasoning_content").and_then(Value::as_str) {
        m["thinking"] = json!(r);
    }
    if let Some(calls) = openai.get("tool_calls").and_then(Value::as_array) {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let args = c["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(json!({}));
                json!({"function": {"name": c["function"]["name"], "arguments": args}})
            })
            .collect();
        m["tool_calls"] = Value::Array(calls);
    }
    m
}

/// The closing object with Ollama's counts and durations (nanoseconds).
fn done_line(model: &str, api: Api, usage: &Value, finish: Option<&str>, t0: Instant, first: Option<Instant>) -> Value {
    let total = t0.elapsed().as_nanos() as u64;
    let prompt_ns = first.map_or(total, |f| (f - t0).as_nanos() as u64);
    let mut v = json!({
        "model": model,
        "created_at": now(),
        "done": true,
        "done_reason": if finish == Some("length") { "length" } else { "stop" },
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": usage["prompt_tokens"].as_u64().unwrap_or(0),
        "prompt_eval_duration": prompt_ns,
        "eval_count": usage["completion_tokens"].as_u64().unwrap_or(0),
        "eval_duration": total - prompt_ns.min(total),
    });
    match api {
        Api::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
        Api::Generate => v["response"] = json!(""),
    }
    v
}
