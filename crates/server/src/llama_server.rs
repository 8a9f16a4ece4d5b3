//! llama-server's own endpoints, so Hearth drops in where it runs:
//! `/tokenize`, `/detokenize`, `/apply-template`, read-only `/props` and
//! `/slots`, and the native `/completion` (its fields, defaults, `n_probs`,
//! `timings` and stream shape). `/completion` is a translation: it runs as
//! an OpenAI text completion through the same handler (one request path)
//! and its reply is put back into llama-server's shape.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::relay::{self, Target};
use crate::{parse, prompt, AppState, Served};

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    /// Whose vocabulary (default: the default model's).
    #[serde(default)]
    model: Option<String>,
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
    /// Whose vocabulary (default: the default model's).
    #[serde(default)]
    model: Option<String>,
    /// Token ids.
    tokens: Vec<u32>,
}

pub async fn tokenize(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse(&body)?;
    let state = app.served(req.model.as_deref().unwrap_or("")).await?;
    let ids = prompt::tokenize(&state, req.content, req.add_special).await?;
    let tokenizer = &state.engine.session().tokenizer;
    let tokens: Vec<Value> = if req.with_pieces {
        ids.iter().map(|&id| json!({"id": id, "piece": tokenizer.decode_with_control(&[id])})).collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })))
}

