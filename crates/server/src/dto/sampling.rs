//! The sampling fields every generation endpoint shares, the server's
//! defaults for them, and what the output must match.

use std::collections::HashMap;

use hearth_engine::Constraint;
use hearth_sampling::SamplingParams;
use serde::Deserialize;

use super::OneOrMany;
use crate::error::ApiError;

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with token counts.
    #[serde(default)]
    pub include_usage: bool,
    /// Counts on every chunk (vLLM's extension).
    #[serde(default)]
    pub continuous_usage_stats: bool,
}

/// What to do when the conversation does not fit the context (Hearth extension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse with 400 `context_length_exceeded` (OpenAI's behaviour).
    #[default]
    Error,
    /// Drop the oldest turns, keeping system messages and the last message.
    Truncate,
}

/// Sampling fields shared by both endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// Model name (checked against the served one when given).
    pub model: Option<String>,
    /// Stream with server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Stream options.
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate.
    pub n: Option<usize>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// Token limit of the reply.
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens` (chat).
    pub max_completion_tokens: Option<usize>,
    /// RNG seed.
    pub seed: Option<u64>,
    /// Temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k (extension). Signed so a negative value is refused by name.
    pub top_k: Option<i64>,
    /// Min-p (extension).
    pub min_p: Option<f32>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (extension).
    pub repeat_penalty: Option<f32>,
    /// Token id (as a string) → bias added to its logit, −100…100.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Keep generating past end-of-text tokens (extension, for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Name logprob tokens `token_id:ID` (vLLM's extension).
    #[serde(default)]
    pub return_tokens_as_token_ids: bool,
    /// Context overflow policy (extension).
    #[serde(default)]
    pub context_overflow: OverflowPolicy,
    /// Structured output: `{"type": "text" | "json_object" | "json_schema"}`.
    pub response_format: Option<serde_json::Value>,
    /// A grammar the output must match, in llguidance's Lark or llama.cpp's GBNF (extension).
    pub grammar: Option<String>,
    /// A regular expression the whole output must match (extension).
    pub regex: Option<String>,
    /// A JSON schema the output must match (llama-server's extension).
    pub json_schema: Option<serde_json::Value>,
    /// OpenAI's audio output: refused (text only).
    pub audio: Option<serde_json::Value>,
    /// OpenAI's output modalities: only `["text"]`.
    pub modalities: Option<Vec<String>>,
    /// OpenAI's predicted outputs: refused (no speculative decoding here).
    pub prediction: Option<serde_json::Value>,
    /// OpenAI's hosted web search: refused (no network at run time).
    pub web_search_options: Option<serde_json::Value>,
    /// Function tools (chat only).
    pub tools: Option<serde_json::Value>,
    /// Legacy function calling (chat only).
    pub functions: Option<serde_json::Value>,
    /// The LoRA adapter to run with (extension): its name, `{"name",
    /// "scale"}`, or llama-server's `[{"id", "scale"}]`.
    pub lora: Option<serde_json::Value>,
}

/// What is known of a request's shared fields once checked: every cheap
/// check runs before its prompt is prepared, so a bad field costs no tokenizing.
pub struct Checked {
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Choices asked for.
    pub choices: usize,
    /// What the output must match, and the field that asked for it.
    pub constraint: Option<(Constraint, &'static str)>,
}

/// Most choices one request may ask for.
pub const MAX_N: usize = 16;
/// Most alternatives per token in logprobs (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What a request's left-out sampling fields become when the server was
/// started with its own defaults (`hearth serve --temp 0.8 --seed 42
/// --n-predict 128`, llama-server's flags); else OpenAI's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingDefaults {
    /// Temperature.
    pub temperature: Option<f32>,
    /// Top-k.
    pub top_k: Option<usize>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Min-p.
    pub min_p: Option<f32>,
    /// Repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// RNG seed (else a fresh one per request).
    pub seed: Option<u64>,
    /// Token limit of a reply (else the rest of the context).
    pub max_tokens: Option<usize>,
}

