//! The serving engine: one scheduler, one KV pool, one batched forward per
//! step over every running sequence (decodes and prompt chunks together).
//! `hearth run` is the batch of one through the same code, so a reply does
//! not depend on how many others are being served.
//!
//! Each request streams [`Event`]s into its [`EventSink`]; a sink that
//! reports its receiver gone ends the request at once and frees its blocks.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use hearth_constrain::{Guide, Progress};
use hearth_core::{ForwardBatch, KvType, SeqId, TokenId};
use hearth_kv::{BlockHash, KvCacheManager};
use hearth_models::lora::{ActiveAdapters, LoraAdapter};
use hearth_models::KvStore;
use hearth_sampling::{Sampler, SamplingParams, StopMatcher};
pub use hearth_sched::{AddError, SeqLimits};
use hearth_sched::{Outcome, Request, Scheduler, SchedulerConfig, StepPlan};
use hearth_text::IncrementalDecoder;

use crate::metrics::Metrics;
use crate::{EngineError, FinishReason, LoadedModel};

/// Sizes of the serving engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sequences computed together at most.
    pub parallel: usize,
    /// Tokens per forward pass at most (decodes plus prompt chunks).
    pub token_budget: usize,
    /// Requests allowed to wait for a slot.
    pub max_waiting: usize,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Blocks in the KV pool.
    pub kv_blocks: usize,
    /// Positions one sequence may reach.
    pub n_ctx: usize,
}

impl EngineConfig {
    /// Tokens per KV block (vLLM's default: small blocks waste little at the
    /// end of each sequence and share prefixes finely).
    pub const BLOCK_SIZE: usize = 16;
    /// Tokens per forward pass at most: bounds scratch memory and keeps
    /// decode latency steady while long prompts are chunked in.
    pub const TOKEN_BUDGET: usize = 512;

    /// One sequence of `n_ctx` positions (what `hearth run` needs).
    #[must_use]
    pub fn single(n_ctx: usize) -> Self {
        Self {
            parallel: 1,
            token_budget: Self::TOKEN_BUDGET,
            max_waiting: 1,
            kv_type: KvType::F16,
            block_size: Self::BLOCK_SIZE,
            kv_blocks: n_ctx.div_ceil(Self::BLOCK_SIZE),
            n_ctx,
        }
    }

    /// The same with KV cache elements of `kv_type`.
    #[must_use]
    pub fn with_kv_type(self, kv_type: KvType) -> Self {
        Self { kv_type, ..self }
    }
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Prompt tokens (not empty).
    pub prompt: Vec<TokenId>,
    /// Sampling, `max_tokens`, stop strings, seed.
    pub params: SamplingParams,
    /// Report log-probabilities with this many alternatives (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// Keep going past end-of-generation tokens (benchmarks). A constrained
    /// request still ends where its grammar is complete.
    pub ignore_eos: bool,
    /// What the output must match (from [`LoadedModel::guide`]), if anything.
    pub guide: Option<Guide>,
    /// The LoRA adapter (from [`LoadedModel::adapter`]) and its scale, if any.
    pub adapter: Option<(Arc<LoraAdapter>, f32)>,
}

impl GenRequest {
    /// A request for `prompt` sampled with `params`: no logprobs, no constraint.
    #[must_use]
    pub fn new(prompt: Vec<TokenId>, params: SamplingParams) -> Self {
        Self { prompt, params, logprobs: None, ignore_eos: false, guide: None, adapter: None }
    }
}

/// Log-probability of a sampled token and its best alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's log-probability under the model.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first.
    pub top: Vec<(TokenId, f32)>,
}

