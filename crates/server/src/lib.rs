//! Hearth's HTTP API. OpenAI's: `POST /v1/chat/completions` and
//! `/v1/completions` (streamed with server-sent events or whole),
//! `/v1/responses` (the Responses API), `/v1/embeddings`, `GET /v1/models`;
//! Anthropic's `/v1/messages`; Ollama's `/api/*`; llama-server's own
//! endpoints and the un-prefixed aliases, so Hearth drops in where
//! llama-server runs; `GET /health` and `/metrics` (Prometheus). Other
//! protocols are translations through the OpenAI handlers ([`relay`]).
//!
//! Handlers validate, render the chat template, tokenize (on a bounded
//! blocking pool, never on the HTTP workers) and hand requests to the engine
//! thread ([`EngineHandle`]); every failure is an OpenAI-shaped error with a
//! precise status. A client that goes away (a dropped stream or request)
//! aborts its sequences at once, freeing their KV blocks. Connections are
//! bounded in number and in time ([`HttpLimits`]), so a silent or slow
//! client costs one socket for a bounded time and never the others' service.

mod adapters;
mod anthropic;
mod capacity;
mod dto;
mod embeddings;
mod error;
mod format;
mod generation;
mod http;
mod llama_server;
mod ollama;
mod prompt;
mod relay;
mod responses;
mod route;
mod ui;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hearth_engine::embed::EmbedHandle;
use hearth_engine::handle::EngineHandle;
use hearth_engine::registry::{Lease, ModelSpec, Registry};
use serde_json::json;
use tokio::sync::Semaphore;

pub use dto::{check_body, ChatRequest, CompletionRequest, SamplingDefaults};
pub use embeddings::Embedder;
pub use error::ApiError;
pub use http::{serve, serve_on, HttpLimits};
pub use route::TriageRouter;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The chat models served (the first is the default), loaded on first
    /// use under one memory budget.
    pub models: Arc<Registry>,
    /// Required bearer token, if any.
    pub api_key: Option<String>,
    /// Browser origins allowed to call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// The embedding model served beside the chat model, if any.
    pub embedder: Option<Embedder>,
    /// Responses kept for the Responses API's `previous_response_id`.
    responses: Arc<responses::ResponseStore>,
    /// The local model cache, for Ollama's pull, copy, delete and list.
    pub catalog: Option<hearth_catalog::Catalog>,
    /// What left-out sampling fields become.
    pub defaults: SamplingDefaults,
    /// Answer generation requests that name no model or one not served
    /// with the first model, the default (implied with one model served:
    /// many clients send "gpt-3.5-turbo" and cannot be told otherwise); the
    /// reply's `model` says which answered. Off with `--no-default-model`:
    /// an unknown name is then a 404, as OpenAI's.
    pub default_model: bool,
    /// Serve llama-server's `/slots` (on unless `--no-slots`).
    pub slots: bool,
    /// Serve the page at `/` (on unless `--no-ui`).
    pub ui: bool,
    /// The triage router, answering to its own model name.
    pub router: Option<Arc<TriageRouter>>,
    /// The folder `POST /v1/adapters` loads LoRA files from (`None`: off).
    pub lora_dir: Option<std::path::PathBuf>,
    /// Prompt preparations (template + tokenizer) running at once: they use
    /// the blocking pool, and unbounded they would take the cores from the
    /// engine under a flood of large prompts.
    prep_slots: Arc<Semaphore>,
}

/// The server's state with the model one request is answered by, held for
/// the request's life: the model stays loaded under it (its lease).
pub(crate) struct Served {
    app: Arc<AppState>,
    /// The model's engine.
    pub engine: EngineHandle,
    /// The name replies give: the one asked for when it is served, else
    /// the default model's.
    pub model_name: String,
    /// Where the triage router sent the request, when it did.
    route: Option<route::RouteNote>,
    /// The LoRA adapter the request runs with, and its scale.
    pub adapter: Option<adapters::Chosen>,
    lease: Lease,
}