impl SamplingDefaults {
    /// OpenAI's defaults with the server's over them.
    #[must_use]
    pub fn params(&self) -> SamplingParams {
        let d = SamplingParams::openai_defaults();
        SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            ..d
        }
    }
}

impl Sampling {
    /// The model asked for (`""`: none).
    #[must_use]
    pub fn model_asked(&self) -> &str {
        self.model.as_deref().unwrap_or("")
    }

    /// Sampling parameters for a model of `n_vocab` tokens, checked by
    /// [`SamplingParams::validate`] (the rule every entry point shares);
    /// fields left out take the server's `defaults`, `max_tokens` `default_max`.
    pub fn params(&self, defaults: &SamplingDefaults, default_max: usize, n_vocab: usize) -> Result<SamplingParams, ApiError> {
        let d = defaults.params();
        let top_k = match self.top_k {
            None => d.top_k,
            Some(k) => {
                usize::try_from(k).map_err(|_| ApiError::invalid("top_k", "top_k must be at least 0 (0 = off)"))?
            }
        };
        let mut logit_bias = Vec::new();
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let token = key.trim().parse().map_err(|_| {
                ApiError::invalid("logit_bias", format!("logit_bias keys are token ids; {key:?} is not one"))
            })?;
            logit_bias.push((token, bias));
        }
        logit_bias.sort_unstable_by_key(|&(t, _)| t);
        let params = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            logit_bias,
            seed: self.seed.or(defaults.seed).unwrap_or_else(rand_seed),
            max_tokens: self.max_completion_tokens.or(self.max_tokens).unwrap_or(default_max),
            stop: self.stop.clone().map(OneOrMany::into_vec).unwrap_or_default(),
            ..d
        };
        params.validate(n_vocab).map_err(|e| ApiError::invalid(e.field, e.message))?;
        Ok(params)
    }

    /// What the output must match, from `response_format` or the `grammar`,
    /// `regex` and `json_schema` extensions (at most one of them). The
    /// shape is checked here; whether the schema or grammar compiles is
    /// known when it is compiled, before any token.
    pub fn constraint(&self) -> Result<Option<(Constraint, &'static str)>, ApiError> {
        let mut found: Vec<(Constraint, &'static str)> = Vec::new();
        if let Some(rf) = self.response_format.as_ref().filter(|v| !v.is_null()) {
            if let Some(c) = response_format(rf)? {
                found.push((c, "response_format"));
            }
        }
        if let Some(g) = &self.grammar {
            found.push((Constraint::grammar_text(g).map_err(|e| ApiError::invalid("grammar", e))?, "grammar"));
        }
        if let Some(r) = &self.regex {
            found.push((Constraint::Regex(r.clone()), "regex"));
        }
        if let Some(s) = self.json_schema.as_ref().filter(|v| !v.is_null()) {
            found.push((Constraint::JsonSchema(schema_value(s, "json_schema")?), "json_schema"));
        }
        if found.len() > 1 {
            let names: Vec<&str> = found.iter().map(|(_, p)| *p).collect();
            return Err(ApiError::invalid(
                found[1].1,
                format!("give one of response_format, grammar, regex and json_schema, not {}", names.join(" and ")),
            ));
        }
        let found = found.pop();
        if found.is_some() && self.stop.is_some() {
            return Err(ApiError::invalid(
                "stop",
                "stop strings cannot be combined with a response format or grammar (it decides where the output ends)",
            ));
        }
        Ok(found)
    }

    /// Whether the request offers tools (or legacy functions).
    #[must_use]
    pub fn has_tools(&self) -> bool {
        let present = |v: &Option<serde_json::Value>| {
            v.as_ref().is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        };
        present(&self.tools) || present(&self.functions)
    }

    /// Every check of these fields, in the order the handlers run them:
    /// the sampling parameters (`max_tokens` defaulting to `default_max`)
    /// and the number of choices.
    pub fn check(&self, defaults: &SamplingDefaults, default_max: usize, n_vocab: usize) -> Result<Checked, ApiError> {
        self.check_supported()?;
        let constraint = self.constraint()?;
        let choices = self.choices()?;
        Ok(Checked { params: self.params(defaults, default_max, n_vocab)?, choices, constraint })
    }

    /// OpenAI features Hearth does not have are refused by name, never
    /// silently dropped (a client asking for audio must not get text
    /// thinking it was heard).
    fn check_supported(&self) -> Result<(), ApiError> {
        let refused = |field: &str, why: &str| Err(ApiError::invalid(field, format!("{field} is not supported: {why}")));
        if self.audio.as_ref().is_some_and(|v| !v.is_null()) {
            return refused("audio", "the served model reads and writes text only");
        }
        if self.modalities.as_ref().is_some_and(|m| m.iter().any(|x| x != "text")) {
            return refused("modalities", "the served model writes text only");
        }
        if self.prediction.as_ref().is_some_and(|v| !v.is_null()) {
            return refused("prediction", "predicted outputs are not used by this server");
        }
        if self.web_search_options.as_ref().is_some_and(|v| !v.is_null()) {
            return refused("web_search_options", "this server does not search the web (nothing leaves the machine)");
        }
        Ok(())
    }

    /// Whether the request sets its own token limit.
    #[must_use]
    pub fn sets_max_tokens(&self) -> bool {
        self.max_completion_tokens.or(self.max_tokens).is_some()
    }

    /// Choices asked for, checked.
    pub fn choices(&self) -> Result<usize, ApiError> {
        match self.n.unwrap_or(1) {
            0 => Err(ApiError::invalid("n", "n must be at least 1")),
            n if n > MAX_N => Err(ApiError::invalid("n", format!("n must be at most {MAX_N}"))),
            n => Ok(n),
        }
    }

    /// Whether the final stream chunk carries usage.
    #[must_use]
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    /// Whether every stream chunk carries the counts so far.
    #[must_use]
    pub fn continuous_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.continuous_usage_stats)
    }
}

