//! `hearth serve` and `hearth plan`: size the KV pool from a memory budget,
//! say how many users fit, and serve the OpenAI API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use hearth_core::KvType;
use hearth_engine::batching::EngineConfig;
use hearth_engine::embed::{EmbedHandle, EmbeddingModel};
use hearth_engine::registry::{Loader, ModelSpec, Registry};
use hearth_engine::plan::{available_memory, Footprint, MemoryPriority, Plan};
use hearth_engine::LoadedModel;
use hearth_server::{AppState, HttpLimits};

use crate::size::{human_bytes, parse_bytes, parse_duration, parse_tokens};

const BLOCK_SIZE: usize = EngineConfig::BLOCK_SIZE;
const TOKEN_BUDGET: usize = EngineConfig::TOKEN_BUDGET;
/// Most users run at once when `--parallel` is not given.
const MAX_AUTO_PARALLEL: usize = 64;
/// Users each model runs at once when several are served and `--parallel` is not given.
const MULTI_MODEL_PARALLEL: usize = 4;

#[derive(Args)]
pub struct MemoryArgs {
    /// Memory budget for weights, scratch and KV cache, e.g. 24G (default: the memory available now).
    #[arg(long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// KV cache element type: f16, q8_0 (≈2× capacity) or q4_0 (≈3.6×).
    #[arg(long = "kv-type", default_value = "f16")]
    pub kv_type: KvType,
    /// How much of the budget to claim and how to split it.
    ///   high:     90% of the budget for KV; weights locked in RAM (mlock);
    ///             each running user can hold a full context (fewer users).
    ///   balanced: 60%; users admitted for a quarter context each, sharing
    ///             the pool (long ones may preempt others when it fills).
    ///   low:      30%; an eighth context per user; nothing locked.
    #[arg(long = "memory-priority", default_value = "balanced", verbatim_doc_comment)]
    pub priority: MemoryPriority,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Model to serve: an alias, a name or a path, as `NAME=MODEL` to serve
    /// it under NAME. Repeat to serve several under one --memory budget: the
    /// first is the default and loads at start; the others load on first
    /// use, and idle ones are unloaded (least recently used first) when
    /// another needs their room.
    #[arg(long, short = 'm', required_unless_present = "config")]
    pub model: Vec<String>,
    /// A TOML file of models to serve (each with its own context, users,
    /// keep-alive, aliases and template) and the triage router; models
    /// given with --model come first. See `docs/serve-config.md`.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// A triage router answering to the model name `auto`: `SMALL,BIG`
    /// (two served models' names) with the default rules — tool use and
    /// prompts over 1,000 tokens to BIG, then the small model's own verdict.
    /// A config file's [router] sets the rules.
    #[arg(long)]
    pub router: Option<String>,
    /// A LoRA adapter (llama.cpp's GGUF adapter format) as `NAME=FILE` for
    /// the default model, or `MODEL:NAME=FILE`; repeat for more. Requests
    /// choose one as `"model": "MODEL:NAME"` or `"lora": "NAME"`.
    #[arg(long, value_name = "[MODEL:]NAME=FILE")]
    pub lora: Vec<String>,
    /// A folder `POST /v1/adapters` may load adapters from while the server
    /// runs (off unless given).
    #[arg(long = "lora-dir", value_name = "DIR")]
    pub lora_dir: Option<std::path::PathBuf>,
    /// Unload a model after this long without requests (e.g. 5m, 30s, 1h;
    /// default: only when another model needs its room).
    #[arg(long = "keep-alive", value_parser = parse_duration)]
    pub keep_alive: Option<std::time::Duration>,
    /// Seconds a request waits for its model to load, or for busy models
    /// to free the room it needs, before a 503 with Retry-After.
    #[arg(long = "model-wait", default_value_t = 60)]
    pub model_wait: u64,
    /// Address to bind (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    pub host: Vec<std::net::IpAddr>,
    /// Port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Users computed together at most (default: what the KV pool and --memory-priority allow, up to 64).
    #[arg(long, short = 'p')]
    pub parallel: Option<usize>,
    /// KV pool size, e.g. 2G (default: the --memory-priority share of the budget after weights).
    #[arg(long = "kv-memory", value_parser = parse_bytes)]
    pub kv_memory: Option<u64>,
    /// Context per user in tokens: 4096, 32k (default 4096).
    #[arg(long = "ctx-size", short = 'c', alias = "context", value_parser = parse_tokens, default_value = "4096")]
    pub ctx: usize,
    /// Require `Authorization: Bearer KEY` on /v1 endpoints. Visible to
    /// other users in the process list: prefer --api-key-file or HEARTH_API_KEY.
    #[arg(long = "api-key", conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Let browser pages from this origin call the API (repeatable; `*` for any). Off by default.
    #[arg(long = "cors-origin", alias = "cors-origins", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Chat template (Jinja) to use instead of the model file's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<std::path::PathBuf>,
    /// A built-in chat template instead of the model file's: chatml, chatml-tools, gemma.
    #[arg(long = "chat-template", conflicts_with = "chat_template_file")]
    pub chat_template: Option<String>,
    /// Read the API key from this file (its first line).
    #[arg(long = "api-key-file")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Connections open at once (more wait their turn); capped below the
    /// process's open-file limit.
    #[arg(long = "max-connections", default_value_t = HttpLimits::default().max_connections)]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers, or sit
    /// idle between requests, before it is closed.
    #[arg(long = "header-timeout", default_value_t = HttpLimits::default().header_timeout.as_secs())]
    pub header_timeout: u64,
    /// Requests allowed to wait for a slot; more get 429.
    #[arg(long = "max-queue", default_value_t = 256)]
    pub max_queue: usize,
    /// Names the model is served under, comma-separated (default: the alias
    /// or file stem); listed by `/v1/models` under the first in order.
    #[arg(long, short = 'a', alias = "alias", value_delimiter = ',')]
    pub name: Vec<String>,
    /// Free-form tags listed with the model by `/v1/models`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Also serve this embedding model (alias such as `minilm`, or a Hugging
    /// Face encoder folder) on /v1/embeddings and /v1/rerank.
    #[arg(long = "embedding-model")]
    pub embedding_model: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Default temperature of requests that leave it out (else OpenAI's 1.0).
    #[arg(long = "temp", help_heading = "Request defaults (llama-server's flags)")]
    pub temp: Option<f32>,
    /// Default top-k.
    #[arg(long = "top-k", help_heading = "Request defaults (llama-server's flags)")]
    pub top_k: Option<usize>,
    /// Default top-p.
    #[arg(long = "top-p", help_heading = "Request defaults (llama-server's flags)")]
    pub top_p: Option<f32>,
    /// Default min-p.
    #[arg(long = "min-p", help_heading = "Request defaults (llama-server's flags)")]
    pub min_p: Option<f32>,
    /// Default repetition penalty.
    #[arg(long = "repeat-penalty", help_heading = "Request defaults (llama-server's flags)")]
    pub repeat_penalty: Option<f32>,
    /// Default seed (-1: a fresh one per request).
    #[arg(long = "seed", short = 's', allow_negative_numbers = true, help_heading = "Request defaults (llama-server's flags)")]
    pub seed: Option<i64>,
    /// Default reply limit in tokens (-1: the rest of the context).
    #[arg(long = "n-predict", short = 'n', allow_negative_numbers = true, help_heading = "Request defaults (llama-server's flags)")]
    pub n_predict: Option<i64>,
    /// Refuse requests naming a model not served (404, as OpenAI's) instead
    /// of answering them with the served model (the reply's `model` says
    /// which answered).
    #[arg(long = "no-default-model")]
    pub no_default_model: bool,
    /// Do not serve llama-server's `/slots`.
    #[arg(long = "no-slots")]
    pub no_slots: bool,
    /// Do not serve the chat and dashboard page at `/`.
    #[arg(long = "no-ui", alias = "no-webui")]
    pub no_ui: bool,
    /// Tokens computed per step at most (llama-server's `-b`; default 512):
    /// larger steps take prompts in faster, smaller ones keep decoding smooth.
    #[arg(long = "batch-size", short = 'b')]
    pub batch_size: Option<usize>,
    /// llama-server's layers to offload (`-ngl`): accepted with a note, as
    /// this build computes on the CPU.
    #[arg(long = "n-gpu-layers", hide = true)]
    pub n_gpu_layers: Option<String>,
    /// llama-server's micro-batch (`-ub`): accepted with a note (Hearth
    /// sizes its own steps), so its command lines work unchanged.
    #[arg(long = "ubatch-size", hide = true)]
    pub ubatch_size: Option<String>,
    /// llama-server's flash attention switch (`-fa on|off|auto`): accepted
    /// with a note (Hearth's attention is always tiled).
    #[arg(long = "flash-attn", hide = true)]
    pub flash_attn: Option<String>,
    /// llama-server's switches for what Hearth always does (Jinja chat
    /// templates, metrics, slots, continuous batching, embeddings, no
    /// downloads while serving; `--no-jinja`: Hearth renders every
    /// template with Jinja): accepted so its command lines work unchanged.
    #[arg(long = "jinja", hide = true, action = clap::ArgAction::Count, aliases = ["metrics", "slots", "cont-batching", "embeddings", "embedding", "no-jinja", "offline"])]
    pub always_on: u8,
    #[command(flatten)]
    pub mem: MemoryArgs,
}

#[derive(Args)]
pub struct PlanArgs {
    /// Alias or path.
    pub model: String,
    /// Context per user to plan for: 4096, 32k.
    #[arg(long, value_parser = parse_tokens, default_value = "4096")]
    pub context: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub mem: MemoryArgs,
}

/// The plan for `session` under `mem`, with the KV pool fixed when `kv_pool` is given.
fn plan_for(
    session: &LoadedModel,
    mem: &MemoryArgs,
    kv_pool: Option<u64>,
    parallel: usize,
    contexts: &[usize],
) -> Result<Plan> {
    let footprint = Footprint::of(session, mem.kv_type, TOKEN_BUDGET, parallel)?;
    let budget = match (mem.memory, kv_pool) {
        (Some(b), _) => b,
        (None, Some(kv)) => footprint.weights + footprint.scratch + kv,
        (None, None) => available_memory().context("cannot read available memory; pass --memory or --kv-memory")?,
    };
    let plan = Plan::new(budget, footprint, mem.priority.kv_share(), kv_pool, contexts);
    if plan.kv_tokens < BLOCK_SIZE as u64 {
        bail!(
            "no room for a KV cache: budget {} − weights {} − scratch {} leaves {} (need at least {} per token)",
            human_bytes(budget),
            human_bytes(footprint.weights),
            human_bytes(footprint.scratch),
            human_bytes(plan.kv_pool_bytes),
            human_bytes(footprint.kv_per_token)
        );
    }
    Ok(plan)
}

fn contexts_around(context: usize) -> Vec<usize> {
    let mut c: Vec<usize> = [2048, 4096, 8192, 16384, 32768, 131072].into_iter().chain([context]).collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// Prints the plan as a table to stderr (`serve`) or stdout (`plan`).
fn describe(plan: &Plan, mem: &MemoryArgs, context: usize) -> Vec<String> {
    let f = &plan.footprint;
    let mut out = vec![
        format!("memory budget {}  (priority {:?})", human_bytes(plan.budget), mem.priority),
        format!("  weights      {}", human_bytes(f.weights)),
        format!("  scratch      {}  ({TOKEN_BUDGET}-token steps)", human_bytes(f.scratch)),
        format!(
            "  KV pool      {}  = {} tokens at {} per token ({})",
            human_bytes(plan.kv_pool_bytes),
            plan.kv_tokens,
            human_bytes(f.kv_per_token),
            mem.kv_type
        ),
        format!("  total        {}", human_bytes(plan.total())),
        "context   users at full context".to_string(),
    ];
    for &(c, users) in &plan.users_at {
        let mark = if c == context { "  ← requested" } else { "" };
        out.push(format!("{c:>7}   {users:>6}{mark}"));
    }
    out
}

pub fn cmd_plan(a: &PlanArgs, session: &LoadedModel) -> Result<()> {
    let plan = plan_for(session, &a.mem, None, 1, &contexts_around(a.context))?;
    if a.json {
        println!("{}", serde_json::to_string(&plan)?);
    } else {
        for line in describe(&plan, &a.mem, a.context) {
            println!("{line}");
        }
    }
    Ok(())
}

/// A model `hearth serve` was given: the name it is served under, its file
/// and its chat template (when given), and what the configuration file says
/// of it beyond the command line's settings for every model.
#[derive(Default)]
pub struct ModelArg {
    /// The name given (`NAME=`), else the model as given (an alias, a name, a path).
    pub name: String,
    pub path: std::path::PathBuf,
    pub template: Option<String>,
    /// More names it answers to.
    pub aliases: Vec<String>,
    /// Context per user (else `--ctx-size`).
    pub ctx: Option<usize>,
    /// Users at once (else `--parallel`).
    pub parallel: Option<usize>,
    /// Idle time before it unloads (else `--keep-alive`).
    pub keep_alive: Option<std::time::Duration>,
    /// LoRA adapters loaded with it: (name, file).
    pub adapters: Vec<(String, std::path::PathBuf)>,
}

/// `--router SMALL,BIG`: a router named `auto` over the two, default rules.
pub fn router_arg(arg: &str) -> Result<hearth_server::TriageRouter> {
    let Some((small, big)) = arg.split_once(',').map(|(s, b)| (s.trim(), b.trim())).filter(|(s, b)| !s.is_empty() && !b.is_empty())
    else {
        bail!("--router takes two served models' names, SMALL,BIG (got {arg:?})");
    };
    Ok(hearth_server::TriageRouter {
        name: "auto".into(),
        small: small.to_owned(),
        big: big.to_owned(),
        policy: hearth_engine::router::RoutePolicy::default(),
    })
}

/// `NAME=MODEL` apart (a bare model has no name of its own); a path that
/// holds `=` is taken whole when it exists.
#[must_use]
pub fn named_model(arg: &str) -> (Option<String>, String) {
    match arg.split_once('=') {
        Some((name, model)) if !name.is_empty() && !model.is_empty() && !std::path::Path::new(arg).exists() => {
            (Some(name.trim().to_owned()), model.trim().to_owned())
        }
        _ => (None, arg.to_owned()),
    }
}

pub fn cmd_serve(
    a: &ServeArgs,
    models: &[ModelArg],
    router: Option<hearth_server::TriageRouter>,
    backend: Arc<hearth_cpu::CpuBackend>,
    embedder: Option<Arc<EmbeddingModel>>,
    catalog: hearth_catalog::Catalog,
) -> Result<()> {
    // Several names: listed under the first in order (as llama-server does),
    // answering to all.
    let mut names: Vec<String> = a.name.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    names.sort();
    names.dedup();
    if let Some(layers) = &a.n_gpu_layers {
        eprintln!("note: -ngl {layers} ignored: this build computes on the CPU");
    }
    if let Some(v) = &a.ubatch_size {
        eprintln!("note: --ubatch-size {v} ignored: Hearth sizes its own steps (see --batch-size)");
    }
    if let Some(v) = &a.flash_attn {
        eprintln!("note: --flash-attn {v} ignored: Hearth's attention is always tiled");
    }
    let backend = backend as Arc<dyn hearth_core::Backend>;
    let mut specs = Vec::with_capacity(models.len());
    let budget;
    let mut n_vocab = 0;
    if let [only] = models {
        // One model: the plan sizes its KV pool from the budget.
        let session = LoadedModel::load_with_template(&only.path, Arc::clone(&backend), only.template.as_deref())?;
        n_vocab = session.model.config().n_vocab;
        let (ctx, asked_parallel) = (only.ctx.unwrap_or(a.ctx), only.parallel.or(a.parallel));
        let plan =
            plan_for(&session, &a.mem, a.kv_memory, asked_parallel.unwrap_or(MAX_AUTO_PARALLEL), &contexts_around(ctx))?;
        let kv_blocks = (plan.kv_tokens as usize) / BLOCK_SIZE;
        let parallel = asked_parallel.unwrap_or_else(|| {
            (kv_blocks * BLOCK_SIZE / a.mem.priority.tokens_per_user(ctx)).clamp(1, MAX_AUTO_PARALLEL)
        });
        if a.mem.priority.lock_weights() {
            match hearth_cpu::lock_resident_memory() {
                Ok(()) => tracing::info!("weights locked in RAM"),
                Err(e) => eprintln!(
                    "warning: could not lock weights in RAM ({e}); raise `ulimit -l` or use --memory-priority balanced"
                ),
            }
        }
        for line in describe(&plan, &a.mem, ctx) {
            eprintln!("{line}");
        }
        let name = names.first().cloned().unwrap_or_else(|| only.name.clone());
        eprintln!(
            "serving {name:?}: up to {parallel} users at once, {} KV blocks of {BLOCK_SIZE} tokens, context {} per user",
            kv_blocks,
            ctx.min(kv_blocks * BLOCK_SIZE)
        );
        let config = engine_config(a, parallel, kv_blocks, ctx);
        budget = plan.budget.max(plan.total());
        let preloaded = std::sync::Mutex::new(Some(session));
        let (path, template, backend) = (only.path.clone(), only.template.clone(), Arc::clone(&backend));
        let load: Loader = Arc::new(move || {
            // The model loaded above serves its first load; later ones read the file again.
            let session = match preloaded.lock().ok().and_then(|mut s| s.take()) {
                Some(s) => s,
                None => LoadedModel::load_with_template(&path, Arc::clone(&backend), template.as_deref())?,
            };
            Ok((session, config))
        });
        specs.push(spec(name, only, plan.total(), config, a, load)?);
    } else {
        // Several: each gets a KV pool of its users' full contexts, and
        // the budget bounds what is loaded at once.
        hearth_cpu::return_large_blocks_on_free();
        budget = match a.mem.memory {
            Some(b) => b,
            None => available_memory().context("cannot read available memory; pass --memory")?,
        };
        eprintln!("memory budget {} for {} models (loaded on first use)", human_bytes(budget), models.len());
        for (i, m) in models.iter().enumerate() {
            let parallel = m.parallel.or(a.parallel).unwrap_or(MULTI_MODEL_PARALLEL);
            let file = hearth_gguf::GgufFile::open(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
            let model_config = hearth_models::ModelConfig::from_gguf(&file).map_err(hearth_engine::EngineError::from)?;
            if i == 0 {
                n_vocab = model_config.n_vocab;
            }
            let ctx = m.ctx.unwrap_or(a.ctx).min(model_config.n_ctx_train.max(BLOCK_SIZE));
            let kv_blocks = match a.kv_memory {
                Some(bytes) => {
                    let f = Footprint::estimate(&file, a.mem.kv_type, TOKEN_BUDGET, parallel)?;
                    usize::try_from(bytes / f.kv_per_token.max(1)).unwrap_or(usize::MAX) / BLOCK_SIZE
                }
                None => (parallel * ctx).div_ceil(BLOCK_SIZE),
            };
            let config = engine_config(a, parallel, kv_blocks, ctx);
            let footprint = Footprint::estimate(&file, a.mem.kv_type, config.token_budget, parallel)?;
            let estimate = footprint.with_kv((kv_blocks * BLOCK_SIZE) as u64);
            let name = if i == 0 { names.first().cloned() } else { None }.unwrap_or_else(|| m.name.clone());
            eprintln!(
                "  {name:?}: {} ({} users of {ctx} tokens), {}",
                human_bytes(estimate),
                parallel,
                m.path.display()
            );
            let (path, template, backend) = (m.path.clone(), m.template.clone(), Arc::clone(&backend));
            let load: Loader = Arc::new(move || {
                Ok((LoadedModel::load_with_template(&path, Arc::clone(&backend), template.as_deref())?, config))
            });
            let mut entry = spec(name, m, estimate, config, a, load)?;
            entry.load_extra = footprint.load_transient();
            specs.push(entry);
        }
    }
    if let Some(first) = specs.first_mut() {
        first.aliases.extend(names.iter().cloned());
        first.tags.clone_from(&a.tags);
    }
    let defaults = request_defaults(a, n_vocab)?;
    let api_key = api_key(a)?;
    let limits = HttpLimits {
        max_connections: a.max_connections.min(connection_ceiling()),
        header_timeout: std::time::Duration::from_secs(a.header_timeout.max(1)),
        ..HttpLimits::default()
    };
    let metrics = Arc::new(hearth_engine::metrics::MetricsRegistry::new());
    let registry = Registry::new(specs, budget, std::time::Duration::from_secs(a.model_wait.max(1)), metrics);
    let mut state =
        AppState::over(Arc::clone(&registry), api_key.clone()).with_cors(a.cors_origin.clone()).with_catalog(catalog);
    state.defaults = defaults;
    state.default_model = !a.no_default_model;
    state.slots = !a.no_slots;
    state.ui = !a.no_ui;
    state.lora_dir.clone_from(&a.lora_dir);
    if let Some(router) = router {
        eprintln!("router {:?}: {:?} answers easy requests, {:?} the rest", router.name, router.small, router.big);
        state = state.with_router(router).map_err(anyhow::Error::msg)?;
    }
    if let (Some(model), Some(e)) = (&a.embedding_model, embedder) {
        let name = model_name(std::path::Path::new(model));
        eprintln!("embeddings: {name:?} ({} dimensions, inputs up to {} tokens)", e.dims(), e.max_tokens);
        state = state.with_embedder(name, EmbedHandle::spawn(e));
    }
    let addrs: Vec<SocketAddr> = a.host.iter().map(|&h| SocketAddr::new(h, a.port)).collect();
    for addr in addrs.iter().filter(|addr| !addr.ip().is_loopback()) {
        if api_key.is_some() {
            eprintln!("warning: listening on {addr}, reachable from other machines");
        } else {
            eprintln!(
                "warning: listening on {addr} WITHOUT an API key: anyone who can reach this machine can use \
                 the model (set --api-key-file or HEARTH_API_KEY)"
            );
        }
    }
    let rt = http_runtime()?;
    rt.block_on(async {
        let mut listeners = Vec::with_capacity(addrs.len());
        for addr in &addrs {
            listeners.push(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?);
        }
        // The default model loads now: a bad file fails the start, not the first request.
        drop(registry.acquire(0).await?);
        let reaper = Arc::clone(&registry);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                reaper.expire_idle().await;
            }
        });
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        hearth_server::serve_on(listeners, state, limits, shutdown).await.context("serving")
    })?;
    Ok(())
}

