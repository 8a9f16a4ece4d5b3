//! Memory planning: "how many users fit on this machine?" Weights, KV bytes
//! per token and step scratch are known before anything is allocated, so
//! the KV pool is sized from a budget instead of discovered by running out.

use hearth_core::KvType;
use hearth_models::KvStore;
use serde::Serialize;

use crate::{EngineError, LoadedModel};

/// How much of the machine Hearth claims, and how it splits the KV pool
/// between long contexts and many users (`--memory-priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryPriority {
    /// Up to 90% of the budget; weights locked in RAM (`mlock`); every
    /// running user can hold a full context at once (fewer users).
    High,
    /// Up to 60% of the budget; weights may be paged; users are admitted for
    /// a quarter context each and share the pool (more users; long ones can
    /// preempt others when it fills).
    #[default]
    Balanced,
    /// Up to 30% of the budget; nothing locked; users admitted for an
    /// eighth of the context each (most users, shortest guarantees).
    Low,
}

impl MemoryPriority {
    /// Share of the budget (after weights and scratch) the KV pool may take.
    #[must_use]
    pub fn kv_share(self) -> f64 {
        match self {
            Self::High => 0.9,
            Self::Balanced => 0.6,
            Self::Low => 0.3,
        }
    }

    /// Context tokens reserved per user when deciding how many run at once.
    #[must_use]
    pub fn tokens_per_user(self, context: usize) -> usize {
        match self {
            Self::High => context,
            Self::Balanced => context / 4,
            Self::Low => context / 8,
        }
        .max(1)
    }

    /// Whether weights are locked in RAM.
    #[must_use]
    pub fn lock_weights(self) -> bool {
        self == Self::High
    }
}

impl std::str::FromStr for MemoryPriority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Self::High),
            "balanced" => Ok(Self::Balanced),
            "low" => Ok(Self::Low),
            _ => Err(format!("unknown memory priority {s:?} (expected high, balanced or low)")),
        }
    }
}

/// What a model costs in memory, apart from the KV pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Resident weights: repacked matrices plus the embedding table.
    pub weights: u64,
    /// KV bytes per token (all layers, keys and values) in the chosen type.
    pub kv_per_token: u64,
    /// Activations and logits of one step.
    pub scratch: u64,
}

impl Footprint {
    /// The footprint of `session` with a `kv_type` cache, steps of at most
    /// `token_budget` tokens and up to `parallel` sampled rows per step.
    pub fn of(
        session: &LoadedModel,
        kv_type: KvType,
        token_budget: usize,
        parallel: usize,
    ) -> Result<Self, EngineError> {
        let embd = session.file.tensors().iter().find(|t| t.name == "token_embd.weight").map_or(0, |t| t.size);
        let weights = session.model.matmul_bytes() + embd as u64;
        Self::from_parts(session.model.config(), weights, kv_type, token_budget, parallel)
    }

    /// The footprint a model file will have once loaded, from its header
    /// alone (weights as stored: the repacked forms are within a few
    /// percent): what a registry needs to make room before loading it.
    pub fn estimate(
        file: &hearth_gguf::GgufFile,
        kv_type: KvType,
        token_budget: usize,
        parallel: usize,
    ) -> Result<Self, EngineError> {
        let config = hearth_models::ModelConfig::from_gguf(file)?;
        // A model without an output matrix reuses its embedding table as
        // one: repacked for the matmul, beside the table itself.
        let tensors = file.tensors();
        let tied = if tensors.iter().any(|t| t.name == "output.weight") {
            0
        } else {
            tensors.iter().find(|t| t.name == "token_embd.weight").map_or(0, |t| t.size as u64)
        };
        Self::from_parts(&config, file.tensor_bytes() + tied, kv_type, token_budget, parallel)
    }

    fn from_parts(
        c: &hearth_models::ModelConfig,
        weights: u64,
        kv_type: KvType,
        token_budget: usize,
        parallel: usize,
    ) -> Result<Self, EngineError> {
        let q_dim = c.n_head * c.head_dim;
        let per_token = 6 * c.n_embd + 2 * q_dim + c.kv_floats_per_layer() + 3 * c.n_ff;
        let scratch = 4 * (token_budget * per_token + 2 * parallel.max(1) * c.n_vocab);
        Ok(Self { weights, kv_per_token: KvStore::bytes_per_token(c, kv_type)?, scratch: scratch as u64 })
    }

    /// Memory a load holds for a while beyond the loaded model (buffers
    /// while weights are repacked, the tokenizer's construction): about an
    /// eighth of the weights, measured on Gemma 3 270M (anonymous memory
    /// peaks 14% above what the model then holds).
    #[must_use]
    pub fn load_transient(&self) -> u64 {
        self.weights / 6
    }

    /// Bytes with a KV pool of `kv_tokens` tokens.
    #[must_use]
    pub fn with_kv(&self, kv_tokens: u64) -> u64 {
        self.weights + self.scratch + kv_tokens * self.kv_per_token
    }
}

/// A budget split into weights, scratch and KV pool, with the users that fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Memory budget in bytes.
    pub budget: u64,
    /// The model's fixed costs.
    pub footprint: Footprint,
    /// KV pool bytes.
    pub kv_pool_bytes: u64,
    /// Tokens the KV pool holds.
    pub kv_tokens: u64,
    /// `(context, users)`: users that can each hold that full context at once.
    pub users_at: Vec<(usize, u64)>,
}

impl Plan {
    /// Splits `budget`: weights and scratch first, then `share` of the rest
    /// to the KV pool (or exactly `kv_pool` bytes when given).
    #[must_use]
    pub fn new(budget: u64, footprint: Footprint, share: f64, kv_pool: Option<u64>, contexts: &[usize]) -> Self {
        let rest = budget.saturating_sub(footprint.weights + footprint.scratch);
        let kv_pool_bytes = kv_pool.unwrap_or((rest as f64 * share) as u64);
        let kv_tokens = kv_pool_bytes / footprint.kv_per_token.max(1);
        let users_at = contexts.iter().map(|&c| (c, kv_tokens / c.max(1) as u64)).collect();
        Self { budget, footprint, kv_pool_bytes, kv_tokens, users_at }
    }

    /// Total bytes the plan commits.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.footprint.weights + self.footprint.scratch + self.kv_pool_bytes
    }
}

/// Memory the OS can give without swapping (`MemAvailable`), if known.
#[must_use]
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_split_and_users() {
        let f = Footprint { weights: 100, kv_per_token: 10, scratch: 100 };
        let p = Plan::new(10_200, f, 0.5, None, &[100, 1000]);
        assert_eq!(p.kv_pool_bytes, 5000);
        assert_eq!(p.kv_tokens, 500);
        assert_eq!(p.users_at, vec![(100, 5), (1000, 0)]);
        let p = Plan::new(0, f, 0.5, Some(2000), &[]);
        assert_eq!(p.kv_tokens, 200);
    }

    #[test]
    fn priorities_parse_and_order() {
        assert_eq!("high".parse(), Ok(MemoryPriority::High));
        assert!("max".parse::<MemoryPriority>().is_err());
        assert!(MemoryPriority::High.kv_share() > MemoryPriority::Low.kv_share());
        assert!(MemoryPriority::High.tokens_per_user(4096) > MemoryPriority::Low.tokens_per_user(4096));
    }
}
