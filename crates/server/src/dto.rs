//! OpenAI request bodies (the fields Hearth honours; unknown fields are
//! ignored, as OpenAI clients send many) and the shared sampling fields.

use std::collections::HashMap;

use hearth_engine::Constraint;
use hearth_sampling::SamplingParams;
use hearth_text::{FunctionCall, Message, ToolCall, ToolChoice, ToolSpec};
use serde::Deserialize;

use crate::error::ApiError;

/// A string or a list of strings (`stop`, `prompt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Message content: a string or a list of typed parts (only text parts are read).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "..."}, ...]`.
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// What was said (absent for pure tool-call turns).
    pub content: Option<Content>,
    /// The calls an assistant turn made.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// The call a `tool` turn answers.
    pub tool_call_id: Option<String>,
    /// The tool's (or participant's) name.
    pub name: Option<String>,
}

/// A call in an assistant message the client sends back.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    /// The call's id.
    pub id: Option<String>,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// What was called.
    pub function: FunctionIn,
}

/// The function of a [`ToolCallIn`].
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionIn {
    /// The function's name.
    pub name: String,
    /// The arguments: a JSON text (OpenAI's shape) or an object.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// The tools of a chat request, checked.
#[derive(Debug, Clone, Default)]
pub struct ToolSetup {
    /// The functions offered.
    pub specs: Vec<ToolSpec>,
    /// Whether and which to call.
    pub choice: ToolChoice,
    /// Several calls in one reply allowed.
    pub parallel: bool,
}

impl ToolSetup {
    /// Whether the model is shown tools and its reply is parsed for calls.
    #[must_use]
    pub fn active(&self) -> bool {
        !self.specs.is_empty() && self.choice != ToolChoice::None
    }
}

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

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
/// Most messages in one chat (OpenAI's bound is 2,048; truncation still
/// renders the template over them, so they are bounded).
pub const MAX_MESSAGES: usize = 8192;
/// Roles a chat message may have.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
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

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// `auto`, `none`, `required` or `{"type": "function", "function": {"name": …}}`.
    pub tool_choice: Option<serde_json::Value>,
    /// Allow several calls in one reply (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Legacy `tool_choice`: `auto`, `none` or `{"name": …}`.
    pub function_call: Option<serde_json::Value>,
    /// More variables for the chat template (e.g. `{"enable_thinking": false}`).
    #[serde(default)]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// End the prompt with the assistant's opening (default true; vLLM's and
    /// llama-server's extension).
    pub add_generation_prompt: Option<bool>,
    /// Continue the last message, an assistant's, instead of answering it.
    #[serde(default)]
    pub continue_final_message: bool,
    /// Most tokens a reasoning model may think before its answer (extension;
    /// the close is forced when they run out).
    pub reasoning_budget: Option<usize>,
    /// Return log-probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token (with `logprobs`).
    pub top_logprobs: Option<usize>,
    /// Shared fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl ChatRequest {
    /// How the prompt ends; asking for both a new turn and the last one
    /// continued is a 400.
    pub fn ending(&self) -> Result<hearth_text::ChatEnding, ApiError> {
        use hearth_text::ChatEnding;
        match (self.add_generation_prompt, self.continue_final_message) {
            (Some(true), true) => Err(ApiError::invalid(
                "continue_final_message",
                "continue_final_message and add_generation_prompt cannot both be true",
            )),
            (_, true) => Ok(ChatEnding::ContinueLast),
            (Some(false), false) => Ok(ChatEnding::Bare),
            (None | Some(true), false) => Ok(ChatEnding::GenerationPrompt),
        }
    }

    /// The offered tools and the choice among them, checked: each a
    /// `function` with a valid, unique name and an object schema for its
    /// parameters; a required or named choice needs tools (and the name
    /// one of them). Whether each schema compiles is checked when the
    /// request's grammar is built.
    pub fn tools(&self) -> Result<ToolSetup, ApiError> {
        let mut specs = Vec::new();
        let (list, param, legacy) = match (&self.sampling.tools, &self.sampling.functions) {
            (Some(t), _) if !t.is_null() => (t, "tools", false),
            (_, Some(f)) if !f.is_null() => (f, "functions", true),
            _ => (&serde_json::Value::Null, "tools", false),
        };
        if !list.is_null() {
            let Some(items) = list.as_array() else { return Err(ApiError::invalid(param, format!("{param} must be a list"))) };
            if items.len() > MAX_TOOLS {
                return Err(ApiError::invalid(param, format!("at most {MAX_TOOLS} tools per request")));
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{param}[{i}]");
                let f = if legacy {
                    item
                } else {
                    if item.get("type").and_then(serde_json::Value::as_str) != Some("function") {
                        return Err(ApiError::invalid(&format!("{at}.type"), "only tools of type \"function\" are supported"));
                    }
                    item.get("function").ok_or_else(|| ApiError::invalid(&format!("{at}.function"), "a tool needs a function"))?
                };
                let name = f.get("name").and_then(serde_json::Value::as_str).unwrap_or("");
                if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(ApiError::invalid(&format!("{at}.name"), format!("function name {name:?} must be 1-64 characters of a-z, A-Z, 0-9, _ and -")));
                }
                if specs.iter().any(|s: &ToolSpec| s.name == name) {
                    return Err(ApiError::invalid(&format!("{at}.name"), format!("function {name:?} is offered twice")));
                }
                let parameters = match f.get("parameters") {
                    None | Some(serde_json::Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
                    Some(p @ serde_json::Value::Object(_)) => p.clone(),
                    Some(_) => return Err(ApiError::invalid(&format!("{at}.parameters"), "parameters must be a JSON schema object")),
                };
                let description = f.get("description").and_then(serde_json::Value::as_str).map(str::to_owned);
                specs.push(ToolSpec { name: name.to_owned(), description, parameters });
            }
        }
        let (choice_value, choice_param) = match (&self.tool_choice, &self.function_call) {
            (Some(c), _) if !c.is_null() => (Some(c), "tool_choice"),
            (_, Some(c)) if !c.is_null() => (Some(c), "function_call"),
            _ => (None, "tool_choice"),
        };
        let choice = match choice_value {
            None => ToolChoice::Auto,
            Some(serde_json::Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => return Err(ApiError::invalid(choice_param, format!("{choice_param} {other:?} is not one of auto, none, required or a function"))),
            },
            Some(v) => {
                let name = v.get("function").and_then(|f| f.get("name")).or_else(|| v.get("name")).and_then(serde_json::Value::as_str);
                let Some(name) = name else {
                    return Err(ApiError::invalid(choice_param, format!("{choice_param} must name a function: {{\"type\": \"function\", \"function\": {{\"name\": …}}}}")));
                };
                if !specs.iter().any(|s| s.name == name) {
                    return Err(ApiError::invalid(choice_param, format!("{choice_param} names {name:?}, which is not among the tools")));
                }
                ToolChoice::Named(name.to_owned())
            }
        };
        if specs.is_empty() && choice == ToolChoice::Required {
            return Err(ApiError::invalid(choice_param, "tool_choice \"required\" needs tools"));
        }
        let setup = ToolSetup { specs, choice, parallel: self.parallel_tool_calls.unwrap_or(true) };
        if setup.active() && self.sampling.constraint()?.is_some() {
            return Err(ApiError::invalid(
                "response_format",
                "a response format or grammar cannot be combined with tools (use tool_choice \"none\", or describe the format as a tool)",
            ));
        }
        Ok(setup)
    }

    /// The messages as the template sees them.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(ApiError::invalid("messages", format!("at most {MAX_MESSAGES} messages per request")));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !ROLES.contains(&m.role.as_str()) {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        format!("role {:?} is not one of {}", m.role, ROLES.join(", ")),
                    ));
                }
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid(
                                        &format!("messages[{i}].content"),
                                        format!("content part type {kind:?} is not supported (text only)"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                let role = if m.role == "developer" { "system" } else { m.role.as_str() };
                let mut msg = Message::new(role, &text);
                msg.name.clone_from(&m.name);
                if let Some(calls) = &m.tool_calls {
                    if m.role != "assistant" {
                        return Err(ApiError::invalid(&format!("messages[{i}].tool_calls"), "only assistant messages carry tool_calls"));
                    }
                    msg.tool_calls = Some(tool_calls_of(i, calls)?);
                }
                if m.role == "tool" {
                    let Some(id) = &m.tool_call_id else {
                        return Err(ApiError::invalid(&format!("messages[{i}].tool_call_id"), "a tool message needs the tool_call_id it answers"));
                    };
                    msg.tool_call_id = Some(id.clone());
                }
                Ok(msg)
            })
            .collect::<Result<Vec<Message>, ApiError>>()
            .and_then(check_tool_answers)
    }

    /// Alternatives per token, or `None` without logprobs.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        let top = self.top_logprobs.unwrap_or(0);
        if top > MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid("top_logprobs", format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}")));
        }
        if self.top_logprobs.is_some() && !self.logprobs {
            return Err(ApiError::invalid("top_logprobs", "top_logprobs needs logprobs: true"));
        }
        Ok(self.logprobs.then_some(top))
    }
}

