//! `hearth`: run, inspect and fetch local models.

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`hearth list | head`); `main` treats a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod chat;
mod config;
mod serve;
mod show;
mod size;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth_engine::batching::{EngineConfig, GenRequest};
use std::sync::Arc;

use hearth_catalog::Catalog;
use hearth_cpu::{CpuBackend, CpuOptions, KernelChoice, TernaryLayout};
use hearth_engine::embed::{EmbeddingModel, Pooling, EMBED_TOKEN_BUDGET};
use hearth_engine::{perplexity, Constraint, LoadedModel};
use hearth_sampling::SamplingParams;
use hearth_text::Message;

#[derive(Parser)]
#[command(name = "hearth", version, about = "A local LLM inference node: your models, your machine.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a reply (or chat interactively when no prompt is given on a terminal).
    Run(Box<RunArgs>),
    /// Perplexity of a text file, llama.cpp's method.
    Perplexity(PerplexityArgs),
    /// Prefill and decode throughput, like llama-bench, with the decode roofline.
    Bench(BenchArgs),
    /// Fetch a model (alias, URL or local path) into the cache.
    Pull {
        /// Alias (see `hearth list`; `name:tag` works), http(s) URL, or path to a .gguf.
        what: String,
        /// Expected sha256 of the file (aliases carry their own).
        #[arg(long)]
        sha256: Option<String>,
        /// Name it `name:tag` (e.g. `--as llama4-8b:1.58bit`) for run, serve and the API.
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Give a local model another name (`name:tag`), like `ollama cp`.
    Cp {
        /// Model name (or alias).
        source: String,
        /// New name.
        destination: String,
    },
    /// Forget a model's name; its file goes with its last name, like `ollama rm`.
    Rm {
        /// Model name (or alias).
        model: String,
    },
    /// Serve the OpenAI-compatible API with continuous batching.
    Serve(Box<serve::ServeArgs>),
    /// Embed texts with an embedding model; prints one JSON array per input.
    Embed(EmbedArgs),
    /// How many concurrent users fit: weights, KV bytes per token, scratch, for a few context sizes.
    Plan(serve::PlanArgs),
    /// Load-test a running server (Hearth or llama-server, loopback only): aggregate tok/s, TTFT, ITL.
    Loadtest(serve::LoadtestArgs),
    /// List known aliases and cached models.
    List,
    /// What a running server has loaded: each model's state, memory,
    /// requests, KV pool, keep-alive, and how many more users fit.
    Ps(serve::PsArgs),
    /// Show a model's architecture, tensor types, size, context and template.
    Show {
        /// Alias or path.
        model: String,
    },
}

#[derive(Args)]
struct CommonModelArgs {
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Context size in tokens; accepts 4096, 32k, 1m (default: the model's).
    #[arg(long = "context", alias = "ctx-size", value_parser = size::parse_tokens)]
    context: Option<usize>,
}

#[derive(Args)]
struct RunArgs {
    /// Alias (`smollm2`, `gemma3-270m`) or path to a .gguf file.
    model: String,
    /// The prompt; omit on a terminal for an interactive chat.
    prompt: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = SamplingParams::default().temperature)]
    temp: f32,
    /// RNG seed for reproducible sampling.
    #[arg(long, default_value_t = SamplingParams::default().seed)]
    seed: u64,
    /// Maximum new tokens.
    #[arg(short = 'n', long = "max-tokens", default_value_t = SamplingParams::default().max_tokens)]
    n: usize,
    /// Top-k truncation (0 = off).
    #[arg(long, default_value_t = SamplingParams::default().top_k)]
    top_k: usize,
    /// Top-p (nucleus) truncation (1 = off).
    #[arg(long, default_value_t = SamplingParams::default().top_p)]
    top_p: f32,
    /// Min-p truncation (0 = off).
    #[arg(long, default_value_t = SamplingParams::default().min_p)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = SamplingParams::default().repeat_penalty)]
    repeat_penalty: f32,
    /// Presence penalty.
    #[arg(long, default_value_t = SamplingParams::default().presence_penalty)]
    presence_penalty: f32,
    /// Frequency penalty.
    #[arg(long, default_value_t = SamplingParams::default().frequency_penalty)]
    frequency_penalty: f32,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Continue the prompt as-is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// System prompt for chat mode.
    #[arg(long)]
    system: Option<String>,
    /// Chat template (Jinja) to use instead of the model file's.
    #[arg(long = "chat-template-file")]
    chat_template_file: Option<PathBuf>,
    /// A built-in chat template instead of the model file's: chatml, chatml-tools, gemma.
    #[arg(long = "chat-template", conflicts_with = "chat_template_file")]
    chat_template: Option<String>,
    /// A LoRA adapter (llama.cpp's GGUF adapter format) for the model.
    #[arg(long, value_name = "FILE")]
    lora: Option<PathBuf>,
    /// How strongly the adapter applies (1 = as trained).
    #[arg(long = "lora-scale", default_value_t = 1.0, requires = "lora")]
    lora_scale: f32,
    /// Print timing figures to stderr.
    #[arg(long)]
    verbose: bool,
    /// Reply with JSON valid under this JSON schema (a file).
    #[arg(long, value_name = "FILE", group = "constraint")]
    json_schema: Option<PathBuf>,
    /// Reply with any JSON object.
    #[arg(long, group = "constraint")]
    json: bool,
    /// Reply with text matching this grammar (a file in llguidance's Lark syntax).
    #[arg(long, value_name = "FILE", group = "constraint")]
    grammar: Option<PathBuf>,
    /// Reply with text matching this regular expression, whole.
    #[arg(long, value_name = "REGEX", group = "constraint")]
    regex: Option<String>,
    #[command(flatten)]
    common: CommonModelArgs,
    #[command(flatten)]
    mem: serve::MemoryArgs,
}

