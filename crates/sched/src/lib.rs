//! The continuous-batching scheduler (vLLM v1's design): every sequence has
//! one counter, `computed`, catching up with its token count. Each step the
//! scheduler picks how many tokens of which sequences to compute under a
//! token budget, so decode tokens and chunks of prompts share one batch.
//!
//! Policy, in order:
//! 1. Running sequences, oldest first, get their next tokens (one for a
//!    decode, a chunk for a prompt). When the KV pool cannot grow one, the
//!    youngest running sequence is preempted: its blocks are freed and it
//!    goes back to the head of the queue to be recomputed later (its full
//!    blocks usually come back from the prefix cache).
//! 2. If nobody was preempted, waiting sequences are admitted first come,
//!    first served while the budget, the running limit and the pool allow.
//!    A sequence is admitted only when its whole prompt fits in the pool
//!    (after prefix-cache hits), keeping one spare block per running
//!    sequence so admitted work is not preempted at once.
//!
//! Pure logic: no tensors, no model; tests run in microseconds.

use std::collections::VecDeque;

use hearth_core::{BlockId, SeqId, TokenId};
use hearth_kv::{BlockHash, KvCacheManager};

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences computed together at most (`--parallel`).
    pub max_running: usize,
    /// Tokens computed per step at most (decodes plus prompt chunks).
    pub token_budget: usize,
    /// Sequences allowed to wait; more are refused.
    pub max_waiting: usize,
    /// Positions one sequence may reach (the context size).
    pub max_seq_len: usize,
}

/// How long a sequence may grow: the one rule for "does this prompt fit?",
/// which the scheduler applies when a request arrives and callers may ask
/// before they queue one (to truncate a chat, or to refuse early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqLimits {
    /// Positions one sequence may reach by configuration (the context size).
    pub context: usize,
    /// Tokens the whole KV pool holds.
    pub pool_tokens: usize,
}

impl SeqLimits {
    /// Positions a sequence can reach: the context, or the pool if smaller
    /// (so one sequence alone always fits).
    #[must_use]
    pub fn max_seq_len(&self) -> usize {
        self.context.min(self.pool_tokens)
    }

    /// Whether a prompt of `prompt` tokens can ever run: it must leave at
    /// least one position to generate into, in the context and in the pool.
    pub fn check_prompt(&self, prompt: usize) -> Result<(), AddError> {
        if prompt >= self.context {
            return Err(AddError::PromptTooLong { prompt, limit: self.context });
        }
        if prompt >= self.pool_tokens {
            return Err(AddError::ExceedsKvPool { prompt, capacity: self.pool_tokens });
        }
        Ok(())
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The queue is full; try again later.
    #[error("server busy: {waiting} requests already waiting")]
    QueueFull {
        /// Requests waiting.
        waiting: usize,
    },
    /// The prompt leaves no room to generate in the context.
    #[error(
        "prompt of {prompt} tokens does not fit the context of {limit} tokens (at least one must be left to generate)"
    )]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        limit: usize,
    },
    /// The prompt needs more KV blocks than the whole pool has.
    #[error("prompt of {prompt} tokens needs more KV cache than the server has ({capacity} tokens)")]
    ExceedsKvPool {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens the pool holds.
        capacity: usize,
    },
    /// The id is already in use.
    #[error("sequence {0} is already scheduled")]
    Duplicate(u32),
}

/// What became of a sequence that sampled this step, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It goes on with this sampled token (computed next step).
    Continue(TokenId),
    /// It ended (a stop, its limit, its client gone, a failure): free it.
    Finished,
}

/// A request to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Caller-chosen unique id.
    pub id: SeqId,
    /// Prompt tokens (not empty).
    pub prompt: Vec<TokenId>,
    /// Where its prefix hashes start (`None`: from the tokens alone): a
    /// sequence whose KV depends on more than its tokens (a LoRA adapter)
    /// shares cached blocks only with sequences of the same root.
    pub prefix_root: Option<BlockHash>,
}

/// Tokens of one sequence to compute this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// The sequence.
    pub id: SeqId,
    /// Position of the first token computed.
    pub start: usize,
    /// Tokens computed.
    pub len: usize,
    /// Whether this reaches the sequence's last token, so its logits are
    /// needed to sample the next one.
    pub sample: bool,
}

/// What one step computes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Work of the step, in batch order.
    pub scheduled: Vec<Scheduled>,
    /// Sequences moved back to the queue this step (their KV was freed).
    pub preempted: Vec<SeqId>,
    /// Sequences that cannot continue even alone in the pool; the caller
    /// must end them (their blocks were freed).
    pub out_of_memory: Vec<SeqId>,
}

impl StepPlan {
    /// Tokens computed by the step.
    #[must_use]
    pub fn num_tokens(&self) -> usize {
        self.scheduled.iter().map(|s| s.len).sum()
    }
}

#[derive(Debug)]
struct Seq {
    id: SeqId,
    prefix_root: Option<BlockHash>,
    tokens: Vec<TokenId>,
    computed: usize,
    preemptions: u32,
}

/// Waiting and running sequences over a [`KvCacheManager`].
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
}

impl Scheduler {
    /// A scheduler over the blocks of `kv`.
    #[must_use]
    pub fn new(config: SchedulerConfig, kv: KvCacheManager) -> Self {
        Self { config, kv, waiting: VecDeque::new(), running: Vec::new() }
    }

    /// The limits.
    #[must_use]
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Block bookkeeping (usage and prefix-cache figures).
    #[must_use]
    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    /// How long a sequence may grow, and which prompts fit.
    #[must_use]
    pub fn limits(&self) -> SeqLimits {
        SeqLimits { context: self.config.max_seq_len, pool_tokens: self.kv.pool().len() * self.kv.block_size() }
    }

