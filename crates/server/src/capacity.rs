//! "How many more users fit right now?" — `GET /v1/capacity?context=4096`,
//! and the dashboard's capacity line, from one rule: a new user needs a
//! free slot in the running batch and `context` tokens of free KV blocks
//! (cached prefixes count as free: they are evicted on demand), after the
//! requests already waiting have had theirs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use hearth_engine::handle::EngineHandle;

use crate::AppState;

/// The context the answer is given for when none is asked.
pub const DEFAULT_CONTEXT: usize = 4096;

/// One model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// Tokens of context per user asked about (at most the model's).
    pub context: usize,
    /// More users of that context that fit now.
    pub more_users: usize,
    /// KV tokens free (cached prefixes included).
    pub free_kv_tokens: usize,
    /// Sequences computed together at most.
    pub parallel: usize,
    /// Sequences running.
    pub running: usize,
    /// Requests waiting.
    pub waiting: usize,
}

/// A loaded model's capacity for users of `context` tokens.
#[must_use]
pub fn of(engine: &EngineHandle, context: usize) -> Capacity {
    let m = engine.metrics();
    let limits = engine.limits();
    let count = |g: i64| usize::try_from(g).unwrap_or(0);
    let (free_blocks, total_blocks) = (count(m.kv_blocks_free.get()), count(m.kv_blocks_total.get()));
    let block_tokens = limits.pool_tokens.checked_div(total_blocks).unwrap_or(0);
    let free_kv_tokens = free_blocks * block_tokens;
    let context = context.min(limits.max_seq_len()).max(1);
    let (running, waiting, parallel) = (count(m.running.get()), count(m.queue_depth.get()), engine.parallel());
    let by_slots = parallel.saturating_sub(running);
    let by_memory = free_kv_tokens / context;
    Capacity { context, more_users: by_slots.min(by_memory).saturating_sub(waiting), free_kv_tokens, parallel, running, waiting }
}

/// `GET /v1/capacity?context=N`: per loaded model, the users of that
/// context that fit now; per model not loaded, whether it would load now
/// (or once idle models were unloaded) and the users it would take.
pub async fn capacity(State(state): State<Arc<AppState>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let context = match q.get("context") {
        None => DEFAULT_CONTEXT,
        Some(c) => hearth_core::parse_token_count(c).ok_or_else(|| ApiError::invalid("context", format!("context {c:?} is not a token count (4096, 32k)")))?,
    };
    let registry = &state.models;
    let room = registry.budget().saturating_sub(registry.used());
    let idle = registry.idle_bytes();
    let data: Vec<Value> = registry
        .specs()
        .iter()
        .zip(registry.states())
        .enumerate()
        .map(|(i, (spec, now))| {
            if let Some(engine) = registry.loaded(i) {
                json!({"model": spec.name, "loaded": true, "capacity": of(&engine, context)})
            } else {
                let users = spec.planned.map(|c| {
                    let ctx = context.min(c.n_ctx).max(1);
                    c.parallel.min(c.kv_blocks * c.block_size / ctx)
                });
                json!({
                    "model": spec.name,
                    "loaded": false,
                    "state": now.state,
                    "memory_bytes": now.bytes,
                    "loads_now": now.bytes <= room,
                    "loads_if_idle_models_unload": now.bytes <= room + idle,
                    "users_once_loaded": users,
                })
            }
        })
        .collect();
    Ok(Json(json!({
        "object": "capacity",
        "context": context,
        "memory": {"budget_bytes": registry.budget(), "used_bytes": registry.used(), "idle_bytes": idle},
        "data": data,
    })))
}