#[derive(Args)]
struct PerplexityArgs {
    /// Alias or path.
    model: String,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Chunk size in tokens (the context each chunk is scored in).
    #[arg(short = 'c', long = "ctx-size", visible_alias = "ctx", value_parser = size::parse_tokens, default_value = "512")]
    ctx: usize,
    /// KV cache element type, as for `run` and `serve`.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: hearth_core::KvType,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct BenchArgs {
    /// Alias or path.
    model: String,
    /// Prompt tokens for the prefill test (0 = skip).
    #[arg(short = 'p', default_value_t = 512)]
    p: usize,
    /// Decode steps for the generation test (0 = skip).
    #[arg(short = 'n', default_value_t = 128)]
    n: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Repetitions (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 3)]
    reps: usize,
    /// KV cache element type, as for `run` and `serve`.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: hearth_core::KvType,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args = serve::llama_server_flags(std::env::args_os().collect());
    if let Err(e) = run(Cli::parse_from(args)) {
        let closed_pipe = e
            .chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe));
        if closed_pipe {
            return;
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => cmd_run(&a),
        Command::Perplexity(a) => cmd_perplexity(&a),
        Command::Bench(a) => cmd_bench(&a),
        Command::Pull { what, sha256, as_name } => {
            let as_name = as_name.as_deref().map(hearth_catalog::ModelName::parse).transpose()?;
            let p = catalog().pull_as(&what, sha256.as_deref(), as_name.as_ref(), &mut |_| {})?;
            match as_name {
                Some(n) => eprintln!("ok: {n} → {}", p.display()),
                None => eprintln!("ok: {}", p.display()),
            }
            Ok(())
        }
        Command::Cp { source, destination } => Ok(catalog().copy(&source, &destination)?),
        Command::Rm { model } => Ok(catalog().delete(&model)?),
        Command::Serve(mut a) => {
            let config = a.config.as_deref().map(config::ServeConfig::read).transpose()?.unwrap_or_default();
            // The command line wins over the file.
            a.mem.memory = a.mem.memory.or(config.memory);
            a.keep_alive = a.keep_alive.or(config.keep_alive);
            let backend = backend(a.threads)?;
            let cli_template = template_source(a.chat_template_file.as_deref(), a.chat_template.as_deref())?;
            let mut models = Vec::with_capacity(a.model.len() + config.models.len());
            for (i, m) in a.model.iter().enumerate() {
                let (name, reference) = serve::named_model(m);
                // A chat template given on the command line is the first (default) model's.
                let template = if i == 0 { cli_template.clone() } else { None };
                let name = name.unwrap_or_else(|| serve::model_name(std::path::Path::new(&reference)));
                models.push(serve::ModelArg { name, path: gguf_path(&reference)?, template, ..Default::default() });
            }
            for m in config.models {
                let template = template_source(m.chat_template_file.as_deref(), m.chat_template.as_deref())?;
                // The command line's template is the first model's, when the file gives that one none.
                let template = if models.is_empty() { template.or_else(|| cli_template.clone()) } else { template };
                models.push(serve::ModelArg {
                    name: m.name.unwrap_or_else(|| serve::model_name(std::path::Path::new(&m.model))),
                    path: gguf_path(&m.model)?,
                    template,
                    aliases: m.aliases,
                    ctx: m.context,
                    parallel: m.parallel,
                    keep_alive: m.keep_alive,
                    adapters: m.lora,
                });
            }
            if models.is_empty() {
                bail!("no model to serve: give --model, or [[model]] tables in the --config file");
            }
            for arg in &a.lora {
                let (model, name, file) = serve::lora_arg(arg)?;
                let m = match &model {
                    None => &mut models[0],
                    Some(want) => models
                        .iter_mut()
                        .find(|m| hearth_catalog::same_model(&m.name, want))
                        .ok_or_else(|| anyhow!("--lora {arg}: no model {want:?} is served"))?,
                };
                m.adapters.push((name, file));
            }
            for (i, m) in models.iter().enumerate() {
                if models[..i].iter().any(|o| hearth_catalog::same_model(&o.name, &m.name)) {
                    bail!("two models are served as {:?}: give one of them another name (NAME=MODEL, or `name`)", m.name);
                }
            }
            let router = match (&a.router, config.router) {
                (Some(_), Some(_)) => bail!("give --router or a [router] table in the config file, not both"),
                (Some(arg), None) => Some(serve::router_arg(arg)?),
                (None, router) => router,
            };
            serve::check_adapters(&models, backend.as_ref())?;
            let embedder = a.embedding_model.as_deref().map(|m| load_embedder(m, &backend)).transpose()?;
            serve::cmd_serve(&a, &models, router, backend, embedder, catalog())
        }
        Command::Embed(a) => cmd_embed(&a),
        Command::Plan(a) => {
            let session = load(&a.model, &backend(None)?)?;
            serve::cmd_plan(&a, &session)
        }
        Command::Loadtest(a) => serve::cmd_loadtest(&a),
        Command::List => cmd_list(),
        Command::Ps(a) => serve::cmd_ps(&a),
        Command::Show { model } => show::show(&gguf_path(&model)?),
    }
}

