//! The two generation endpoints: build the prompt, submit `n` sequences,
//! then either collect their events into one reply or stream them as SSE.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, SelectAll, Stream, StreamExt};
use hearth_core::{SeqId, TokenId};
use hearth_engine::batching::{Event, GenRequest, Usage};
use hearth_engine::handle::{EngineHandle, Submitted};
use hearth_engine::constraint::{after_thinking, tool_call_constraint};
use hearth_engine::{Constraint, FinishReason};
use hearth_text::reasoning::{split_reasoning, PromptEnd, ReasoningSplitter};
use hearth_text::{ChatExtras, Message, ToolChoice, ToolFormat, ToolSpec};
use serde_json::json;
use hearth_sampling::SamplingParams;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::dto::{ChatRequest, Checked, CompletionRequest, PromptPiece, Sampling};
use crate::error::ApiError;
use crate::format::{logprobs_json, unique_id, ChoiceText, Endpoint, Envelope};
use crate::route::with_route_headers;
use crate::{parse, prompt, AppState, Served};
use hearth_engine::router::RequestTraits;

pub async fn chat(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&body)?;
    let state = Arc::new(app.served_for(req.sampling.model_asked(), || chat_traits(&req)).await?.with_lora(req.sampling.lora.as_ref())?);
    let (logprobs, mut checked) = (req.logprobs()?, check(&state, &req.sampling)?);
    let PreparedChat { prompt, forced, calls } = prepare_chat(&state, &req).await?;
    let session = state.engine.session();
    // A reasoning model thinks first: thoughts are free (up to the budget),
    // and only the answer is held to the format or the forced call.
    let thinking = session.template.thinks().then(|| {
        let tail = &prompt[prompt.len().saturating_sub(8)..];
        PromptEnd::of(&session.tokenizer.decode_with_control(tail))
    });
    let constraint = forced.or(checked.constraint.take());
    checked.constraint = match (thinking, constraint) {
        (Some(end), c) if end != PromptEnd::AfterThoughts && (c.is_some() || req.reasoning_budget.is_some()) => {
            let (c, param) = c.unwrap_or((Constraint::Regex("(?s:.*)".into()), "reasoning_budget"));
            Some((after_thinking(&c, end, req.reasoning_budget), param))
        }
        (_, c) => c,
    };
    let shape = ReplyShape { tools: calls, thinking };
    let reply = run(&state, Endpoint::Chat, &req.sampling, checked, prompt, logprobs, None, shape).await?;
    Ok(with_route_headers(&state, reply))
}

/// What the triage router reads of a chat.
fn chat_traits(req: &ChatRequest) -> Result<RequestTraits, ApiError> {
    let messages = req.messages()?;
    let text = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
    let question = messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()).unwrap_or_default();
    Ok(RequestTraits { text, question, tools: req.tools()?.active(), json: req.sampling.constraint()?.is_some() })
}

/// What the chat template renders for `messages` with `shown` tools: the
/// tools go to a template that knows them, else into Hearth's tool prompt
/// (`format` generic), with the request's template variables.
pub(crate) fn template_input(
    messages: &[Message],
    shown: &[ToolSpec],
    format: ToolFormat,
    kwargs: &serde_json::Map<String, serde_json::Value>,
    ending: hearth_text::ChatEnding,
) -> (Vec<Message>, ChatExtras) {
    let extras = ChatExtras {
        tools: (!shown.is_empty() && format != ToolFormat::Generic)
            .then(|| serde_json::Value::Array(shown.iter().map(ToolSpec::to_openai).collect())),
        kwargs: kwargs.clone(),
        ending,
    };
    (hearth_text::tools::prepare_messages(messages, shown, format), extras)
}

