//! The node's own page (`GET /`): chat with the served model and a live
//! dashboard. Its three files are compiled into the binary (nothing from a
//! CDN: it works offline) and served with a strict content policy (scripts
//! and styles from this origin only). The dashboard's figures come from
//! `/ui/stats` (JSON) and `/ui/stats/stream` (one event a second per open
//! page, no polling), read from the same counters as `/metrics`; those two
//! sit behind the API key like the rest of the API, the page itself does not
//! (it asks for the key).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use serde_json::{json, Value};

use crate::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// Scripts, styles and connections from this origin only; never framed.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// What the dashboard shows: the default model's counters now and its
/// capacity answer, then every model with its state.
fn stats_of(state: &AppState) -> Value {
    let registry = &state.models;
    let now = registry.figures(0).snapshot();
    let capacity = registry.loaded(0).map(|e| crate::capacity::of(&e, crate::capacity::DEFAULT_CONTEXT));
    let mut models: Vec<Value> = registry
        .specs()
        .iter()
        .zip(registry.states())
        .enumerate()
        .map(|(i, (spec, now))| {
            let engine = registry.loaded(i);
            json!({
                "name": spec.name,
                "architecture": spec.arch,
                "state": now.state,
                "weights_bytes": now.bytes,
                "context": engine.as_ref().map_or(spec.n_ctx, |e| e.limits().max_seq_len()),
                "parallel": engine.as_ref().map_or(spec.planned.map_or(0, |c| c.parallel), hearth_engine::handle::EngineHandle::parallel),
            })
        })
        .collect();
    if let Some(e) = &state.embedder {
        let m = e.handle.model();
        models.push(json!({"name": e.name, "architecture": "bert (embeddings)", "state": "loaded", "weights_bytes": 0, "context": m.max_tokens, "parallel": "-"}));
    }
    json!({
        "now": now,
        "capacity": capacity.map(|c| json!({"context": c.context, "free_tokens": c.free_kv_tokens, "more_users": c.more_users})),
        "models": models,
    })
}

pub async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(stats_of(&state))
}

/// The same, once a second, for as long as the page stays open.
pub async fn stats_stream(State(state): State<Arc<AppState>>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let ticks = stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = SseEvent::default().data(stats_of(&state).to_string());
        Some((Ok(event), (state, false)))
    });
    Sse::new(ticks).keep_alive(KeepAlive::default())
}