/// The CPU backend for `--threads`. Diagnostic environment variables, read
/// here and nowhere below the CLI: `HEARTH_FORCE_SCALAR` runs the scalar
/// reference kernels, `HEARTH_NO_VNNI` the AVX2 kernels without VNNI,
/// `HEARTH_TERNARY_LUT` lays ternary weights out as lookup tables.
fn backend(threads: Option<usize>) -> Result<Arc<CpuBackend>> {
    let set = |name: &str| std::env::var_os(name).is_some();
    let kernels = if set("HEARTH_FORCE_SCALAR") {
        KernelChoice::Scalar
    } else if set("HEARTH_NO_VNNI") {
        KernelChoice::NoVnni
    } else {
        KernelChoice::Best
    };
    let ternary = if set("HEARTH_TERNARY_LUT") { TernaryLayout::LookupTables } else { TernaryLayout::MaskedVnni };
    Ok(Arc::new(CpuBackend::new(CpuOptions { threads, kernels, ternary })?))
}

/// The model catalog, configured from the environment: the cache is
/// `$HEARTH_MODELS`, else `$XDG_CACHE_HOME/hearth/models`, else
/// `~/.cache/hearth/models`; pulls use `$HEARTH_PYTHON` (default `python3`).
/// The CLI is the one place that reads the environment.
fn catalog() -> Catalog {
    let var = std::env::var_os;
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".into());
    Catalog::new(hearth_catalog::default_cache_dir(var("HEARTH_MODELS"), var("XDG_CACHE_HOME"), var("HOME")), python)
}

