//! What the server tests share: the real SmolLM2 model, a server on a
//! loopback port, and small HTTP helpers.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hearth_core::KvType;
use hearth_engine::batching::EngineConfig;
use hearth_engine::embed::{EmbedHandle, EmbeddingModel};
use hearth_engine::handle::EngineHandle;
use hearth_engine::LoadedModel;
use hearth_server::{AppState, HttpLimits};
use serde_json::{json, Value};

/// One server test at a time: they measure latency and share two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn session() -> Arc<LoadedModel> {
    static S: OnceLock<Arc<LoadedModel>> = OnceLock::new();
    Arc::clone(S.get_or_init(|| {
        let path = hearth_testutil::real_model("smollm2");
        Arc::new(LoadedModel::load(&path, hearth_testutil::cpu_backend()).expect("load smollm2"))
    }))
}

pub fn config(parallel: usize, kv_tokens: usize, max_waiting: usize, n_ctx: usize) -> EngineConfig {
    EngineConfig {
        parallel,
        token_budget: 512,
        max_waiting,
        kv_type: KvType::F16,
        block_size: 16,
        kv_blocks: kv_tokens.div_ceil(16),
        n_ctx,
    }
}

pub struct Server {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
}

pub async fn start(cfg: EngineConfig, api_key: Option<&str>) -> Server {
    start_with(cfg, api_key, HttpLimits::default()).await
}

pub async fn start_with(cfg: EngineConfig, api_key: Option<&str>, limits: HttpLimits) -> Server {
    start_full(cfg, api_key, limits, Vec::new()).await
}

pub async fn start_full(cfg: EngineConfig, api_key: Option<&str>, limits: HttpLimits, cors: Vec<String>) -> Server {
    let engine = EngineHandle::spawn(session(), cfg).expect("engine");
    let state = AppState::new(engine, "smollm2".into(), api_key.map(str::to_owned)).with_cors(cors);
    serve_state(state, limits).await
}

/// The embedding model, loaded once for all tests of a binary.
pub fn minilm() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    Arc::clone(MODEL.get_or_init(|| {
        let dir = hearth_testutil::real_model("minilm");
        Arc::new(EmbeddingModel::load(&dir, hearth_testutil::cpu_backend()).expect("minilm"))
    }))
}

/// `session` (e.g. SmolLM2 with another chat template) served as `smollm2`.
pub async fn start_session(session: Arc<LoadedModel>, cfg: EngineConfig) -> Server {
    let engine = EngineHandle::spawn(session, cfg).expect("engine");
    serve_state(AppState::new(engine, "smollm2".into(), None), HttpLimits::default()).await
}

/// SmolLM2 for chat and MiniLM (as `minilm`) for embeddings and rerank,
/// over a model cache of its own (SmolLM2 linked in as pulled), for
/// Ollama's pull, copy, delete and list.
pub async fn start_with_embedder(cfg: EngineConfig) -> Server {
    let engine = EngineHandle::spawn(session(), cfg).expect("engine");
    let cache = std::env::temp_dir().join(format!("hearth-server-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).expect("cache");
    std::os::unix::fs::symlink(hearth_testutil::real_model("smollm2"), cache.join("smollm2.gguf")).expect("link");
    let state = AppState::new(engine, "smollm2".into(), None)
        .with_embedder("minilm".into(), EmbedHandle::spawn(minilm()))
        .with_catalog(hearth_catalog::Catalog::new(cache, "python3".into()));
    serve_state(state, HttpLimits::default()).await
}

pub async fn serve_state(state: AppState, limits: HttpLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(hearth_server::serve(listener, state, limits, std::future::pending()));
    Server { url: format!("http://{addr}"), addr, http: reqwest::Client::new() }
}

impl Server {
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.url)).json(body).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text =
            self.http.get(format!("{}/metrics", self.url)).send().await.expect("metrics").text().await.expect("text");
        // Summed over its series (one per model, each labelled).
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(!values.is_empty(), "metric {name} missing");
        values.iter().sum()
    }

    /// Waits (up to `limit`) until metric `name` reaches `at_least`; whether it did.
    pub async fn wait_for_metric(&self, name: &str, at_least: f64, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.metric(name).await >= at_least {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Waits until no sequence runs or waits and no KV block is held.
    pub async fn assert_drained(&self) {
        let t0 = Instant::now();
        loop {
            let busy = self.metric("hearth_kv_blocks_used").await
                + self.metric("hearth_running_sequences").await
                + self.metric("hearth_queue_depth").await;
            if busy == 0.0 {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "server did not drain: {busy}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn chat_body(q: &str, max_tokens: usize, stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": max_tokens, "stream": stream})
}

/// Streams `body` and returns (text, finish reason, whether an error chunk came).
pub async fn stream_chat(server: &Server, body: &Value) -> (String, Option<String>, bool) {
    let text = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .json(body)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let (mut out, mut finish, mut error) = (String::new(), None, false);
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(line).expect("chunk JSON");
        error |= v.get("error").is_some();
        let c = &v["choices"][0];
        out.push_str(c["delta"]["content"].as_str().unwrap_or(""));
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    (out, finish, error)
}

/// Whether the official Python client `module` is importable from
/// `target/pydeps` (CI installs it; elsewhere its test is skipped, saying how).
pub fn has_python_client(module: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .env("PYTHONPATH", pydeps())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var("CI").is_err(), "CI must install the {module} client (see .ci/run)");
        eprintln!("skipped: `{module}` not importable (python3 -m pip install --target target/pydeps {module})");
    }
    ok
}

fn pydeps() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pydeps")
}

/// Runs `tests/SCRIPT` with `args` against a server; it must exit 0 and print `expect`.
pub async fn run_python_client(script: &str, args: &[&str], expect: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let out = tokio::process::Command::new("python3")
        .arg(path)
        .args(args)
        .env("PYTHONPATH", pydeps())
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(expect), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprint!("{stdout}");
}
