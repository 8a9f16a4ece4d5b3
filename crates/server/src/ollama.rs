//! The read-only and embedding parts of Ollama's API, on the same port and
//! the same models: `GET /api/version`, `/api/tags`, `/api/ps`,
//! `POST /api/show`, `/api/embed` and the legacy `/api/embeddings`. Errors
//! come in Ollama's shape (`{"error": "…"}`). Model names may carry a tag
//! (`smollm2:latest`); `latest` is the served model itself.

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
use crate::error::ApiError;
use crate::AppState;

/// An error as Ollama's clients read it.
pub struct OllamaError(ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        (self.0.status, Json(json!({"error": self.0.message}))).into_response()
    }
}

/// The served name for an Ollama model name: `name` or `name:latest`.
fn untagged(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

fn not_found(name: &str) -> OllamaError {
    OllamaError(ApiError { status: StatusCode::NOT_FOUND, ..ApiError::invalid("model", format!("model '{name}' not found")) })
}

/// The chat model's entry in `/api/tags` and `/api/ps`.
fn model_entry(state: &AppState) -> Value {
    let session = state.engine.session();
    let file = &session.file;
    let arch = session.model.config().arch.clone();
    let size: u64 = file.tensors().iter().map(|t| t.size as u64).sum();
    // The type most of the weights are stored in, as Ollama's quantization level.
    let mut by_type: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for t in file.tensors().iter().filter(|t| t.dims.len() == 2) {
        *by_type.entry(t.ty.name()).or_default() += t.size as u64;
    }
    let quant = by_type.iter().max_by_key(|(_, &b)| b).map_or("unknown", |(n, _)| *n);
    let size_label = file.get("general.size_label").and_then(hearth_gguf::MetaValue::as_str).unwrap_or("");
    let name = format!("{}:latest", state.model_name);
    json!({
        "name": name,
        "model": name,
        "modified_at": "1970-01-01T00:00:00Z",
        "size": size,
        "digest": "",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch],
            "parameter_size": size_label,
            "quantization_level": quant,
        },
    })
}

pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

pub async fn tags(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"models": [model_entry(&state)]}))
}

pub async fn ps(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut entry = model_entry(&state);
    entry["size_vram"] = json!(0);
    entry["expires_at"] = json!("2318-01-01T00:00:00Z"); // loaded for the server's lifetime
    Json(json!({"models": [entry]}))
}

#[derive(Deserialize)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

pub async fn show(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, OllamaError> {
    let req: ShowRequest = crate::parse(&body)?;
    let name = req.model.or(req.name).unwrap_or_default();
    if untagged(&name) != state.model_name {
        return Err(not_found(&name));
    }
    let session = state.engine.session();
    let cfg = session.model.config();
    let entry = model_entry(&state);
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
async fn embed_with(state: &AppState, model: &str, input: Value, truncate: bool) -> Result<(Vec<Vec<f32>>, usize), OllamaError> {
    let src = source(state, Some(untagged(model))).map_err(|_| not_found(model))?;
    let rule = input_rule(state, &src);
    let seqs = tokio::task::spawn_blocking(move || inputs(&rule, &input, truncate))
        .await
        .map_err(|_| ApiError::internal("tokenizing the inputs failed"))??;
    let tokens = seqs.iter().map(Vec::len).sum();
    Ok((src.run(state, seqs).await?, tokens))
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