/// The constraint of a `response_format` object (`None` for plain text).
fn response_format(rf: &serde_json::Value) -> Result<Option<Constraint>, ApiError> {
    let kind = rf.get("type").and_then(serde_json::Value::as_str);
    match kind {
        Some("text") => Ok(None),
        // llama-server accepts a schema inside `json_object` too.
        Some("json_object") => match rf.get("schema").filter(|s| !s.is_null()) {
            Some(s) => Ok(Some(Constraint::JsonSchema(schema_value(s, "response_format.schema")?))),
            None => Ok(Some(Constraint::JsonObject)),
        },
        Some("json_schema") => {
            let Some(schema) = rf.get("json_schema").and_then(|j| j.get("schema")).or_else(|| rf.get("schema")) else {
                return Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    "response_format json_schema needs json_schema.schema (the JSON schema itself)",
                ));
            };
            Ok(Some(Constraint::JsonSchema(schema_value(schema, "response_format.json_schema.schema")?)))
        }
        other => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "response_format type {} is not one of text, json_object, json_schema",
                other.map_or_else(|| "(missing)".to_owned(), |t| format!("{t:?}"))
            ),
        )),
    }
}

/// A JSON schema must be an object (or `true`, which allows any value).
fn schema_value(schema: &serde_json::Value, param: &str) -> Result<serde_json::Value, ApiError> {
    match schema {
        serde_json::Value::Object(_) => Ok(schema.clone()),
        serde_json::Value::Bool(true) => Ok(serde_json::json!({})),
        _ => Err(ApiError::invalid(param, "a JSON schema must be an object")),
    }
}

/// A seed from the clock when the client gives none (sampling differs per
/// request, as with OpenAI).
fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