    /// Positions a sequence can reach: the context, or the pool if smaller.
    #[must_use]
    pub fn max_seq_len(&self) -> usize {
        self.limits().max_seq_len()
    }

    /// Sequences waiting.
    #[must_use]
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences running.
    #[must_use]
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// True when nothing waits or runs.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Queues a request. Refuses prompts that can never run and, when the
    /// queue is full, new work.
    pub fn add(&mut self, req: Request) -> Result<(), AddError> {
        self.limits().check_prompt(req.prompt.len())?;
        if self.find(req.id).is_some() {
            return Err(AddError::Duplicate(req.id.0));
        }
        if self.waiting.len() >= self.config.max_waiting {
            return Err(AddError::QueueFull { waiting: self.waiting.len() });
        }
        self.waiting.push_back(Seq {
            id: req.id,
            prefix_root: req.prefix_root,
            tokens: req.prompt,
            computed: 0,
            preemptions: 0,
        });
        Ok(())
    }

    /// Removes a sequence wherever it is and frees its blocks. Returns
    /// whether it was known.
    pub fn abort(&mut self, id: SeqId) -> bool {
        self.kv.free(id);
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(i);
            return true;
        }
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i);
            return true;
        }
        false
    }

    /// All tokens of a sequence (prompt, then sampled ones).
    #[must_use]
    pub fn tokens(&self, id: SeqId) -> Option<&[TokenId]> {
        self.find(id).map(|s| s.tokens.as_slice())
    }

    /// Block table of a running sequence.
    #[must_use]
    pub fn table(&self, id: SeqId) -> &[BlockId] {
        self.kv.table(id)
    }

    /// Times `id` was preempted.
    #[must_use]
    pub fn preemptions_of(&self, id: SeqId) -> u32 {
        self.find(id).map_or(0, |s| s.preemptions)
    }

    fn find(&self, id: SeqId) -> Option<&Seq> {
        self.running.iter().chain(&self.waiting).find(|s| s.id == id)
    }

    /// Picks the work of the next step.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.token_budget;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let (id, computed, total) = {
                let s = &self.running[i];
                (s.id, s.computed, s.tokens.len())
            };
            let n = (total - computed).min(budget);
            if n == 0 {
                i += 1;
                continue;
            }
            if !self.make_room(i, computed + n, &mut plan) {
                continue; // `running[i]` itself left; the next one moved into slot `i`.
            }
            plan.scheduled.push(Scheduled { id, start: computed, len: n, sample: computed + n == total });
            budget -= n;
            i += 1;
        }
        if plan.preempted.is_empty() {
            self.admit(&mut budget, &mut plan);
        }
        plan
    }

    /// Grows `running[i]` to `target` positions, preempting the youngest
    /// sequences as needed. False when `running[i]` itself had to go.
    fn make_room(&mut self, i: usize, target: usize, plan: &mut StepPlan) -> bool {
        let id = self.running[i].id;
        loop {
            if self.kv.allocate(id, target, None).is_ok() {
                return true;
            }
            if self.running.len() == 1 {
                // Alone and still too big: no amount of waiting helps.
                let s = self.running.remove(i);
                self.kv.free(s.id);
                plan.out_of_memory.push(s.id);
                return false;
            }
            let Some(mut victim) = self.running.pop() else { return false };
            self.kv.free(victim.id);
            victim.computed = 0;
            victim.preemptions += 1;
            plan.preempted.push(victim.id);
            let was_self = victim.id == id;
            self.waiting.push_front(victim);
            if was_self {
                return false;
            }
        }
    }

    /// Moves waiting sequences to running while they fit.
    fn admit(&mut self, budget: &mut usize, plan: &mut StepPlan) {
        while *budget > 0 && self.running.len() < self.config.max_running {
            let Some(seq) = self.waiting.front() else { break };
            let hit = self.kv.find_prefix(&seq.tokens, seq.prefix_root);
            let total = seq.tokens.len();
            let needed = self.kv.blocks_needed(seq.id, total, Some(&hit));
            let spare = self.running.len();
            if needed + spare > self.kv.pool().num_free() {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else { break };
            let hit_tokens = hit.tokens;
            if self.kv.allocate(seq.id, total, Some(hit)).is_err() {
                self.waiting.push_front(seq);
                break;
            }
            self.kv.record_lookup(total, hit_tokens);
            seq.computed = hit_tokens;
            let n = (total - seq.computed).min(*budget);
            plan.scheduled.push(Scheduled {
                id: seq.id,
                start: seq.computed,
                len: n,
                sample: seq.computed + n == total,
            });
            *budget -= n;
            self.running.push(seq);
        }
    }

    /// Records a computed step (vLLM v1's `update_from_output`): every
    /// scheduled sequence's counter advances and its newly full blocks join
    /// the prefix cache — finishing ones too, so a conversation's next turn
    /// finds them — then each sampling sequence takes its `outcomes` entry:
    /// a token to append, or its end (blocks freed). The order is this
    /// method's business, not the caller's.
    pub fn update(&mut self, plan: &StepPlan, outcomes: &[(SeqId, Outcome)]) {
        for sch in &plan.scheduled {
            if let Some(s) = self.running.iter_mut().find(|s| s.id == sch.id) {
                s.computed = s.computed.max(sch.start + sch.len);
                self.kv.cache_computed(s.id, s.prefix_root, &s.tokens, s.computed);
            }
        }
        for &(id, outcome) in outcomes {
            match outcome {
                Outcome::Continue(token) => {
                    if let Some(s) = self.running.iter_mut().find(|s| s.id == id) {
                        s.tokens.push(token);
                    }
                }
                Outcome::Finished => {
                    self.abort(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