#[derive(Args)]
struct EmbedArgs {
    /// Embedding model: alias (`minilm`), a Hugging Face encoder folder, or a
    /// GGUF decoder model (its final hidden states, pooled).
    model: String,
    /// Texts to embed (one vector each).
    texts: Vec<String>,
    /// Read texts from this file, one per line (`-` for stdin).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Cut inputs longer than the model's limit instead of failing.
    #[arg(long)]
    truncate: bool,
    /// Pooling for a decoder (GGUF) model: last, mean or cls (default: the file's, else last).
    #[arg(long, value_parser = ["last", "mean", "cls"])]
    pooling: Option<String>,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

/// Loads an embedding model (pulling a known alias on first use is `hearth pull`'s job).
fn load_embedder(model: &str, backend: &Arc<CpuBackend>) -> Result<Arc<EmbeddingModel>> {
    let path = catalog().resolve(model)?;
    let backend = Arc::clone(backend) as Arc<dyn hearth_core::Backend>;
    Ok(Arc::new(EmbeddingModel::load(&path, backend).with_context(|| format!("loading {model}"))?))
}

fn cmd_embed(a: &EmbedArgs) -> Result<()> {
    let mut texts = a.texts.clone();
    if let Some(f) = &a.file {
        let body = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
    }
    if texts.is_empty() {
        bail!("nothing to embed (give texts as arguments or --file)");
    }
    let backend = backend(a.threads)?;
    let mut out = std::io::stdout().lock();
    let path = catalog().resolve(&a.model)?;
    let encoder_gguf = path.is_file()
        && hearth_gguf::GgufFile::open(&path).is_ok_and(|f| {
            f.get_str("general.architecture").is_ok_and(|a| hearth_models::bert::ENCODER_ARCHITECTURES.contains(&a))
        });
    if path.is_file() && !encoder_gguf {
        // A decoder model (GGUF): its final hidden states, pooled.
        let session = load(&a.model, &backend)?;
        let pooling = match a.pooling.as_deref() {
            Some("mean") => Pooling::Mean,
            Some("cls") => Pooling::Cls,
            Some(_) => Pooling::Last,
            None => session.pooling(),
        };
        let limit = session.trained_context();
        for (i, t) in texts.iter().enumerate() {
            let mut ids = session.raw_prompt(t)?;
            if ids.len() > limit {
                if !a.truncate {
                    bail!("input {i} is {} tokens, more than this model's {limit} (pass --truncate to cut it)", ids.len());
                }
                ids.truncate(limit);
            }
            writeln!(out, "{}", serde_json::to_string(&session.embed(&ids, pooling)?)?)?;
        }
        return Ok(());
    }
    let model = load_embedder(&a.model, &backend)?;
    let mut seqs = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let ids = model.tokenize(t)?;
        if ids.len() > model.max_tokens && !a.truncate {
            bail!("input {i} is {} tokens, more than this model's {} (pass --truncate to cut it)", ids.len(), model.max_tokens);
        }
        seqs.push(model.truncate(ids));
    }
    // Packed passes of at most the worker's budget.
    let mut start = 0;
    while start < seqs.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < seqs.len() && (end == start || tokens + seqs[end].len() <= EMBED_TOKEN_BUDGET) {
            tokens += seqs[end].len();
            end += 1;
        }
        for v in model.embed_tokens(&seqs[start..end])? {
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        }
        start = end;
    }
    Ok(())
}

fn load(model: &str, backend: &Arc<CpuBackend>) -> Result<LoadedModel> {
    load_with_template(model, backend, None, None)
}

/// Loads `model`, with the chat template read from `file`, or the built-in
/// one called `name`, when given.
fn load_with_template(
    model: &str,
    backend: &Arc<CpuBackend>,
    file: Option<&std::path::Path>,
    name: Option<&str>,
) -> Result<LoadedModel> {
    let template = template_source(file, name)?;
    let path = gguf_path(model)?;
    let backend = Arc::clone(backend) as Arc<dyn hearth_core::Backend>;
    Ok(LoadedModel::load_with_template(&path, backend, template.as_deref())?)
}

/// The chat template's source from `--chat-template-file` or a built-in
/// `--chat-template` name, if either is given.
fn template_source(file: Option<&std::path::Path>, name: Option<&str>) -> Result<Option<String>> {
    let mut template = file
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading the chat template {}", p.display())))
        .transpose()?;
    if let Some(name) = name {
        let Some(src) = hearth_text::builtin_template(name) else {
            let names: Vec<&str> = hearth_text::BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect();
            bail!("unknown --chat-template {name:?} (built-in: {})", names.join(", "));
        };
        template = Some(src.to_owned());
    }
    Ok(template)
}

/// The GGUF file `model` names; an encoder folder is refused with where it belongs.
fn gguf_path(model: &str) -> Result<PathBuf> {
    let path = catalog().resolve(model)?;
    if path.is_dir() {
        bail!(
            "{model} is an embedding model (a Hugging Face encoder folder): use `hearth embed {model} TEXT` \
             or `hearth serve --model GGUF --embedding-model {model}`"
        );
    }
    Ok(path)
}