/// A chat's prompt and what its tools ask of the reply.
pub(crate) struct PreparedChat {
    /// Prompt tokens (template, tools and all).
    pub prompt: Vec<TokenId>,
    /// The constraint that forces a call (required or named), and its field.
    forced: Option<(Constraint, &'static str)>,
    /// Calls to look for in the reply (tools offered).
    calls: Option<ToolReply>,
}

/// Checks a chat's messages and tools and renders its prompt: what both
/// generation and token counting (Anthropic's `count_tokens`) need.
pub(crate) async fn prepare_chat(state: &Served, req: &ChatRequest) -> Result<PreparedChat, ApiError> {
    let messages = req.messages()?;
    let tools = req.tools()?;
    let session = state.engine.session();
    let format = ToolFormat::of(&session.template);
    let shown: &[ToolSpec] = if tools.active() { &tools.specs } else { &[] };
    // What forces a call (required or named). Tool definitions are checked
    // by compiling that grammar whatever the choice: a malformed schema is a
    // 400 now, not a surprise when a later request requires a call.
    let mut forced: Option<(Constraint, &'static str)> = None;
    if tools.active() {
        let any_call = tool_call_constraint(&tools.specs, &ToolChoice::Required, tools.parallel, format)
            .ok_or_else(|| ApiError::internal("no grammar for the tools"))?;
        forced = match &tools.choice {
            ToolChoice::Named(_) => tool_call_constraint(&tools.specs, &tools.choice, tools.parallel, format)
                .map(|c| (c, "tool_choice")),
            ToolChoice::Required => Some((any_call, "tools")),
            _ => {
                prompt::guide(state, any_call, "tools").await?;
                None
            }
        };
    }
    let (messages, extras) = template_input(&messages, shown, format, &req.chat_template_kwargs, req.ending()?);
    let prompt = prompt::chat(state, messages, extras, req.sampling.context_overflow).await?;
    let calls = tools.active().then(|| ToolReply { specs: Arc::new(tools.specs), format });
    Ok(PreparedChat { prompt, forced, calls })
}

/// `POST /v1/chat/completions/input_tokens`: the prompt tokens a chat
/// request would run with (template, tools and all), without running it.
pub async fn input_tokens(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&body)?;
    let state = app.served(req.sampling.model_asked()).await?;
    let prepared = prepare_chat(&state, &req).await?;
    Ok(Json(json!({"object": "response.input_tokens", "input_tokens": prepared.prompt.len()})).into_response())
}

pub async fn completions(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body)?;
    let state = Arc::new(
        app.served_for(req.sampling.model_asked(), || completion_traits(&req)).await?.with_lora(req.sampling.lora.as_ref())?,
    );
    req.check_no_tools()?;
    let pieces = req.prompt()?;
    let (logprobs, checked) = (req.logprobs()?, check(&state, &req.sampling)?);
    // The prompt as sent (token pieces as their text).
    let echo = req.echo.then(|| PromptPiece::text_of(&pieces, &state.engine.session().tokenizer));
    let prompt = prompt::pieces(&state, pieces).await?;
    let reply = run(&state, Endpoint::Text, &req.sampling, checked, prompt, logprobs, echo, ReplyShape::default()).await?;
    Ok(with_route_headers(&state, reply))
}

/// What the triage router reads of a text completion: its prompt's text.
fn completion_traits(req: &CompletionRequest) -> Result<RequestTraits, ApiError> {
    let text: String = req
        .prompt()?
        .iter()
        .filter_map(|p| if let PromptPiece::Text(t) = p { Some(t.as_str()) } else { None })
        .collect();
    Ok(RequestTraits { question: text.clone(), text, tools: false, json: req.sampling.constraint()?.is_some() })
}

/// How a chat reply is taken apart before it goes out.
#[derive(Clone, Default)]
struct ReplyShape {
    /// Calls to find (tools offered).
    tools: Option<ToolReply>,
    /// Thoughts to split off (`reasoning_content`), and where the prompt left them.
    thinking: Option<PromptEnd>,
}