pub async fn detokenize(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(&body)?;
    let state = app.served(req.model.as_deref().unwrap_or("")).await?;
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
pub async fn apply_template(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: crate::dto::ChatRequest = parse(&body)?;
    let state = app.served(req.sampling.model_asked()).await?;
    let messages = req.messages()?;
    let tools = req.tools()?;
    let ending = req.ending()?;
    let session = Arc::clone(state.engine.session());
    let prompt = tokio::task::spawn_blocking(move || {
        let format = hearth_text::ToolFormat::of(&session.template);
        let shown: &[hearth_text::ToolSpec] = if tools.active() { &tools.specs } else { &[] };
        let (messages, extras) = crate::generation::template_input(&messages, shown, format, &req.chat_template_kwargs, ending);
        session.template.render_prompt(&messages, &extras).map(|chat| chat.text)
    })
    .await
    .map_err(|_| ApiError::internal("rendering the template failed"))?
    .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    Ok(Json(json!({ "prompt": prompt })))
}

/// `GET /props`: what llama-server reports about the loaded model, read-only.
pub async fn props(State(app): State<Arc<AppState>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let state = app.served(q.get("model").map_or("", String::as_str)).await?;
    let session = state.engine.session();
    let tok = &session.tokenizer;
    let piece = |t: Option<u32>| t.and_then(|t| tok.token_text(t)).unwrap_or("").to_owned();
    let d = state.defaults.params();
    Ok(Json(json!({
        "default_generation_settings": {
            "n_ctx": state.engine.limits().max_seq_len(),
            "params": {
                "temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p, "min_p": d.min_p,
                "repeat_penalty": d.repeat_penalty, "seed": state.defaults.seed.map_or(-1, |s| s as i64),
                "n_predict": state.defaults.max_tokens.map_or(-1, |n| n as i64),
            },
        },
        "total_slots": state.engine.parallel(),
        "model_path": session.path.display().to_string(),
        "model_alias": state.model_name,
        "chat_template": session.template.jinja(),
        "bos_token": piece(tok.bos),
        "eos_token": piece(tok.eos),
        "build_info": concat!("hearth ", env!("CARGO_PKG_VERSION")),
    })))
}

/// `GET /slots`: one entry per sequence the engine computes together; the
/// first `running` are busy (Hearth schedules sequences, not fixed slots).
pub async fn slots(State(app): State<Arc<AppState>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    if !app.slots {
        return Err(ApiError {
            status: axum::http::StatusCode::NOT_IMPLEMENTED,
            code: Some("not_supported"),
            ..ApiError::bad_json("this server does not serve /slots (started with --no-slots)")
        });
    }
    let state = app.served(q.get("model").map_or("", String::as_str)).await?;
    let running = usize::try_from(state.engine.metrics().running.get().max(0)).unwrap_or(0);
    let n_ctx = state.engine.limits().max_seq_len();
    let slots: Vec<Value> = (0..state.engine.parallel())
        .map(|id| json!({"id": id, "n_ctx": n_ctx, "is_processing": id < running, "speculative": false}))
        .collect();
    Ok(Json(Value::Array(slots)))
}

/// llama-server's sampling defaults for `/completion` (its clients rely on
/// them; the OpenAI endpoints keep OpenAI's), under the server's own.
fn native_defaults(d: &crate::SamplingDefaults) -> [(&'static str, Value); 4] {
    [
        ("temperature", json!(d.temperature.unwrap_or(0.8))),
        ("top_k", json!(d.top_k.unwrap_or(40))),
        ("top_p", json!(d.top_p.unwrap_or(0.95))),
        ("min_p", json!(d.min_p.unwrap_or(0.05))),
    ]
}

/// Fields `/completion` takes straight into the OpenAI request.
const PASSED: &[&str] = &[
    "prompt", "temperature", "top_k", "top_p", "min_p", "stop", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "ignore_eos", "grammar", "json_schema", "model",
];

/// Fields accepted at the value that means "off" (or that cannot change the
/// output here), refused otherwise: never silently ignored.
fn inert(key: &str, v: &Value) -> Option<bool> {
    let num = v.as_f64();
    Some(match key {
        // Always on or meaningless here (prefix caching, slots, timings).
        "cache_prompt" | "timings_per_token" | "return_progress" | "id_slot" | "n_keep" | "n_cache_reuse" | "sse_ping_interval"
        // Settings of samplers that are off unless their switch below is set.
        | "mirostat_tau" | "mirostat_eta" | "dynatemp_exponent" | "dry_base" | "dry_allowed_length" | "dry_penalty_last_n"
        | "dry_sequence_breakers" | "xtc_threshold" | "samplers" | "repeat_last_n" => true,
        "typical_p" => num == Some(1.0),
        "dynatemp_range" | "dry_multiplier" | "xtc_probability" | "n_indent" | "t_max_predict_ms" | "min_keep" | "mirostat" => {
            num == Some(0.0)
        }
        "post_sampling_probs" => v.as_bool() != Some(true),
        "lora" => v.as_array().is_some_and(Vec::is_empty),
        _ => return None,
    })
}

/// A checked `/completion` request: the OpenAI request it runs as, and
/// what the reply needs.
struct Native {
    openai: Map<String, Value>,
    n_probs: usize,
    return_tokens: bool,
    stream: bool,
    fields: Option<Vec<String>>,
    settings: Value,
}

fn translate(state: &Served, req: &Map<String, Value>) -> Result<Native, ApiError> {
    let mut openai = Map::new();
    for (key, v) in req {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            k if PASSED.contains(&k) => {
                openai.insert(k.into(), v.clone());
            }
            "n_predict" | "max_tokens" => match v.as_i64() {
                Some(n) if n < 0 => {}
                Some(n) => {
                    openai.insert("max_tokens".into(), json!(n));
                }
                None => return Err(ApiError::invalid(key, format!("{key} must be an integer (-1: no limit)"))),
            },
            "seed" => match v.as_i64() {
                Some(-1) => {}
                Some(seed) => {
                    openai.insert("seed".into(), json!(seed as u64));
                }
                None => return Err(ApiError::invalid("seed", "seed must be an integer (-1: random)")),
            },
            "n_cmpl" | "n" => {
                openai.insert("n".into(), v.clone());
            }
            "logit_bias" => {
                openai.insert("logit_bias".into(), logit_bias(state, v)?);
            }
            "n_probs" | "stream" | "return_tokens" | "response_fields" => {}
            k => match inert(k, v) {
                Some(true) => {}
                Some(false) => return Err(ApiError::invalid(k, format!("{k} = {v} is not supported by this server"))),
                None => return Err(ApiError::invalid(k, format!("field {k:?} is not supported by this server's /completion"))),
            },
        }
    }
    match openai.get("prompt") {
        None => return Err(ApiError::invalid("prompt", "prompt is required")),
        // `{"prompt_string": …}`: the form that may carry media (refused: text only).
        Some(Value::Object(o)) => {
            if o.get("multimodal_data").is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty())) {
                return Err(ApiError::invalid("prompt.multimodal_data", "images and audio are not supported: the served model reads text only"));
            }
            let text = o.get("prompt_string").cloned().ok_or_else(|| ApiError::invalid("prompt.prompt_string", "prompt_string is required"))?;
            openai.insert("prompt".into(), text);
        }
        Some(_) => {}
    }
    for (k, d) in native_defaults(&state.defaults) {
        openai.entry(k).or_insert(d);
    }
    let n_probs = match req.get("n_probs").and_then(Value::as_i64) {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX).min(crate::dto::MAX_TOP_LOGPROBS),
        _ => 0,
    };
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // Always streamed inside, with each token's id: the reply's `tokens`,
    // `completion_probabilities` and `timings` (first token = prompt done).
    openai.insert("stream".into(), json!(true));
    openai.insert("stream_options".into(), json!({"include_usage": true}));
    openai.insert("logprobs".into(), json!(n_probs));
    openai.insert("return_tokens_as_token_ids".into(), json!(true));
    // An empty list asks for everything, as no list does.
    let fields = req
        .get("response_fields")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    let mut settings: Map<String, Value> = openai.iter().filter(|(k, _)| !matches!(k.as_str(), "prompt" | "stream_options" | "logprobs" | "return_tokens_as_token_ids" | "max_tokens")).map(|(k, v)| (k.clone(), v.clone())).collect();
    settings.insert("n_predict".into(), openai.get("max_tokens").cloned().unwrap_or(json!(-1)));
    settings.insert("n_probs".into(), json!(n_probs));
    // The biases as llama-server reports them; with `ignore_eos`, the end
    // tokens' (null: minus infinity).
    let mut biases: Vec<Value> = openai
        .get("logit_bias")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(t, b)| json!({"token": t.parse::<u32>().ok(), "bias": b})).collect())
        .unwrap_or_default();
    if openai.get("ignore_eos").and_then(Value::as_bool) == Some(true) {
        let eog = state.engine.session().tokenizer.end_of_generation_tokens().to_vec();
        biases.extend(eog.into_iter().map(|t| json!({"token": t, "bias": null})));
    }
    settings.insert("logit_bias".into(), Value::Array(biases));
    settings.insert("stream".into(), json!(stream));
    settings.insert("n_ctx".into(), json!(state.engine.limits().max_seq_len()));
    settings.insert("model".into(), json!(state.model_name));
    Ok(Native {
        openai,
        n_probs,
        return_tokens: req.get("return_tokens").and_then(Value::as_bool).unwrap_or(false),
        stream,
        fields,
        settings: Value::Object(settings),
    })
}

