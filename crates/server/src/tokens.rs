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