impl ReplyShape {
    /// A whole reply's thoughts, text and calls.
    fn split(&self, text: &str) -> (Option<String>, String, Vec<serde_json::Value>) {
        let (reasoning, answer) = match self.thinking {
            Some(end) => split_reasoning(text, end),
            None => (None, text.to_owned()),
        };
        let (content, calls) = match &self.tools {
            Some(t) => t.split(&answer),
            None => (answer, Vec::new()),
        };
        (reasoning, content, calls)
    }
}

/// How to find tool calls in a chat's reply.
#[derive(Clone)]
struct ToolReply {
    specs: Arc<Vec<ToolSpec>>,
    format: ToolFormat,
}

impl ToolReply {
    /// `text` split into content and OpenAI-shaped calls (fresh ids).
    fn split(&self, text: &str) -> (String, Vec<serde_json::Value>) {
        let parsed = hearth_text::tools::parse_reply(text, self.format, &self.specs);
        let calls = parsed
            .calls
            .into_iter()
            .map(|(name, args)| {
                json!({"id": unique_id("call"), "type": "function", "function": {"name": name, "arguments": args.to_string()}})
            })
            .collect();
        (parsed.content.unwrap_or_default(), calls)
    }
}


fn check(state: &Served, sampling: &Sampling) -> Result<Checked, ApiError> {
    let n_vocab = state.engine.session().model.config().n_vocab;
    sampling.check(&state.defaults, state.engine.limits().max_seq_len(), n_vocab)
}

async fn run(
    state: &Arc<Served>,
    endpoint: Endpoint,
    sampling: &Sampling,
    checked: Checked,
    prompt: Vec<TokenId>,
    logprobs: Option<usize>,
    echo: Option<String>,
    shape: ReplyShape,
) -> Result<Response, ApiError> {
    let Checked { mut params, choices: n, constraint } = checked;
    let guide = match constraint {
        Some((c, param)) => Some(prompt::guide(state, c, param).await?),
        None => None,
    };
    if !sampling.sets_max_tokens() {
        // The server's default, within the rest of the sequence's room (the
        // prompt fits, so at least 1).
        let room = state.engine.limits().max_seq_len().saturating_sub(prompt.len()).max(1);
        params.max_tokens = state.defaults.max_tokens.map_or(room, |n| n.clamp(1, room));
    }
    let prompt_len = prompt.len();
    let mut subs = Vec::with_capacity(n);
    let mut guard = AbortGuard { engine: state.engine.clone(), ids: Vec::new() };
    for i in 0..n {
        // Each choice samples with its own seed so n > 1 gives different replies.
        let p = SamplingParams { seed: params.seed.wrapping_add(i as u64), ..params.clone() };
        let req = GenRequest {
            prompt: prompt.clone(),
            params: p,
            logprobs,
            ignore_eos: sampling.ignore_eos,
            guide: guide.clone(),
            adapter: state.adapter.clone(),
        };
        let sub = state.engine.submit(req).await.map_err(ApiError::from)?;
        guard.ids.push(sub.id);
        subs.push(sub);
    }
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let env = Envelope {
        endpoint,
        id: format!("{prefix}-{created:x}{:x}", guard.ids[0].0),
        created,
        model: state.model_name.clone(),
        token_ids: sampling.return_tokens_as_token_ids,
    };
    if sampling.stream {
        let usage = StreamUsage { last: sampling.include_usage(), continuous: sampling.continuous_usage().then_some(prompt_len) };
        Ok(stream_reply(state, env, subs, guard, usage, echo.as_deref(), shape).into_response())
    } else {
        collect_reply(state, &env, subs, echo, &shape).await
    }
}

/// Aborts its sequences when dropped: a client that leaves mid-request
/// frees its KV blocks at once. Finished sequences make this a no-op.
struct AbortGuard {
    engine: EngineHandle,
    ids: Vec<SeqId>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        for &id in &self.ids {
            self.engine.abort(id);
        }
    }
}