/// llama-server's `logit_bias` (`[[id or text, bias or false], …]`, or
/// OpenAI's object) as OpenAI's object; a text stands for its tokens.
fn logit_bias(state: &Served, v: &Value) -> Result<Value, ApiError> {
    let pairs: Vec<Value> = match v {
        Value::Array(pairs) => pairs.clone(),
        // OpenAI's object, whose keys may be texts here too.
        Value::Object(map) => map
            .iter()
            .map(|(k, b)| match k.trim().parse::<u32>() {
                Ok(id) => json!([id, b]),
                Err(_) => json!([k, b]),
            })
            .collect(),
        _ => return Err(ApiError::invalid("logit_bias", "logit_bias is a list of [token or text, bias] or an object")),
    };
    let tokenizer = &state.engine.session().tokenizer;
    let mut out = Map::new();
    for (i, pair) in pairs.iter().enumerate() {
        let at = format!("logit_bias[{i}]");
        let (Some(target), Some(bias)) = (pair.get(0), pair.get(1)) else {
            return Err(ApiError::invalid(&at, "each entry is [token id or text, bias or false]"));
        };
        let bias = match bias {
            Value::Bool(false) => -100.0,
            b => b.as_f64().ok_or_else(|| ApiError::invalid(&at, "a bias is a number or false"))?,
        };
        let ids = match target {
            Value::String(text) => tokenizer.encode(text, false).map_err(|e| ApiError::invalid(&at, e.to_string()))?,
            t => vec![t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| ApiError::invalid(&at, "a token id is a non-negative integer"))?],
        };
        for id in ids {
            out.insert(id.to_string(), json!(bias.clamp(-100.0, 100.0)));
        }
    }
    Ok(Value::Object(out))
}

