//! llama-server's `/tokenize` and `/detokenize`, on the model being served.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{parse, prompt, AppState};

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    /// Text to tokenize (control-token texts count, as in a raw prompt).
    content: String,
    /// Prepend BOS where the model wants one.
    #[serde(default)]
    add_special: bool,
    /// Return `{id, piece}` objects instead of ids.
    #[serde(default)]
    with_pieces: bool,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    /// Token ids.
    tokens: Vec<u32>,
}

pub async fn tokenize(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse(&body)?;
    let ids = prompt::tokenize(&state, req.content, req.add_special).await?;
    let tokenizer = &state.engine.session().tokenizer;
    let tokens: Vec<Value> = if req.with_pieces {
        ids.iter().map(|&id| json!({"id": id, "piece": tokenizer.decode_with_control(&[id])})).collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })))
}

pub async fn detokenize(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(&body)?;
    let tokenizer = &state.engine.session().tokenizer;
    let vocab = tokenizer.vocab_size();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid("tokens", format!("token {bad} is outside the vocabulary of {vocab} tokens")));
    }
    Ok(Json(json!({ "content": tokenizer.decode_with_control(&req.tokens) })))
}

/// `POST /apply-template`: the prompt text a chat renders to (messages and
/// tools through the chat template, ending with the assistant's turn), as
/// llama-server answers it.
pub async fn apply_template(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: crate::dto::ChatRequest = parse(&body)?;
    let messages = req.messages()?;
    let tools = req.tools()?;
    let session = Arc::clone(state.engine.session());
    let prompt = tokio::task::spawn_blocking(move || {
        let format = hearth_text::ToolFormat::of(&session.template);
        let shown: &[hearth_text::ToolSpec] = if tools.active() { &tools.specs } else { &[] };
        let (messages, extras) = crate::generation::template_input(&messages, shown, format, &req.chat_template_kwargs);
        session.template.render_with(&messages, &extras, true)
    })
    .await
    .map_err(|_| ApiError::internal("rendering the template failed"))?
    .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    Ok(Json(json!({ "prompt": prompt })))
}

/// `GET /props`: what llama-server reports about the loaded model, read-only.
pub async fn props(State(state): State<Arc<AppState>>) -> Json<Value> {
    let session = state.engine.session();
    let tok = &session.tokenizer;
    let piece = |t: Option<u32>| t.and_then(|t| tok.token_text(t)).unwrap_or("").to_owned();
    let d = hearth_sampling::SamplingParams::openai_defaults();
    Json(json!({
        "default_generation_settings": {
            "n_ctx": state.engine.limits().max_seq_len(),
            "params": {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p, "min_p": d.min_p},
        },
        "model_alias": state.model_name,
        "chat_template": session.template.jinja(),
        "bos_token": piece(tok.bos),
        "eos_token": piece(tok.eos),
        "build_info": concat!("hearth ", env!("CARGO_PKG_VERSION")),
    }))
}