/// A message's calls in the template's shape: ids kept (or made up), the
/// arguments parsed into the JSON object they must be.
fn tool_calls_of(i: usize, calls: &[ToolCallIn]) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("messages[{i}].tool_calls[{j}]");
            if c.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(ApiError::invalid(&format!("{at}.type"), "only function calls are supported"));
            }
            let arguments = match &c.function.arguments {
                serde_json::Value::String(s) if s.trim().is_empty() => serde_json::json!({}),
                serde_json::Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| ApiError::invalid(&format!("{at}.function.arguments"), format!("arguments are not JSON: {e}")))?,
                serde_json::Value::Null => serde_json::json!({}),
                other => other.clone(),
            };
            if !arguments.is_object() {
                return Err(ApiError::invalid(&format!("{at}.function.arguments"), "arguments must be a JSON object"));
            }
            let id = c.id.clone().unwrap_or_else(|| format!("call_{i}_{j}"));
            Ok(ToolCall { id, kind: "function".into(), function: FunctionCall { name: c.function.name.clone(), arguments } })
        })
        .collect()
}

/// Every `tool` message must answer a call made by an earlier assistant turn.
fn check_tool_answers(messages: Vec<Message>) -> Result<Vec<Message>, ApiError> {
    let mut calls: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if let Some(cs) = &m.tool_calls {
            calls.extend(cs.iter().map(|c| c.id.as_str()));
        }
        if let Some(id) = &m.tool_call_id {
            if !calls.contains(&id.as_str()) {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].tool_call_id"),
                    format!("tool_call_id {id:?} answers no call of an earlier assistant message"),
                ));
            }
        }
    }
    Ok(messages)
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// What to continue: a string, token ids, or llama-server's mix of the
    /// two (`[12, 34, "text", 56]`); a list holding one prompt of these.
    pub prompt: serde_json::Value,
    /// Alternatives per token (legacy logprobs).
    pub logprobs: Option<usize>,
    /// Echo the prompt before the completion.
    #[serde(default)]
    pub echo: bool,
    /// Shared fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl CompletionRequest {
    /// Tools belong to chats: a text completion has no turns to call from.
    pub fn check_no_tools(&self) -> Result<(), ApiError> {
        if self.sampling.has_tools() {
            return Err(ApiError::invalid("tools", "tools are for /v1/chat/completions"));
        }
        Ok(())
    }

    /// The single prompt, as text and token pieces (ids checked against
    /// the vocabulary when it is tokenized).
    pub fn prompt(&self) -> Result<Vec<PromptPiece>, ApiError> {
        use serde_json::Value;
        let one = |v: &Value| -> Result<Vec<PromptPiece>, ApiError> {
            let piece = |p: &Value| match p {
                Value::String(s) => Ok(PromptPiece::Text(s.clone())),
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .map(PromptPiece::Token)
                    .ok_or_else(|| ApiError::invalid("prompt", format!("{n} is not a token id"))),
                _ => Err(ApiError::invalid("prompt", "a prompt is a string, token ids, or a list mixing the two")),
            };
            match v {
                Value::Array(parts) => parts.iter().map(piece).collect(),
                other => Ok(vec![piece(other)?]),
            }
        };
        let pieces = match &self.prompt {
            serde_json::Value::Array(items) if items.len() == 1 && matches!(items[0], Value::String(_) | Value::Array(_)) => one(&items[0])?,
            serde_json::Value::Array(items) if items.iter().any(Value::is_array) || (items.len() > 1 && items.iter().all(Value::is_string)) => {
                return Err(ApiError::invalid("prompt", "send one prompt per request"))
            }
            v => one(v)?,
        };
        if pieces.iter().all(|p| matches!(p, PromptPiece::Text(t) if t.is_empty())) {
            return Err(ApiError::invalid("prompt", "prompt must not be empty"));
        }
        Ok(pieces)
    }

    /// Alternatives per token, checked.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            Some(k) if k > MAX_TOP_LOGPROBS => Err(ApiError::invalid("logprobs", format!("logprobs must be at most {MAX_TOP_LOGPROBS}"))),
            k => Ok(k),
        }
    }
}