impl Served {
    /// The hold on the model that keeps it loaded.
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl std::ops::Deref for Served {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl AppState {
    /// State for serving `engine` (already running) as `model_name`,
    /// behind `api_key` if given.
    #[must_use]
    pub fn new(engine: EngineHandle, model_name: String, api_key: Option<String>) -> Self {
        Self::over(Registry::running(ModelSpec::running(model_name, &engine), engine), api_key)
    }

    /// State for serving the models of `models`, behind `api_key` if given.
    #[must_use]
    pub fn over(models: Arc<Registry>, api_key: Option<String>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            models,
            api_key,
            cors_origins: Vec::new(),
            embedder: None,
            responses: Arc::default(),
            catalog: None,
            defaults: SamplingDefaults::default(),
            default_model: true,
            slots: true,
            ui: true,
            router: None,
            lora_dir: None,
            prep_slots: Arc::new(Semaphore::new(cores.max(2))),
        }
    }

    /// The same, with an embedding model for `/v1/embeddings` and `/v1/rerank`.
    #[must_use]
    pub fn with_embedder(self, name: String, handle: EmbedHandle) -> Self {
        Self { embedder: Some(Embedder { name, handle }), ..self }
    }

    /// The same, with the model cache behind Ollama's pull, copy, delete and list.
    #[must_use]
    pub fn with_catalog(self, catalog: hearth_catalog::Catalog) -> Self {
        Self { catalog: Some(catalog), ..self }
    }

    /// The same, with a triage router answering to `router.name`: its two
    /// models must be served, and its name must not be one of theirs.
    ///
    /// # Errors
    /// A model of the router's that is not served, or a name taken.
    pub fn with_router(self, router: TriageRouter) -> Result<Self, String> {
        for (role, name) in [("small", &router.small), ("big", &router.big)] {
            if !self.serves(name) {
                return Err(format!("the router's {role} model {name:?} is not served (served: {})", self.served_names()));
            }
        }
        if self.serves(&router.name) {
            return Err(format!("the router's name {:?} is already a served model's", router.name));
        }
        Ok(Self { router: Some(Arc::new(router)), ..self })
    }

    /// The default model's name (the first served).
    #[must_use]
    pub fn model_name(&self) -> &str {
        &self.models.specs()[0].name
    }

    /// Which served chat model `name` names (`x` and `x:latest` are one;
    /// aliases too), if any.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<usize> {
        self.models.specs().iter().position(|s| {
            hearth_catalog::same_model(name, &s.name) || s.aliases.iter().any(|a| hearth_catalog::same_model(name, a))
        })
    }