/// Token and prompt counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// What a request's stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sampled token and the text it completed (may be empty while a
    /// UTF-8 character or a possible stop string is incomplete).
    Token {
        /// The token.
        token: TokenId,
        /// Finished text.
        text: String,
        /// Present when requested.
        logprob: Option<TokenLogprob>,
    },
    /// The end: trailing text, why, and the counts.
    Done {
        /// Text held back until the end (incomplete UTF-8, stop-string prefixes).
        text: String,
        /// Why it ended.
        finish: FinishReason,
        /// The stop string that ended it, if one did (`finish` is then `Stop`).
        stop_string: Option<String>,
        /// Counts.
        usage: Usage,
    },
    /// The request failed inside the engine; nothing more follows.
    Error(String),
}

/// Where a request's events go. Returns false when nobody listens any more.
pub type EventSink = Box<dyn FnMut(Event) -> bool + Send>;

struct Active {
    adapter: Option<(Arc<LoraAdapter>, f32)>,
    sampler: Sampler,
    guide: Option<Guide>,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    max_tokens: usize,
    logprobs: Option<usize>,
    ignore_eos: bool,
    prompt_len: usize,
    generated: usize,
    cached: Option<usize>,
    sink: EventSink,
    submitted: Instant,
    last_token: Option<Instant>,
}

/// The step loop's state, over a borrowed model.
pub struct Engine<'s> {
    session: &'s LoadedModel,
    store: KvStore,
    sched: Scheduler,
    active: HashMap<SeqId, Active>,
    next_id: u32,
    metrics: Arc<Metrics>,
}

impl<'s> Engine<'s> {
    /// An engine over `session` with a KV pool of `config.kv_blocks` blocks.
    pub fn new(session: &'s LoadedModel, config: EngineConfig, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let store = KvStore::new(session.model.config(), config.kv_type, config.block_size, config.kv_blocks)?;
        let sched = Scheduler::new(
            SchedulerConfig {
                max_running: config.parallel.max(1),
                token_budget: config.token_budget.max(1),
                max_waiting: config.max_waiting,
                max_seq_len: config.n_ctx,
            },
            KvCacheManager::new(config.kv_blocks, config.block_size),
        );
        metrics.kv_blocks_total.set(config.kv_blocks as i64);
        let engine = Self { session, store, sched, active: HashMap::new(), next_id: 0, metrics };
        // Gauges are true from the first scrape, before any request.
        engine.update_gauges();
        Ok(engine)
    }