/// One piece of a text-completion prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptPiece {
    /// Text, tokenized (control-token texts count: the client writes the
    /// whole prompt).
    Text(String),
    /// A token id, used as it is.
    Token(u32),
}

/// Parses and checks a request body as the endpoint's handler does, without
/// an engine: every field rule, for a model of `n_vocab` tokens whose
/// sequences may reach `max_seq_len`. For fuzzing and tests; any input must
/// give `Ok` or an error, never a panic.
pub fn check_body(chat: bool, body: &[u8], n_vocab: usize, max_seq_len: usize) -> Result<(), ApiError> {
    let sampling = if chat {
        let req: ChatRequest = crate::parse(body)?;
        req.messages()?;
        req.logprobs()?;
        req.tools()?;
        req.sampling
    } else {
        let req: CompletionRequest = crate::parse(body)?;
        req.check_no_tools()?;
        req.prompt()?;
        req.logprobs()?;
        req.sampling
    };
    sampling.check(&SamplingDefaults::default(), max_seq_len, n_vocab)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::check_body;

    /// Field values a careless or hostile client sends.
    fn odd_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            Just(json!(-1)),
            Just(json!(0)),
            Just(json!(1e38)),
            Just(json!(-1e308)),
            Just(json!(1_000_000_000_000_i64)),
            Just(json!(u64::MAX)),
            Just(json!("")),
            Just(json!("<|im_start|>")),
            Just(json!([])),
            Just(json!({})),
            Just(json!({"49152": 5, "x": 1})),
            Just(json!([{"role": "user"}])),
            Just(json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])),
            Just(json!([{"type": "function", "function": {"name": ""}}])),
            Just(json!({"type": "function", "function": {"name": "f"}})),
            Just(json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}})),
            Just(json!({"type": "json_object"})),
            Just(json!("required")),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            ".{0,8}".prop_map(|s| json!(s)),
        ]
    }

    const FIELDS: [&str; 31] = [
        "messages",
        "prompt",
        "model",
        "stream",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "context_overflow",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "grammar",
        "regex",
        "json_schema",
        "chat_template_kwargs",
        "reasoning_budget",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any mix of odd fields parses or is refused with a 4xx; nothing panics.
        #[test]
        fn any_body_is_accepted_or_refused_cleanly(
            fields in proptest::collection::vec((0..FIELDS.len(), odd_value()), 0..8),
            chat in any::<bool>(),
        ) {
            let mut body = if chat {
                json!({"messages": [{"role": "user", "content": "hi"}]})
            } else {
                json!({"prompt": "hi"})
            };
            for (i, v) in fields {
                body[FIELDS[i]] = v;
            }
            let bytes = serde_json::to_vec(&body).unwrap();
            if let Err(e) = check_body(chat, &bytes, 49152, 4096) {
                prop_assert!(e.status.is_client_error(), "{body}: {e:?}");
            }
        }

        /// Arbitrary bytes: never a panic.
        #[test]
        fn any_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256), chat in any::<bool>()) {
            let _ = check_body(chat, &bytes, 49152, 4096);
        }
    }
}