    /// Whether `name` names a chat model served.
    #[must_use]
    pub fn serves(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Whether a generation request naming `name` is answered: the model
    /// is served, the triage router has that name, or the default model
    /// answers for it.
    #[must_use]
    pub fn answers(&self, name: &str) -> bool {
        self.default_model || self.serves(name) || self.routes(name) || self.adapter_of_name(name).is_some()
    }

    /// The name a reply gives for a request that asked for `asked`: that
    /// name when it is served, else the default model's.
    #[must_use]
    pub fn answering_name<'a>(&'a self, asked: &'a str) -> &'a str {
        if !asked.is_empty() && (self.serves(asked) || self.adapter_of_name(asked).is_some()) {
            asked
        } else {
            self.model_name()
        }
    }

    /// Every served model's names, for an error that lists them.
    pub(crate) fn served_names(&self) -> String {
        self.models.specs().iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The model a request naming `asked` (or none: `""`) is answered by,
    /// loaded (waiting for a load or for room) and held for the request:
    /// 404 for a name not served without a default model, 503 with
    /// `Retry-After` when the models in use leave no room for it.
    pub(crate) async fn served(self: &Arc<Self>, asked: &str) -> Result<Served, ApiError> {
        let (index, model_name, adapter) = match (self.find(asked), self.adapter_of_name(asked)) {
            (Some(i), _) => (i, asked.to_owned(), None),
            (None, Some((i, adapter))) => (i, asked.to_owned(), Some(adapter)),
            (None, None) if asked.is_empty() || self.default_model => (0, self.model_name().to_owned(), None),
            (None, None) => return Err(ApiError::unknown_model(asked, &self.served_names())),
        };
        let lease = self.models.acquire(index).await?;
        let adapter = match adapter {
            Some(name) => {
                let base = &self.models.specs()[index].name;
                Some((adapters::adapter_named(lease.engine.session(), base, name, "model")?, 1.0))
            }
            None => None,
        };
        Ok(Served { app: Arc::clone(self), engine: lease.engine.clone(), model_name, route: None, adapter, lease })
    }

    /// The same, answering browsers from `origins` (`*` for any) with CORS
    /// headers and preflight responses.
    #[must_use]
    pub fn with_cors(self, origins: Vec<String>) -> Self {
        Self { cors_origins: origins, ..self }
    }
}

/// The router with every endpoint; request bodies are read under `limits`.
pub fn router(state: AppState, limits: &HttpLimits) -> Router {
    let api = Router::new()
        .route("/chat/completions", post(generation::chat))
        .route("/chat/completions/input_tokens", post(generation::input_tokens))
        .route("/models", get(models))
        .route("/capacity", get(capacity::capacity))
        .route("/embeddings", post(embeddings::embeddings))
        .route("/messages", post(anthropic::messages))
        .route("/messages/count_tokens", post(anthropic::count_tokens))
        .route("/rerank", post(embeddings::rerank))
        .route("/responses", post(responses::create))
        .route("/responses/{id}", get(responses::retrieve).delete(responses::delete))
        .route("/adapters", get(adapters::list).post(adapters::load));
    // llama-server's own endpoints, where Hearth drops in for it.
    let llama_server =
        Router::new()
            .route("/tokenize", post(llama_server::tokenize))
            .route("/detokenize", post(llama_server::detokenize))
            .route("/apply-template", post(llama_server::apply_template))
            .route("/props", get(llama_server::props))
            .route("/slots", get(llama_server::slots))
            .route("/predict", post(llama_server::predict))
            // Un-prefixed, llama-server's native completion; `/v1/completions` is OpenAI's.
            .route("/completion", post(llama_server::completion))
            .route("/completions", post(llama_server::completion));
    // Ollama's read-only and embedding endpoints.
    let ollama = Router::new()
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(ollama::pull))
        .route("/api/delete", axum::routing::delete(ollama::delete))
        .route("/api/copy", post(ollama::copy));
    // The page's live figures, behind the key like the API.
    let ui_data = if state.ui {
        Router::new().route("/ui/stats", get(ui::stats)).route("/ui/stats/stream", get(ui::stats_stream))
    } else {
        Router::new()
    };
    // The same API without the `/v1` prefix, as llama-server serves it.
    let keyed = Router::new()
        .nest("/v1", api.clone().route("/completions", post(generation::completions)))
        .merge(api)
        .merge(llama_server)
        .merge(ollama)
        .merge(ui_data)
        // Outermost first: the key is checked before a body is read.
        .layer(middleware::from_fn_with_state(limits.clone(), http::read_body))
        .layer(middleware::from_fn_with_state(state.clone(), require_key));
    let cors = cors_layer(&state.cors_origins);
    // The page itself needs no key (it asks for one).
    let page = if state.ui {
        Router::new().route("/", get(ui::index)).route("/ui/app.js", get(ui::script)).route("/ui/app.css", get(ui::style))
    } else {
        Router::new()
    };
    let app = Router::new()
        .merge(keyed)
        .merge(page)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(Arc::new(state));
    // Outside the key check: a browser's preflight carries no key.
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// CORS for `origins` (`*`: any origin), or none when the list is empty.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else if origins.iter().any(|o| o == "localhost") {
        // `localhost`: pages served from this machine, on any port.
        let listed: Vec<String> = origins.iter().filter(|o| *o != "localhost").cloned().collect();
        AllowOrigin::predicate(move |origin, _| {
            let origin = origin.to_str().unwrap_or("");
            listed.iter().any(|o| o == origin) || is_loopback_origin(origin)
        })
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| axum::http::HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any)
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Whether `origin` (`scheme://host[:port]`) is a page on this machine.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else { return false };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok()) => h,
            _ => return false,
        }
    } else {
        match rest.split_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() => h,
            Some(_) => return false,
            None => rest,
        }
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        // OpenAI's and Ollama's clients send a bearer token, Anthropic's `x-api-key`.
        let headers = req.headers();
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares a given key with the real one in time that does not depend on
/// where they first differ (no timing hints about the key).
fn same_secret(given: &[u8], key: &[u8]) -> bool {
    let diff = given.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0 && given.len() == key.len()
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    // The gauges themselves: a snapshot would render the whole exposition per model.
    let each = (0..state.models.specs().len()).map(|i| state.models.figures(i));
    let (running, waiting) = each.fold((0, 0), |(r, w), f| (r + f.running.get(), w + f.queue_depth.get()));
    Json(json!({"status": "ok", "model": state.model_name(), "running": running, "waiting": waiting}))
}