/// The API key: `--api-key`, else the first line of `--api-key-file`, else
/// the `HEARTH_API_KEY` environment variable.
fn api_key(a: &ServeArgs) -> Result<Option<String>> {
    let key = if let Some(path) = &a.api_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Some(text.lines().next().unwrap_or("").trim().to_owned())
    } else {
        a.api_key.clone().or_else(|| std::env::var("HEARTH_API_KEY").ok())
    };
    match key {
        Some(k) if k.is_empty() => bail!("the API key is empty"),
        k => Ok(k),
    }
}

/// Most connections the process can hold open: its open-file limit (raised
/// to the hard limit where allowed) less room for model files, the engine
/// and logs.
fn connection_ceiling() -> usize {
    const RESERVED: u64 = 64;
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    usize::try_from(limit.saturating_sub(RESERVED).max(16)).unwrap_or(usize::MAX)
}

/// The async runtime for HTTP: one worker is plenty for the I/O, and leaves
/// the cores to the compute pool.
fn http_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
}

/// The name a model is served under when none is given: the alias or name
/// as given, or a path's file stem.
pub fn model_name(path: &std::path::Path) -> String {
    path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// The engine's configuration for `parallel` users of `ctx` tokens over
/// `kv_blocks` blocks, with the command line's step and queue sizes.
fn engine_config(a: &ServeArgs, parallel: usize, kv_blocks: usize, ctx: usize) -> EngineConfig {
    EngineConfig {
        parallel,
        token_budget: a.batch_size.unwrap_or(TOKEN_BUDGET).max(1),
        max_waiting: a.max_queue,
        kv_type: a.mem.kv_type,
        block_size: BLOCK_SIZE,
        kv_blocks,
        n_ctx: ctx,
    }
}

/// The registry's entry for model `m`, served as `name`.
fn spec(name: String, m: &ModelArg, estimate: u64, config: EngineConfig, a: &ServeArgs, load: Loader) -> Result<ModelSpec> {
    let file = hearth_gguf::GgufFile::open(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
    let arch = file.get_str("general.architecture").unwrap_or("unknown").to_owned();
    Ok(ModelSpec {
        name,
        aliases: m.aliases.clone(),
        tags: Vec::new(),
        path: m.path.clone(),
        arch,
        n_ctx: config.n_ctx,
        estimate,
        keep_alive: m.keep_alive.or(a.keep_alive),
        planned: Some(config),
        load_extra: 0,
        load,
        adapters: Arc::new(std::sync::Mutex::new(m.adapters.clone())),
    })
}

/// `--lora [MODEL:]NAME=FILE` apart: (model, or `None` for the default; name; file).
pub fn lora_arg(arg: &str) -> Result<(Option<String>, String, std::path::PathBuf)> {
    let Some((who, file)) = arg.split_once('=').filter(|(w, f)| !w.is_empty() && !f.is_empty()) else {
        bail!("--lora takes NAME=FILE or MODEL:NAME=FILE (got {arg:?})");
    };
    let (model, name) = match who.rsplit_once(':') {
        Some((m, n)) if !m.is_empty() && !n.is_empty() => (Some(m.to_owned()), n.to_owned()),
        _ => (None, who.to_owned()),
    };
    Ok((model, name, std::path::PathBuf::from(file)))
}

/// Checks every model's adapters against its file before anything loads
/// (an adapter for another base is a clear error now, not at first use).
pub fn check_adapters(models: &[ModelArg], backend: &dyn hearth_core::Backend) -> Result<()> {
    for m in models.iter().filter(|m| !m.adapters.is_empty()) {
        let base = hearth_gguf::GgufFile::open(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
        for (name, file) in &m.adapters {
            let adapter = hearth_engine::LoraAdapter::load(name, file, &base, backend)
                .with_context(|| format!("adapter {name:?} of model {:?}", m.name))?;
            eprintln!("  adapter {}:{name} ({} matrices, {})", m.name, adapter.matrices(), human_bytes(adapter.bytes()));
        }
    }
    Ok(())
}

/// `hearth run`: one user of `context` tokens. The context's KV must fit the
/// priority's share of the budget (else the context is reduced, with a
/// warning); `high` locks the weights in RAM.
pub fn fit_single_user(session: &LoadedModel, mem: &MemoryArgs, context: usize) -> Result<EngineConfig> {
    let plan = plan_for(session, mem, None, 1, &[])?;
    let mut context = context;
    if (plan.kv_tokens as usize) < context {
        eprintln!(
            "warning: context {} needs {} of KV cache; {:?} memory priority allows {} → context {}",
            context,
            human_bytes(context as u64 * plan.footprint.kv_per_token),
            mem.priority,
            human_bytes(plan.kv_pool_bytes),
            plan.kv_tokens
        );
        context = plan.kv_tokens as usize;
    }
    if mem.priority.lock_weights() {
        if let Err(e) = hearth_cpu::lock_resident_memory() {
            eprintln!(
                "warning: could not lock weights in RAM ({e}); raise `ulimit -l` or use --memory-priority balanced"
            );
        }
    }
    Ok(EngineConfig::single(context).with_kv_type(mem.kv_type))
}

#[derive(Args)]
pub struct LoadtestArgs {
    /// Server base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Concurrency levels to run, one after another.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub clients: Vec<usize>,
    /// Requests per client at each level.
    #[arg(long, default_value_t = 1)]
    pub requests_per_client: usize,
    /// Tokens per reply (sent with ignore_eos so every reply has this length).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Filler words per prompt.
    #[arg(long, default_value_t = 40)]
    pub prompt_words: usize,
    /// Words of a system prompt shared by every request (0 = none): measures the prefix cache.
    #[arg(long, default_value_t = 0)]
    pub system_words: usize,
    /// First request number (prompts differ by number; change it to avoid earlier runs' cache).
    #[arg(long, default_value_t = 0)]
    pub index_offset: usize,
    /// Seconds before a request is abandoned.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// One JSON line per level instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_loadtest(a: &LoadtestArgs) -> Result<()> {
    use hearth_loadtest::{self as loadtest, LoadConfig};
    let rt = http_runtime()?;
    if !a.json {
        println!(
            "{:>7} {:>6} {:>9} {:>12} {:>10} {:>10} {:>10} {:>10}",
            "clients", "ok", "tokens", "agg tok/s", "ttft p50", "ttft p90", "itl p50", "itl p90"
        );
    }
    for &clients in &a.clients {
        let cfg = LoadConfig {
            url: a.url.clone(),
            clients,
            requests_per_client: a.requests_per_client,
            max_tokens: a.max_tokens,
            prompt_words: a.prompt_words,
            system: (a.system_words > 0).then(|| loadtest::system_prompt(a.system_words)),
            index_offset: a.index_offset,
            timeout: std::time::Duration::from_secs(a.timeout),
        };
        let r = rt.block_on(loadtest::run(&cfg)).map_err(anyhow::Error::msg)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:>7} {:>6} {:>9} {:>12.1} {:>9.3}s {:>9.3}s {:>8.1}ms {:>8.1}ms",
                clients,
                format!("{}/{}", r.ok, r.requests),
                r.tokens,
                r.aggregate_tokens_per_s,
                r.ttft.p50,
                r.ttft.p90,
                r.itl.p50 * 1e3,
                r.itl.p90 * 1e3
            );
        }
    }
    Ok(())
}