/// One generated token, read back from an OpenAI chunk's logprobs.
fn token_entries(state: &Served, logprobs: &Value) -> Vec<(u32, Value)> {
    let tokenizer = &state.engine.session().tokenizer;
    let id_of = |name: &str| name.strip_prefix("token_id:").and_then(|n| n.parse::<u32>().ok());
    let entry = |id: u32, logprob: &Value| {
        let bytes = tokenizer.token_bytes(id);
        json!({"id": id, "token": String::from_utf8_lossy(bytes), "bytes": bytes, "logprob": logprob})
    };
    let names = logprobs["tokens"].as_array().cloned().unwrap_or_default();
    names
        .iter()
        .enumerate()
        .filter_map(|(k, name)| {
            let id = id_of(name.as_str()?)?;
            let mut e = entry(id, &logprobs["token_logprobs"][k]);
            let top: Vec<Value> = logprobs["top_logprobs"][k]
                .as_object()
                .map(|m| m.iter().filter_map(|(n, lp)| Some(entry(id_of(n)?, lp))).collect())
                .unwrap_or_default();
            e["top_logprobs"] = Value::Array(top);
            Some((id, e))
        })
        .collect()
}

/// One choice of a `/completion`, accumulated.
#[derive(Default)]
struct Choice {
    content: String,
    tokens: Vec<u32>,
    probs: Vec<Value>,
    finish: Option<String>,
    stop_word: Option<String>,
    first_token: Option<Instant>,
}

impl Choice {
    /// llama-server's `stop_type`: `eos`, `word` or `limit`.
    fn stop_type(&self) -> &'static str {
        match (self.finish.as_deref(), &self.stop_word) {
            (Some("stop"), Some(_)) => "word",
            (Some("stop"), None) => "eos",
            (Some(_), _) => "limit",
            (None, _) => "none",
        }
    }
}

/// The closing object of choice `index`: text (whole replies), tokens,
/// probabilities, counts, timings, settings.
fn final_object(native: &Native, prompt_text: &str, c: &Choice, index: usize, usage: &Value, started: Instant, whole: bool) -> Value {
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let now = Instant::now();
    let first = c.first_token.unwrap_or(now);
    let (prompt_n, cached) = (usage["prompt_tokens"].as_u64().unwrap_or(0), usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0));
    let predicted_n = usage["completion_tokens"].as_u64().unwrap_or(c.tokens.len() as u64);
    let (prompt_ms, predicted_ms) = (ms(started, first), ms(first, now));
    let evaluated = prompt_n.saturating_sub(cached);
    let per = |n: u64, t: f64| if n == 0 { 0.0 } else { t / n as f64 };
    let rate = |n: u64, t: f64| if t <= 0.0 || n == 0 { 0.0 } else { n as f64 * 1000.0 / t };
    let mut v = json!({
        "index": index,
        "content": if whole { c.content.as_str() } else { "" },
        "tokens": if whole && native.return_tokens { json!(c.tokens) } else { json!([]) },
        "id_slot": -1,
        "stop": true,
        "model": native.settings["model"],
        "tokens_predicted": predicted_n,
        "tokens_evaluated": prompt_n,
        "tokens_cached": cached,
        "generation_settings": native.settings,
        "prompt": prompt_text,
        "has_new_line": c.content.contains('\n'),
        "truncated": false,
        "stop_type": c.stop_type(),
        "stopping_word": c.stop_word.clone().unwrap_or_default(),
        "timings": {
            "cache_n": cached,
            "prompt_n": evaluated, "prompt_ms": prompt_ms, "prompt_per_token_ms": per(evaluated, prompt_ms), "prompt_per_second": rate(evaluated, prompt_ms),
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            // The clock starts at the first token, so the rate is over the steps after it.
            "predicted_per_token_ms": per(predicted_n.saturating_sub(1), predicted_ms), "predicted_per_second": rate(predicted_n.saturating_sub(1), predicted_ms),
        },
    });
    if whole && native.n_probs > 0 {
        v["completion_probabilities"] = Value::Array(c.probs.clone());
    }
    select_fields(v, native.fields.as_deref())
}

/// `response_fields`: only the named fields; `a/b` takes `b` out of `a`.
fn select_fields(v: Value, fields: Option<&[String]>) -> Value {
    let Some(fields) = fields else { return v };
    let mut out = Map::new();
    for f in fields {
        let mut at = &v;
        for part in f.split('/') {
            at = &at[part];
        }
        if !at.is_null() {
            out.insert(f.rsplit('/').next().unwrap_or(f).to_owned(), at.clone());
        }
    }
    Value::Object(out)
}