    /// The loaded model.
    #[must_use]
    pub fn session(&self) -> &'s LoadedModel {
        self.session
    }

    /// How long a sequence may grow, and which prompts fit (the scheduler's rule).
    #[must_use]
    pub fn limits(&self) -> SeqLimits {
        self.sched.limits()
    }

    /// The scheduler (queue and pool figures).
    #[must_use]
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// True when no request waits or runs.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.sched.is_idle()
    }

    /// Queues a request; its events go to `sink`.
    pub fn submit(&mut self, req: GenRequest, sink: EventSink) -> Result<SeqId, EngineError> {
        if req.prompt.is_empty() {
            return Err(EngineError::Invalid("empty prompt".into()));
        }
        let vocab = self.session.model.config().n_vocab;
        if let Some(bad) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::Invalid(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        req.params.validate(vocab)?;
        if req.guide.is_some() && !req.params.stop.is_empty() {
            // A stop string could cut the output where the grammar does not
            // allow an end: the grammar alone decides where it ends.
            return Err(EngineError::Invalid(
                "stop strings cannot be combined with a response format or grammar (it decides where the output ends)"
                    .into(),
            ));
        }
        let id = SeqId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let prompt_len = req.prompt.len();
        let sampler = Sampler::new(req.params.clone(), &req.prompt);
        if let Some((_, scale)) = &req.adapter {
            if !scale.is_finite() {
                return Err(EngineError::Invalid(format!("adapter scale {scale} is not a finite number")));
            }
        }
        // An adapter's KV is its own: its blocks are hashed from a root of
        // the adapter and its scale, so nobody else's prefix matches them.
        let prefix_root = req.adapter.as_ref().map(|(a, scale)| {
            BlockHash::root(&[a.id.to_le_bytes(), u64::from(scale.to_bits()).to_le_bytes()].concat())
        });
        self.sched.add(Request { id, prompt: req.prompt, prefix_root }).map_err(EngineError::from)?;
        self.active.insert(
            id,
            Active {
                adapter: req.adapter,
                sampler,
                guide: req.guide,
                decoder: IncrementalDecoder::new(),
                stops: StopMatcher::new(&req.params.stop),
                max_tokens: req.params.max_tokens,
                logprobs: req.logprobs,
                ignore_eos: req.ignore_eos,
                prompt_len,
                generated: 0,
                cached: None,
                sink,
                submitted: Instant::now(),
                last_token: None,
            },
        );
        self.update_gauges();
        Ok(id)
    }

    /// Ends a request now (its client left); no more events are sent.
    pub fn abort(&mut self, id: SeqId) {
        if self.active.remove(&id).is_some() {
            self.sched.abort(id);
            self.metrics.finished("abort");
            self.update_gauges();
        }
    }

    /// Runs one step: schedule, one forward pass, sample, stream. Returns
    /// the tokens computed (0 when there was nothing to do).
    pub fn step(&mut self) -> usize {
        let plan = self.sched.schedule();
        self.metrics.preemptions.inc_by(plan.preempted.len() as u64);
        for &id in &plan.out_of_memory {
            self.end(id, FinishReason::Length);
        }
        if plan.scheduled.is_empty() {
            self.update_gauges();
            return 0;
        }
        let batch = self.batch_of(&plan);
        let adapters = self.adapters_of(&plan);
        // Constrained sequences that sample this step get their token masks
        // computed on a second thread while the forward pass runs, so a
        // grammar costs the step (almost) nothing.
        let mut guides: Vec<(SeqId, Guide)> = plan
            .scheduled
            .iter()
            .filter(|s| s.sample)
            .filter_map(|s| Some((s.id, self.active.get_mut(&s.id)?.guide.take()?)))
            .collect();
        let (model, store) = (&self.session.model, &mut self.store);
        let forward = std::thread::scope(|scope| {
            let masks = (!guides.is_empty()).then(|| {
                scope.spawn(|| {
                    for (_, g) in &mut guides {
                        g.prepare();
                    }
                })
            });
            // A failing or panicking forward pass ends the sequences of this
            // step (one of them caused it; which one cannot be known) and
            // nobody else: their blocks were never published, so the prefix
            // cache stays whole.
            let forward = catch_unwind(AssertUnwindSafe(|| model.forward_adapted(&batch, store, &adapters)));
            // A panic while masking leaves the masks to be computed (or
            // fail) again at sampling time, per sequence.
            let _ = masks.map(std::thread::ScopedJoinHandle::join);
            forward
        });
        for (id, g) in guides {
            if let Some(a) = self.active.get_mut(&id) {
                a.guide = Some(g);
            }
        }
        match forward {
            Ok(Ok(mut logits)) => {
                let outcomes = self.sample_all(&plan, &mut logits);
                self.sched.update(&plan, &outcomes);
            }
            Ok(Err(e)) => {
                tracing::error!("forward pass failed: {e}");
                for s in &plan.scheduled {
                    self.fail(s.id, &format!("forward pass failed: {e}"));
                }
            }
            Err(_) => {
                tracing::error!("forward pass panicked; failing the {} sequences of this step", plan.scheduled.len());
                for s in &plan.scheduled {
                    self.fail(s.id, "internal error in the forward pass");
                }
            }
        }
        self.metrics.computed_tokens.inc_by(plan.num_tokens() as u64);
        self.update_gauges();
        plan.num_tokens()
    }

    /// The adapters of the step's sequences, logged with the step: the
    /// bare base and any adapters run in one forward pass.
    fn adapters_of(&self, plan: &StepPlan) -> ActiveAdapters {
        let mut adapters = ActiveAdapters::default();
        for s in &plan.scheduled {
            if let Some((adapter, scale)) = self.active.get(&s.id).and_then(|a| a.adapter.as_ref()) {
                adapters.insert(s.id, Arc::clone(adapter), *scale);
            }
        }
        if !adapters.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
            let each: Vec<String> = plan
                .scheduled
                .iter()
                .map(|s| match adapters.of(s.id) {
                    Some((a, scale)) => format!("{}:{}×{scale}", s.id.0, a.name),
                    None => format!("{}:base", s.id.0),
                })
                .collect();
            tracing::debug!("step: {} tokens, sequences {}", plan.num_tokens(), each.join(" "));
        }
        adapters
    }

    fn batch_of(&mut self, plan: &StepPlan) -> ForwardBatch {
        let mut batch = ForwardBatch::default();
        for s in &plan.scheduled {
            let tokens = self.sched.tokens(s.id).unwrap_or(&[]);
            batch.tokens.extend_from_slice(&tokens[s.start..s.start + s.len]);
            batch.positions.extend(s.start..s.start + s.len);
            batch.seq_ids.extend(std::iter::repeat_n(s.id, s.len));
            if s.sample {
                batch.logit_rows.push(batch.tokens.len() - 1);
            }
            batch.block_tables.insert(s.id, self.sched.table(s.id).to_vec());
            if let Some(a) = self.active.get_mut(&s.id) {
                a.cached.get_or_insert(s.start);
            }
        }
        batch
    }

    /// Samples every sequence that wants a token and streams its events;
    /// returns what became of each, for the scheduler's update.
    fn sample_all(&mut self, plan: &StepPlan, logits: &mut [f32]) -> Vec<(SeqId, Outcome)> {
        let n_vocab = self.session.model.config().n_vocab;
        let mut rows = logits.chunks_exact_mut(n_vocab);
        let mut outcomes = Vec::new();
        for s in plan.scheduled.iter().filter(|s| s.sample) {
            let Some(row) = rows.next() else { break };
            // One sequence's sampling failure ends that sequence only.
            let outcome = catch_unwind(AssertUnwindSafe(|| self.on_logits(s.id, row))).unwrap_or_else(|_| {
                tracing::error!("sampling panicked for sequence {}; ending it", s.id.0);
                self.fail_request(s.id, "internal error while sampling");
                Outcome::Finished
            });
            outcomes.push((s.id, outcome));
        }
        outcomes
    }

    /// Samples the next token of `id` from its logits row (edited in place
    /// by the sampler), streams it, and decides whether the sequence goes on.
    fn on_logits(&mut self, id: SeqId, row: &mut [f32]) -> Outcome {
        let max_len = self.sched.max_seq_len();
        let session = self.session;
        let Some(a) = self.active.get_mut(&id) else { return Outcome::Finished };
        // Log-probabilities are of the model's logits, before penalties and
        // truncation: only then is a copy of the row needed.
        let original = a.logprobs.map(|_| row.to_vec());
        if let Some(guide) = &mut a.guide {
            if let Err(e) = guide.apply(row) {
                self.fail_request(id, &format!("constraint failed: {e}"));
                return Outcome::Finished;
            }
        }
        let token = a.sampler.sample(row);
        let logprob = a.logprobs.zip(original).map(|(k, o)| logprob_of(&o, token, k));
        // The grammar is followed before the token is streamed: a token it
        // refuses (only possible when every allowed logit was NaN) fails the
        // request rather than sending text that does not parse.
        let progress = match a.guide.as_mut().map(|g| g.accept(token)) {
            None => Progress::More,
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                self.fail_request(id, &format!("constraint failed: {e}"));
                return Outcome::Finished;
            }
        };
        let ends_generation = session.tokenizer.is_end_of_generation(token);
        if ends_generation && (!a.ignore_eos || a.guide.is_some()) {
            self.end(id, FinishReason::Stop);
            return Outcome::Finished;
        }
        a.generated += 1;
        let now = Instant::now();
        match a.last_token {
            None => self.metrics.ttft.observe((now - a.submitted).as_secs_f64()),
            Some(t) => self.metrics.itl.observe((now - t).as_secs_f64()),
        }
        a.last_token = Some(now);
        self.metrics.generation_tokens.inc();
        let (text, hit_stop) = a.stops.push(&a.decoder.push(session.tokenizer.token_bytes(token)));
        if !(a.sink)(Event::Token { token, text, logprob }) {
            // The client left: nothing more is sent.
            self.active.remove(&id);
            self.metrics.finished("abort");
            return Outcome::Finished;
        }
        let total = a.prompt_len + a.generated;
        let finish = if hit_stop || progress == Progress::Complete {
            FinishReason::Stop
        } else if a.generated >= a.max_tokens {
            FinishReason::Length
        } else if total >= max_len {
            FinishReason::Context
        } else {
            return Outcome::Continue(token);
        };
        self.end(id, finish);
        Outcome::Finished
    }

    /// Ends request `id` for its client: flushes held-back text and reports
    /// usage. Its blocks are the scheduler's to free (the step's update, or
    /// the scheduler itself for sequences it could not keep).
    fn end(&mut self, id: SeqId, finish: FinishReason) {
        let Some(mut a) = self.active.remove(&id) else { return };
        // After a stop string nothing more is due; otherwise (an end token,
        // a finished grammar, a limit) flush what was held back: an
        // incomplete character, text that might have begun a stop string.
        let stop_string = a.stops.matched().map(str::to_owned);
        let text = if stop_string.is_some() {
            String::new()
        } else {
            let (tail, _) = a.stops.push(&a.decoder.finish());
            tail + &a.stops.finish()
        };
        let usage =
            Usage { prompt_tokens: a.prompt_len, completion_tokens: a.generated, cached_tokens: a.cached.unwrap_or(0) };
        (a.sink)(Event::Done { text, finish, stop_string, usage });
        self.metrics.finished(finish.as_str());
    }

    /// Fails every request (after an internal error) and frees their blocks.
    pub fn fail_all(&mut self, why: &str) {
        let ids: Vec<SeqId> = self.active.keys().copied().collect();
        for id in ids {
            self.fail(id, why);
        }
    }

    /// Fails `id`: its client gets the error and its blocks are freed now.
    fn fail(&mut self, id: SeqId, why: &str) {
        self.sched.abort(id);
        self.fail_request(id, why);
    }

    /// Tells `id`'s client it failed; nothing more is sent.
    fn fail_request(&mut self, id: SeqId, why: &str) {
        if let Some(mut a) = self.active.remove(&id) {
            (a.sink)(Event::Error(why.to_owned()));
            self.metrics.finished("error");
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        let kv = self.sched.kv();
        m.queue_depth.set(self.sched.num_waiting() as i64);
        m.running.set(self.sched.num_running() as i64);
        m.kv_blocks_used.set(kv.pool().num_used() as i64);
        m.kv_blocks_free.set(kv.pool().num_free() as i64);
        let st = kv.stats();
        m.set_prefix_stats(st.queried_tokens, st.hit_tokens);
    }
}

/// Log-probability of `token` under `row` and the `k` most likely tokens.
fn logprob_of(row: &[f32], token: TokenId, k: usize) -> TokenLogprob {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = row.iter().map(|&l| f64::from(l - max).exp()).sum::<f64>().ln() as f32;
    let lp = |l: f32| l - max - log_sum;
    let mut top: Vec<(TokenId, f32)> = Vec::new();
    if k > 0 {
        let mut all: Vec<(TokenId, f32)> = row.iter().enumerate().map(|(i, &l)| (i as TokenId, l)).collect();
        let k = k.min(all.len());
        all.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        top = all.into_iter().map(|(t, l)| (t, lp(l))).collect();
    }
    TokenLogprob { logprob: lp(row[token as usize]), top }
}