/// llama-server's multi-letter single-dash flags (`-np 4`, `-ngl 99`,
/// `-cb`) in their long forms, which clap parses (its short flags are one
/// letter), so llama-server command lines work with `hearth serve`.
#[must_use]
pub fn llama_server_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).is_none_or(|a| a != "serve") {
        return args;
    }
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-np") => "--parallel".into(),
            Some("-ngl") => "--n-gpu-layers".into(),
            Some("-cb") => "--cont-batching".into(),
            Some("-ub") => "--ubatch-size".into(),
            Some("-fa") => "--flash-attn".into(),
            _ => a,
        })
        .collect()
}

/// The request defaults `serve` was given, checked by the rule every
/// request meets (a bad one names its flag before serving starts).
fn request_defaults(a: &ServeArgs, n_vocab: usize) -> Result<hearth_server::SamplingDefaults> {
    let d = hearth_server::SamplingDefaults {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed.and_then(|s| u64::try_from(s).ok()),
        max_tokens: a.n_predict.and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0),
    };
    if let Err(e) = d.params().validate(n_vocab) {
        anyhow::bail!("invalid --{}: {}", e.field.replace('_', "-").replace("temperature", "temp"), e.message);
    }
    Ok(d)
}

#[derive(Args)]
pub struct PsArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Context per user for the capacity column: 4096, 32k.
    #[arg(long, value_parser = parse_tokens, default_value = "4096")]
    pub context: usize,
    /// API key, if the server wants one (else `HEARTH_API_KEY`).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
}