/// `GET /v1/models`: every chat model served, loaded or not (with what it
/// holds, its KV pool and when it unloads), the triage router, then the
/// embedding model.
async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let registry = &state.models;
    let mut data: Vec<serde_json::Value> = registry
        .specs()
        .iter()
        .zip(registry.states())
        .enumerate()
        .map(|(i, (spec, now))| {
            let n_ctx = registry.loaded(i).map_or(spec.n_ctx, |e| e.limits().max_seq_len());
            let mut entry = json!({
                "id": spec.name,
                "object": "model",
                "created": 0,
                "owned_by": "hearth",
                "meta": {"architecture": spec.arch, "n_ctx": n_ctx},
                "status": {
                    "value": now.state,
                    "memory_bytes": now.bytes,
                    "requests": now.requests,
                    "kv_tokens": now.kv_tokens,
                    "expires_in_seconds": now.expires_in.map(|d| d.as_secs()),
                },
            });
            if !spec.aliases.is_empty() {
                entry["aliases"] = json!(spec.aliases);
            }
            if !spec.tags.is_empty() {
                entry["tags"] = json!(spec.tags);
            }
            entry
        })
        .collect();
    // Each adapter is a model a client can pick: `BASE:ADAPTER`.
    for spec in registry.specs() {
        for (name, _) in spec.adapter_list() {
            data.push(json!({
                "id": format!("{}:{name}", spec.name),
                "object": "model",
                "created": 0,
                "owned_by": "hearth",
                "meta": {"adapter_of": spec.name, "adapter": name},
            }));
        }
    }
    if let Some(r) = &state.router {
        data.push(json!({
            "id": r.name,
            "object": "model",
            "created": 0,
            "owned_by": "hearth",
            "meta": {"router": {"small": r.small, "big": r.big}},
        }));
    }
    if let Some(e) = &state.embedder {
        let m = e.handle.model();
        data.push(json!({
            "id": e.name,
            "object": "model",
            "created": 0,
            "owned_by": "hearth",
            "meta": {"architecture": "bert", "dimensions": m.dims(), "max_input_tokens": m.max_tokens, "cross_encoder": m.is_cross_encoder()},
        }));
    }
    Json(json!({
        "object": "list",
        "data": data,
        "memory": {"budget_bytes": registry.budget(), "used_bytes": registry.used()},
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.models.metrics().render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, code: Some("not_found"), ..ApiError::bad_json("no such endpoint") }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: Some("method_not_allowed"),
        ..ApiError::bad_json("this endpoint does not take that HTTP method")
    }
}

/// Parses a JSON body into `T`, as a 400 naming the problem when it is not.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_json(format!("invalid request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn loopback_origins_are_pages_on_this_machine() {
        use super::is_loopback_origin as ok;
        for o in ["http://localhost", "http://localhost:8080", "https://127.0.0.1:3000", "http://[::1]", "http://[::1]:3000", "http://127.0.0.2"] {
            assert!(ok(o), "{o}");
        }
        for o in ["http://localhost.evil.com", "http://evil.com", "http://notlocalhost", "http://web.mydomain.fr", "localhost", "http://localhost:x", "ftp://localhost", "http://[::1]x"] {
            assert!(!ok(o), "{o}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"sesame", b"sesame"));
        assert!(!same_secret(b"sesam", b"sesame"));
        assert!(!same_secret(b"sesame!", b"sesame"));
        assert!(!same_secret(b"", b"sesame"));
        assert!(!same_secret(b"Sesame", b"sesame"));
    }
}