async fn collect_reply(
    state: &Served,
    env: &Envelope,
    subs: Vec<Submitted>,
    echo: Option<String>,
    shape: &ReplyShape,
) -> Result<Response, ApiError> {
    let mut choices = Vec::with_capacity(subs.len());
    let mut usage = Usage::default();
    for mut sub in subs {
        let text = echo.clone().unwrap_or_default();
        let mut c = ChoiceText { echo_len: text.len(), text, ..ChoiceText::default() };
        while let Some(event) = sub.events.recv().await {
            match event {
                Event::Token { token, text, logprob } => {
                    c.text.push_str(&text);
                    if let Some(lp) = logprob {
                        c.logprobs.push((token, lp));
                    }
                }
                Event::Done { text, finish, stop_string, usage: u } => {
                    c.text.push_str(&text);
                    c.finish = Some(finish);
                    c.stop_string = stop_string;
                    usage = add_usage(usage, u);
                }
                Event::Error(why) => return Err(ApiError::internal(why)),
            }
        }
        if c.finish.is_none() {
            return Err(ApiError::internal("the engine ended the request without an answer"));
        }
        if shape.tools.is_some() || shape.thinking.is_some() {
            (c.reasoning, c.text, c.tool_calls) = shape.split(&c.text);
        }
        choices.push(c);
    }
    Ok(Json(env.reply(&state.engine.session().tokenizer, &choices, &usage)).into_response())
}

/// Usage of several choices of one prompt: the prompt counts once.
fn add_usage(total: Usage, u: Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: total.completion_tokens + u.completion_tokens,
        cached_tokens: total.cached_tokens.max(u.cached_tokens),
    }
}

type Tagged = stream::BoxStream<'static, (usize, Event)>;

struct StreamState {
    state: Arc<Served>,
    env: Envelope,
    merged: SelectAll<Tagged>,
    pending: VecDeque<SseEvent>,
    usage: Usage,
    include_usage: bool,
    done: bool,
    /// With tools: per choice, the text held back because it is (or may
    /// become) a call; calls go out whole when the choice ends.
    tools: Option<(ToolReply, Vec<String>)>,
    /// With a reasoning model: per choice, thoughts apart from the answer.
    thoughts: Option<Vec<ReasoningSplitter>>,
    /// vLLM's `continuous_usage_stats`: every chunk carries the counts so
    /// far (the prompt's length, tokens generated).
    continuous: Option<usize>,
    /// Tokens generated so far, all choices.
    generated: usize,
    /// Per choice, where the next token's text begins in the choice's text
    /// (legacy logprobs' `text_offset`; the echoed prompt comes first).
    text_offsets: Vec<usize>,
    _guard: AbortGuard,
}

fn events_of(index: usize, rx: UnboundedReceiver<Event>) -> Tagged {
    stream::unfold(rx, move |mut rx| async move { rx.recv().await.map(|e| ((index, e), rx)) }).boxed()
}

/// How a streamed reply reports usage.
#[derive(Clone, Copy)]
struct StreamUsage {
    /// A last chunk with the totals.
    last: bool,
    /// Counts on every chunk, with the prompt's length.
    continuous: Option<usize>,
}