/// The sampling flags as parameters, checked by the rule every entry point
/// shares; a bad value names its flag.
fn sampling_params(a: &RunArgs, n_vocab: usize) -> Result<SamplingParams> {
    let params = SamplingParams {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        seed: a.seed,
        max_tokens: a.n,
        stop: a.stop.clone(),
        ..SamplingParams::default()
    };
    if let Err(e) = params.validate(n_vocab) {
        let flag = match e.field {
            "temperature" => "--temp".to_owned(),
            field => format!("--{}", field.replace('_', "-")),
        };
        bail!("invalid {flag}: {e}");
    }
    Ok(params)
}

/// The constraint the flags ask for, read and parsed before the model loads
/// (a missing file or broken JSON fails at once), with the flag's name.
fn constraint(a: &RunArgs) -> Result<Option<(Constraint, String)>> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    Ok(if let Some(p) = &a.json_schema {
        let schema: serde_json::Value = serde_json::from_str(&read(p)?)
            .with_context(|| format!("invalid --json-schema {}: not JSON", p.display()))?;
        Some((Constraint::JsonSchema(schema), format!("--json-schema {}", p.display())))
    } else if let Some(p) = &a.grammar {
        let grammar = Constraint::grammar_text(&read(p)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        Some((grammar, format!("--grammar {}", p.display())))
    } else if let Some(rx) = &a.regex {
        Some((Constraint::Regex(rx.clone()), "--regex".to_owned()))
    } else {
        a.json.then(|| (Constraint::JsonObject, "--json".to_owned()))
    })
}

fn cmd_run(a: &RunArgs) -> Result<()> {
    // Ranges first, before the model loads; the vocabulary bound after.
    sampling_params(a, usize::MAX)?;
    let constraint = constraint(a)?;
    if constraint.is_some() && !a.stop.is_empty() {
        bail!("--stop cannot be combined with a constraint (the grammar decides where the reply ends)");
    }
    let session = load_with_template(
        &a.model,
        &backend(a.common.threads)?,
        a.chat_template_file.as_deref(),
        a.chat_template.as_deref(),
    )?;
    let config = serve::fit_single_user(&session, &a.mem, a.common.context.unwrap_or(4096))?;
    let params = sampling_params(a, session.model.config().n_vocab)?;
    if !a.lora_scale.is_finite() {
        bail!("invalid --lora-scale {}: give a finite number", a.lora_scale);
    }
    let adapter = match &a.lora {
        Some(path) => Some((session.load_adapter("lora", path)?, a.lora_scale)),
        None => None,
    };
    let guide = match &constraint {
        Some((c, flag)) => Some(session.guide(c).map_err(|e| anyhow!("invalid {flag}: {e}"))?),
        None => None,
    };
    let Some(prompt) = a.prompt.clone() else {
        if guide.is_some() {
            bail!("a constraint (--json-schema, --json, --grammar, --regex) needs a prompt");
        }
        if std::io::stdin().is_terminal() {
            return chat::interactive(&session, &params, &config, a.system.as_deref(), adapter.as_ref());
        }
        bail!("no prompt given (pass one as an argument, or run on a terminal for a chat)");
    };
    let tokens = if a.raw {
        session.raw_prompt(&prompt)?
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &prompt));
        session.chat_prompt(&msgs)?
    };
    let mut stdout = std::io::stdout().lock();
    let request = GenRequest { guide, adapter, ..GenRequest::new(tokens, params) };
    let out = session.generate_request(request, &config, |piece| {
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
    })?;
    writeln!(stdout)?;
    if a.verbose {
        eprintln!(
            "prompt: {} tokens in {:.2}s ({:.1} tok/s); generated: {} tokens in {:.2}s ({:.1} tok/s); finish: {:?}",
            out.prompt_tokens,
            out.prefill_secs,
            out.prompt_tokens as f64 / out.prefill_secs.max(1e-9),
            out.tokens.len(),
            out.decode_secs,
            out.tokens.len() as f64 / out.decode_secs.max(1e-9),
            out.finish
        );
    }
    Ok(())
}

fn cmd_perplexity(a: &PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let session = load(&a.model, &backend(a.threads)?)?;
    let json = a.json;
    let config = EngineConfig::single(a.ctx).with_kv_type(a.kv_type);
    let report = perplexity::perplexity(&session, &text, &config, |i, ppl| {
        if !json {
            eprintln!("[{}] {ppl:.4}", i + 1);
        }
    })?;
    if json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!("chunks = {}, tokens scored = {}", report.chunks, report.tokens);
        outln!("PPL = {:.4}", report.ppl);
    }
    Ok(())
}