/// `POST /completion`: llama-server's native completion.
pub async fn completion(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: Map<String, Value> = parse(&body)?;
    if let Some(prompts) = batch(req.get("prompt")) {
        // Several prompts: each runs as its own request, all at once; the
        // replies come back as a list, in order.
        if req.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::invalid("prompt", "stream one prompt per request"));
        }
        // Prompts × completions each: bounded as `n` is, so one request
        // cannot flood the queue.
        let per_prompt = req.get("n_cmpl").or_else(|| req.get("n")).and_then(Value::as_u64).unwrap_or(1).max(1);
        if prompts.len() as u64 * per_prompt > crate::dto::MAX_N as u64 {
            return Err(ApiError::invalid("prompt", format!("at most {} completions per request (prompts × n_cmpl)", crate::dto::MAX_N)));
        }
        let runs = prompts.into_iter().map(|p| {
            let mut one = req.clone();
            one.insert("prompt".into(), p);
            let state = Arc::clone(&state);
            async move { one_completion(&state, &one).await }
        });
        let mut out = Vec::new();
        for (i, reply) in futures::future::join_all(runs).await.into_iter().enumerate() {
            let v = relay::whole(reply?).await?;
            let mut items = if let Value::Array(a) = v { a } else { vec![v] };
            for item in &mut items {
                item["index"] = json!(i);
            }
            out.extend(items);
        }
        return Ok(Json(Value::Array(out)).into_response());
    }
    one_completion(&state, &req).await
}

/// A prompt that is a list of prompts (strings, token lists, or objects),
/// not one prompt of mixed pieces.
fn batch(prompt: Option<&Value>) -> Option<Vec<Value>> {
    let items = prompt?.as_array()?;
    let several = (items.len() > 1 && items.iter().all(|p| p.is_string() || p.is_object()))
        || items.iter().any(Value::is_array);
    (several && !items.is_empty()).then(|| items.clone())
}

/// One prompt's `/completion`, whole or streamed.
async fn one_completion(app: &Arc<AppState>, req: &Map<String, Value>) -> Result<Response, ApiError> {
    let state = Arc::new(app.served(req.get("model").and_then(Value::as_str).unwrap_or("")).await?);
    let native = translate(&state, req)?;
    let started = Instant::now();
    let reply = relay::call(app, Target::Text, &Value::Object(native.openai.clone())).await?;
    // The prompt as text, for the reply's `prompt` (as translated: `{prompt_string}` unwrapped).
    let pieces = crate::dto::prompt_pieces(native.openai.get("prompt").unwrap_or(&Value::Null)).unwrap_or_default();
    let prompt = crate::dto::PromptPiece::text_of(&pieces, &state.engine.session().tokenizer);
    let chunks = relay::events(reply);
    if native.stream {
        return Ok(stream_native(state, native, prompt, chunks, started).into_response());
    }
    let mut choices: Vec<Choice> = Vec::new();
    let mut usage = Value::Null;
    let mut chunks = chunks;
    while let Some(v) = chunks.next().await {
        if let Some(err) = v.get("error") {
            return Err(ApiError::internal(err["message"].as_str().unwrap_or("generation failed")));
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(0) as usize;
            if choices.len() <= i {
                choices.resize_with(i + 1, Choice::default);
            }
            note(&state, &mut choices[i], c);
        }
    }
    let mut out: Vec<Value> =
        choices.iter().enumerate().map(|(i, c)| final_object(&native, &prompt, c, i, &usage, started, true)).collect();
    Ok(if out.len() == 1 { Json(out.remove(0)) } else { Json(Value::Array(out)) }.into_response())
}

/// Takes one OpenAI choice chunk into `c`; returns its new tokens' entries.
fn note(state: &Served, c: &mut Choice, chunk: &Value) -> Vec<(u32, Value)> {
    let text = chunk["text"].as_str().unwrap_or("");
    c.content.push_str(text);
    let entries = token_entries(state, &chunk["logprobs"]);
    if !entries.is_empty() && c.first_token.is_none() {
        c.first_token = Some(Instant::now());
    }
    for (id, e) in &entries {
        c.tokens.push(*id);
        c.probs.push(e.clone());
    }
    if let Some(f) = chunk["finish_reason"].as_str() {
        c.finish = Some(f.to_owned());
        c.stop_word = chunk["stop_reason"].as_str().map(str::to_owned);
    }
    entries
}