fn stream_reply(
    state: &Arc<Served>,
    env: Envelope,
    subs: Vec<Submitted>,
    guard: AbortGuard,
    usage: StreamUsage,
    echo: Option<&str>,
    shape: ReplyShape,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let tools = shape.tools.map(|t| (t, vec![String::new(); subs.len()]));
    let thoughts = shape.thinking.map(|end| vec![ReasoningSplitter::new(end); subs.len()]);
    let choices = subs.len();
    let merged = stream::select_all(subs.into_iter().enumerate().map(|(i, s)| events_of(i, s.events)));
    let mut st = StreamState {
        state: Arc::clone(state),
        env,
        merged,
        pending: VecDeque::new(),
        usage: Usage::default(),
        include_usage: usage.last,
        done: false,
        tools,
        thoughts,
        continuous: usage.continuous,
        generated: 0,
        text_offsets: vec![echo.map_or(0, str::len); choices],
        _guard: guard,
    };
    for i in 0..choices {
        match (&st.env.endpoint, echo) {
            (Endpoint::Chat, _) => st.push(st.env.role_chunk(i)),
            (Endpoint::Text, Some(text)) => st.push(st.env.chunk(i, text, None, None)),
            (Endpoint::Text, None) => {}
        }
    }
    let body = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            if let Some((i, event)) = st.merged.next().await {
                st.on_event(i, event);
            } else {
                if st.include_usage {
                    let chunk = st.env.usage_chunk(&st.usage);
                    st.pending.push_back(data(&chunk));
                }
                st.pending.push_back(SseEvent::default().data("[DONE]"));
                st.done = true;
            }
        }
    });
    Sse::new(body).keep_alive(KeepAlive::default())
}

impl StreamState {
    /// Queues `chunk`, with the counts so far when they go on every chunk.
    fn push(&mut self, mut chunk: serde_json::Value) {
        if let Some(prompt) = self.continuous {
            chunk["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": self.generated, "total_tokens": prompt + self.generated});
        }
        self.pending.push_back(data(&chunk));
    }

    /// Sends the thoughts in `text` (choice `i`) as `reasoning_content`
    /// chunks; returns the answer text. `last`: the choice is ending.
    fn split_thoughts(&mut self, i: usize, text: &str, last: bool) -> String {
        let Some(splitters) = &mut self.thoughts else { return text.to_owned() };
        let (mut thoughts, mut answer) = splitters[i].push(text);
        if last {
            let (t, a) = splitters[i].finish();
            thoughts.push_str(&t);
            answer.push_str(&a);
        }
        if !thoughts.is_empty() {
            self.push(self.env.reasoning_chunk(i, &thoughts));
        }
        answer
    }

    fn on_event(&mut self, i: usize, event: Event) {
        let tok = &self.state.engine.session().tokenizer;
        match event {
            Event::Token { token, text, logprob } => {
                self.generated += 1;
                let offset = self.text_offsets[i];
                self.text_offsets[i] += tok.token_bytes(token).len();
                let lp = logprob.map(|lp| logprobs_json(self.env.endpoint, tok, &[(token, lp)], offset, self.env.token_ids));
                let text = self.split_thoughts(i, &text, false);
                let text = match &mut self.tools {
                    Some((t, held)) => {
                        held[i].push_str(&text);
                        let cut = hearth_text::tools::safe_prefix(&held[i], t.format);
                        held[i].drain(..cut).collect()
                    }
                    None => text,
                };
                if !text.is_empty() || lp.is_some() {
                    self.push(self.env.chunk(i, &text, lp, None));
                }
            }
            Event::Done { text, finish, stop_string, usage } => {
                let text = self.split_thoughts(i, &text, true);
                let (text, calls) = match &mut self.tools {
                    Some((t, held)) => {
                        let rest = std::mem::take(&mut held[i]) + &text;
                        t.split(&rest)
                    }
                    None => (text, Vec::new()),
                };
                if !text.is_empty() {
                    self.push(self.env.chunk(i, &text, None, None));
                }
                if !calls.is_empty() {
                    self.push(self.env.tool_calls_chunk(i, &calls));
                }
                if calls.is_empty() || finish != FinishReason::Stop {
                    let mut last = self.env.chunk(i, "", None, Some(finish));
                    last["choices"][0]["stop_reason"] = json!(stop_string);
                    self.push(last);
                } else {
                    self.push(self.env.tool_calls_finish_chunk(i));
                }
                self.usage = add_usage(self.usage, usage);
            }
            Event::Error(why) => {
                self.pending.push_back(data(&ApiError::internal(why).body()));
            }
        }
    }
}

fn data(v: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}
