//! Hearth's HTTP API, OpenAI-compatible: `POST /v1/chat/completions`,
//! `POST /v1/completions` (both streamed with server-sent events or whole),
//! `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus).
//!
//! Handlers validate, render the chat template, tokenize and hand requests to
//! the engine thread ([`EngineHandle`]); every failure is an OpenAI-shaped
//! error with a precise status. A client that goes away (a dropped stream or
//! request) aborts its sequences at once, freeing their KV blocks.

mod dto;
mod error;
mod format;
mod generation;
pub mod loadtest;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hearth_engine::handle::EngineHandle;
use serde_json::json;

pub use dto::{ChatRequest, CompletionRequest};
pub use error::ApiError;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine thread.
    pub engine: EngineHandle,
    /// Name the model is served under.
    pub model_name: String,
    /// Required bearer token, if any.
    pub api_key: Option<String>,
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(generation::chat))
        .route("/completions", post(generation::completions))
        .route("/models", get(models))
        .layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(state))
}

/// Serves `state` on `addr` until Ctrl-C.
pub async fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let m = state.engine.metrics();
    Json(json!({"status": "ok", "model": state.model_name, "running": m.running.get(), "waiting": m.queue_depth.get()}))
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let session = state.engine.session();
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "hearth",
            "meta": {"architecture": session.model.config().arch, "n_ctx": state.engine.max_seq_len()},
        }],
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.engine.metrics().render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, code: Some("not_found"), ..ApiError::bad_json("no such endpoint") }
}

/// Parses a JSON body into `T`, as a 400 naming the problem when it is not.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_json(format!("invalid request body: {e}")))
}