/// llama-server's stream: a `data:` object per piece of text (`content`,
/// `tokens`, `stop: false`), then each choice's closing object (`stop: true`,
/// counts, timings); no `[DONE]`.
struct NativeStream {
    state: Arc<Served>,
    native: Native,
    prompt: String,
    started: Instant,
    choices: Vec<Choice>,
    pending: std::collections::VecDeque<SseEvent>,
    failed: bool,
}

impl NativeStream {
    fn push(&mut self, v: &Value) {
        self.pending.push_back(SseEvent::default().data(v.to_string()));
    }
}

impl relay::Translator for NativeStream {
    fn chunk(&mut self, v: &Value) {
        if let Some(err) = v.get("error") {
            self.push(&json!({"error": err}));
            self.failed = true;
            return;
        }
        if !v["usage"].is_null() {
            // Sent last: every choice's closing object, with the counts.
            let closing: Vec<Value> = (0..self.choices.len())
                .map(|i| final_object(&self.native, &self.prompt, &self.choices[i], i, &v["usage"], self.started, false))
                .collect();
            closing.iter().for_each(|c| self.push(c));
            return;
        }
        for chunk in v["choices"].as_array().into_iter().flatten() {
            let i = chunk["index"].as_u64().unwrap_or(0) as usize;
            if self.choices.len() <= i {
                self.choices.resize_with(i + 1, Choice::default);
            }
            let before = self.choices[i].content.len();
            let entries = note(&self.state, &mut self.choices[i], chunk);
            let text = &self.choices[i].content[before..];
            if text.is_empty() && entries.is_empty() {
                continue;
            }
            let mut piece = json!({
                "index": i, "content": text, "tokens": entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                "stop": false, "id_slot": -1, "tokens_predicted": self.choices[i].tokens.len(),
            });
            if self.native.n_probs > 0 {
                piece["completion_probabilities"] = Value::Array(entries.into_iter().map(|(_, e)| e).collect());
            }
            self.push(&piece);
        }
    }

    fn end(&mut self) {}

    fn queue(&mut self) -> &mut std::collections::VecDeque<SseEvent> {
        &mut self.pending
    }

    fn stopped(&self) -> bool {
        self.failed
    }
}

fn stream_native(
    state: Arc<Served>,
    native: Native,
    prompt: String,
    chunks: BoxStream<'static, Value>,
    started: Instant,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let translator = NativeStream { state, native, prompt, started, choices: Vec::new(), pending: std::collections::VecDeque::new(), failed: false };
    relay::translate(chunks, translator)
}

/// `POST /predict`: Google Vertex AI's custom-container protocol, as
/// llama-server answers it: each of `instances` is an OpenAI request
/// (`@requestFormat`: `chatCompletions`, `completions` or `embeddings`, by
/// default a chat when it has messages), run through its handler in turn;
/// `predictions` holds the replies in order. No streaming.
pub async fn predict(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: Value = parse(&body)?;
    let Some(instances) = req.get("instances").and_then(Value::as_array) else {
        return Err(ApiError::invalid("instances", "instances must be a list of requests"));
    };
    if instances.is_empty() || instances.len() > crate::dto::MAX_N {
        return Err(ApiError::invalid("instances", format!("send 1 to {} instances", crate::dto::MAX_N)));
    }
    let mut predictions = Vec::with_capacity(instances.len());
    for (i, instance) in instances.iter().enumerate() {
        let Some(fields) = instance.as_object() else {
            return Err(ApiError::invalid(&format!("instances[{i}]"), "an instance is a request object"));
        };
        let format = fields.get("@requestFormat").and_then(Value::as_str);
        let mut openai = fields.clone();
        openai.remove("@requestFormat");
        openai.insert("stream".into(), json!(false));
        let target = match format {
            Some("chatCompletions") => Target::Chat,
            None if fields.contains_key("messages") => Target::Chat,
            Some("completions") | None => Target::Text,
            Some(other) => {
                return Err(ApiError::invalid(&format!("instances[{i}].@requestFormat"), format!("{other:?} is not chatCompletions or completions")))
            }
        };
        let reply = relay::call(&state, target, &Value::Object(openai)).await?;
        let status = reply.status();
        let v = relay::whole(reply).await?;
        if !status.is_success() {
            let message = v["error"]["message"].as_str().unwrap_or("the request failed");
            return Err(ApiError { status, ..ApiError::invalid(&format!("instances[{i}]"), message) });
        }
        predictions.push(v);
    }
    Ok(Json(json!({ "predictions": predictions })))
}