/// `hearth ps`: `/v1/models` and `/v1/capacity` of a running server, as a table.
pub fn cmd_ps(a: &PsArgs) -> Result<()> {
    let key = a.api_key.clone().or_else(|| std::env::var("HEARTH_API_KEY").ok());
    let get = |path: &str| -> Result<serde_json::Value> {
        let mut req = ureq::get(&format!("{}{path}", a.url.trim_end_matches('/')));
        if let Some(k) = &key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let body = match req.call() {
            Ok(r) => r.into_string()?,
            Err(ureq::Error::Status(401, _)) => bail!("{} refused the API key (pass --api-key or set HEARTH_API_KEY)", a.url),
            Err(e) => bail!("cannot reach a Hearth server at {}: {e}", a.url),
        };
        serde_json::from_str(&body).with_context(|| format!("{}{path} did not answer JSON", a.url))
    };
    let models = get("/v1/models")?;
    let capacity = get(&format!("/v1/capacity?context={}", a.context))?;
    let more = |name: &str| -> String {
        let entry = capacity["data"].as_array().into_iter().flatten().find(|c| c["model"] == name);
        match entry {
            Some(c) if c["loaded"] == true => c["capacity"]["more_users"].to_string(),
            Some(c) if c["loads_now"] == true => "loads now".into(),
            Some(c) if c["loads_if_idle_models_unload"] == true => "after unloading idle".into(),
            Some(_) => "waits for busy models".into(),
            None => "-".into(),
        }
    };
    println!("{:<20} {:<10} {:>10} {:>8} {:>10} {:>10}  MORE USERS OF {}", "NAME", "STATE", "MEMORY", "REQUESTS", "KV TOKENS", "EXPIRES", a.context);
    for m in models["data"].as_array().into_iter().flatten().filter(|m| m.get("status").is_some()) {
        let s = &m["status"];
        let name = m["id"].as_str().unwrap_or("?");
        let expires = s["expires_in_seconds"].as_u64().map_or_else(|| "-".into(), |t| format!("{t} s"));
        let kv = s["kv_tokens"].as_u64().map_or_else(|| "-".into(), |t| t.to_string());
        println!(
            "{:<20} {:<10} {:>10} {:>8} {:>10} {:>10}  {}",
            name,
            s["value"].as_str().unwrap_or("?"),
            human_bytes(s["memory_bytes"].as_u64().unwrap_or(0)),
            s["requests"].as_u64().unwrap_or(0),
            kv,
            expires,
            more(name)
        );
    }
    let mem = &models["memory"];
    println!(
        "memory: {} of {} budget in use",
        human_bytes(mem["used_bytes"].as_u64().unwrap_or(0)),
        human_bytes(mem["budget_bytes"].as_u64().unwrap_or(0))
    );
    Ok(())
}