fn cmd_bench(a: &BenchArgs) -> Result<()> {
    use hearth_engine::bench;
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let backend = backend(a.threads)?;
    let session = load(&a.model, &backend)?;
    let config = EngineConfig::single((a.p.max(a.n) + 1).max(16)).with_kv_type(a.kv_type);
    let threads = backend.threads();
    let mut results = Vec::new();
    if a.p > 0 {
        results.push(bench::prefill(&session, &config, a.p, a.reps, threads)?);
    }
    if a.n > 0 {
        results.push(bench::decode(&session, &config, a.n, a.reps, threads)?);
    }
    if a.json {
        outln!("{}", serde_json::to_string(&results)?);
        return Ok(());
    }
    outln!("{:<8} {:>8} {:>12} {:>10} {:>12}", "test", "threads", "tok/s", "stddev", "median");
    for r in &results {
        outln!("{:<8} {:>8} {:>12.2} {:>10.2} {:>12.2}", r.test, r.threads, r.tokens_per_s, r.stddev, r.median);
    }
    if let Some(pp) = results.iter().find(|r| r.test.starts_with("pp")) {
        let macs = bench::matmul_macs_per_token(&session);
        let achieved = macs as f64 * pp.median;
        if let Some((peak, instruction)) = hearth_cpu::peak::int8_macs_per_second(threads) {
            outln!(
                "prefill roofline: {:.0} M multiply-adds per token × {:.1} tok/s = {:.1} G/s of {:.1} G/s measured int8 peak ({:.0}%; {instruction}, {threads} threads)",
                macs as f64 / 1e6,
                pp.median,
                achieved / 1e9,
                peak / 1e9,
                100.0 * achieved / peak
            );
        }
    }
    if let Some(tg) = results.iter().find(|r| r.test.starts_with("tg")) {
        let weights = bench::weight_bytes_per_token(&session);
        let kv = bench::kv_bytes_per_token(&session, &config, a.n / 2)?;
        let achieved = (weights + kv) as f64 * tg.median / 1e9;
        let measured = bench::memory_bandwidth_gbs(threads);
        outln!(
            "decode roofline: {:.1} MB weights + {:.2} MB KV per token × {:.1} tok/s = {achieved:.1} GB/s of {measured:.1} GB/s measured read bandwidth ({:.0}%)",
            weights as f64 / 1e6,
            kv as f64 / 1e6,
            tg.median,
            100.0 * achieved / measured
        );
    }
    Ok(())
}

fn cmd_list() -> Result<()> {
    outln!("{:<16} {:<10} DESCRIPTION", "ALIAS", "STATUS");
    let catalog = catalog();
    for e in hearth_catalog::CATALOG {
        let status = if catalog.is_cached(e.alias) { "cached" } else { "-" };
        outln!("{:<16} {:<10} {}", e.alias, status, e.description);
    }
    let named: Vec<_> = catalog.local_models()?.into_iter().filter(|m| hearth_catalog::entry(&m.name).is_none()).collect();
    if !named.is_empty() {
        outln!("\n{:<32} {:>9}  FILE", "NAME", "SIZE");
        for m in named {
            outln!("{:<32} {:>6.1} MB  {}", m.name, m.bytes as f64 / 1e6, m.path.display());
        }
    }
    let cached = catalog.cached_models();
    if !cached.is_empty() {
        outln!("\ncache: {}", catalog.cache_dir().display());
        for (name, size) in cached {
            outln!("  {name:<40} {:>8.1} MB", size as f64 / 1e6);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{serve, Cli, Command};

    #[test]
    fn llama_server_command_lines_parse_as_serve() {
        let line = "hearth serve -m model.gguf -c 8k -np 3 -ngl 99 -a tiny --jinja --metrics -cb --port 9000";
        let args = serve::llama_server_flags(line.split(' ').map(Into::into).collect());
        let Command::Serve(a) = Cli::try_parse_from(args).expect("parses").command else { panic!("not serve") };
        assert_eq!((a.ctx, a.parallel, a.name.as_slice(), a.port), (8192, Some(3), &["tiny".to_owned()][..], 9000));
        assert_eq!(a.n_gpu_layers.as_deref(), Some("99"));
        // Other commands' arguments are left alone.
        let run: Vec<std::ffi::OsString> = ["hearth", "run", "-np"].iter().map(Into::into).collect();
        assert_eq!(serve::llama_server_flags(run.clone()), run);
    }
}
