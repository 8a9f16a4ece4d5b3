//! LoRA adapters in llama.cpp's GGUF adapter format, applied per sequence
//! inside a batch: the base matrix multiplies every row once, then each
//! group of rows that uses an adapter adds its low-rank product,
//! `scale · B(A x)` with `scale = user_scale · alpha / rank` (llama.cpp's
//! `build_lora_mm`, same order of operations). Weights are never merged, so
//! the bare base and any number of adapters share one batch and one copy of
//! the base weights.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hearth_core::{Backend, SeqId};
use hearth_gguf::GgufFile;

use crate::weights::{Matrix, WeightLoader};
use crate::ModelError;

/// One adapted matrix: `A` (`rank × n_in`) and `B` (`n_out × rank`),
/// prepared by the backend like any weight.
pub struct LoraPair {
    pub(crate) a: Matrix,
    pub(crate) b: Matrix,
    rank: usize,
}

/// A loaded adapter: its low-rank pairs by the base matrix they adapt.
pub struct LoraAdapter {
    /// The name it is served under.
    pub name: String,
    /// Unique in the process: what the prefix cache keys this adapter's
    /// blocks by (two loads of one file are two adapters).
    pub id: u64,
    /// `adapter.lora.alpha` (0: scale by the user's scale alone, as llama.cpp).
    pub alpha: f32,
    pairs: HashMap<String, LoraPair>,
    bytes: u64,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("alpha", &self.alpha)
            .field("matrices", &self.pairs.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl LoraAdapter {
    /// Reads the adapter at `path` for the model in `base`, checked: it
    /// must be a LoRA adapter of the base's architecture, and each pair
    /// must fit the base matrix it names (a mismatched base is an error
    /// naming the tensor, as llama.cpp's "maybe wrong base model?").
    pub fn load(name: &str, path: &Path, base: &GgufFile, backend: &dyn Backend) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        let bad = |why: String| ModelError::BadAdapter(format!("{}: {why}", path.display()));
        let kind = file.get_str("general.type").unwrap_or("");
        if kind != "adapter" {
            return Err(bad(format!("general.type is {kind:?}, not \"adapter\" (is this a model rather than an adapter?)")));
        }
        let adapter_type = file.get_str("adapter.type").unwrap_or("");
        if adapter_type != "lora" {
            return Err(bad(format!("adapter.type is {adapter_type:?}; only \"lora\" is supported")));
        }
        let (arch, base_arch) = (file.get_str("general.architecture").unwrap_or(""), base.get_str("general.architecture")?);
        if arch != base_arch {
            return Err(bad(format!("the adapter is for {arch:?} models, the base is {base_arch:?}")));
        }
        let alpha = file.get_f64("adapter.lora.alpha").map_or(0.0, |a| a as f32);
        if !alpha.is_finite() {
            return Err(bad("adapter.lora.alpha is not a finite number".into()));
        }
        let w = WeightLoader::new(&file, backend);
        let mut pairs = HashMap::new();
        for t in file.tensors() {
            let Some(target) = t.name.strip_suffix(".lora_a") else {
                if !t.name.ends_with(".lora_b") {
                    return Err(bad(format!("tensor {:?} is neither a .lora_a nor a .lora_b", t.name)));
                }
                continue;
            };
            if !target.starts_with("blk.") || target.contains("_exps") {
                return Err(bad(format!(
                    "{target:?}: adapters on embeddings, the output or experts are not supported (only block matrices)"
                )));
            }
            let b_name = format!("{target}.lora_b");
            let b_info = file.tensor(&b_name).ok_or_else(|| bad(format!("{b_name:?} is missing (lora_a without lora_b)")))?;
            let base_info = base.tensor(target).ok_or_else(|| bad(format!("the base model has no {target:?} (wrong base model?)")))?;
            let (Some([n_in, rank]), Some([rank_b, n_out])) = (dims2(&t.dims), dims2(&b_info.dims)) else {
                return Err(bad(format!("{target:?}: lora_a and lora_b must be matrices")));
            };
            if base_info.dims != [n_in, n_out] {
                return Err(bad(format!(
                    "{target:?}: the adapter is {n_in} → {n_out}, the base matrix {:?} (wrong base model?)",
                    base_info.dims
                )));
            }
            if rank != rank_b || rank == 0 {
                return Err(bad(format!("{target:?}: lora_a has rank {rank}, lora_b {rank_b}")));
            }
            let (n_in, n_out, rank) = (to_usize(n_in), to_usize(n_out), to_usize(rank));
            let a = w.matrix(&t.name, rank, n_in)?;
            let b = w.matrix(&b_name, n_out, rank)?;
            pairs.insert(target.to_owned(), LoraPair { a, b, rank });
        }
        if pairs.is_empty() {
            return Err(bad("no lora_a/lora_b tensors".into()));
        }
        let id = NEXT_ADAPTER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { name: name.to_owned(), id, alpha, pairs, bytes: w.prepared_bytes() })
    }

    /// The pair adapting base matrix `name`, if any.
    #[must_use]
    pub fn pair(&self, name: &str) -> Option<&LoraPair> {
        self.pairs.get(name)
    }

    /// Matrices adapted.
    #[must_use]
    pub fn matrices(&self) -> usize {
        self.pairs.len()
    }

    /// Bytes the adapter holds.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The factor `B(A x)` is multiplied by for a request's `user_scale`
    /// (llama.cpp: `alpha ? user_scale · alpha / rank : user_scale`).
    #[must_use]
    pub fn scale(&self, pair: &LoraPair, user_scale: f32) -> f32 {
        if self.alpha == 0.0 {
            user_scale
        } else {
            user_scale * self.alpha / pair.rank as f32
        }
    }
}

/// The next adapter's id (ids are never reused in a process).
static NEXT_ADAPTER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn dims2(d: &[u64]) -> Option<[u64; 2]> {
    match d {
        [a, b] => Some([*a, *b]),
        _ => None,
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The adapters of one forward pass: which sequence uses which adapter at
/// which scale (sequences not listed use the bare base).
#[derive(Default, Clone)]
pub struct ActiveAdapters {
    by_seq: HashMap<SeqId, (Arc<LoraAdapter>, f32)>,
}

impl ActiveAdapters {
    /// Sequence `seq` uses `adapter` at `scale`.
    pub fn insert(&mut self, seq: SeqId, adapter: Arc<LoraAdapter>, scale: f32) {
        self.by_seq.insert(seq, (adapter, scale));
    }

    /// No sequence uses an adapter.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// The adapter and scale of `seq`, if it uses one.
    #[must_use]
    pub fn of(&self, seq: SeqId) -> Option<&(Arc<LoraAdapter>, f32)> {
        self.by_seq.get(&seq)
    }
}
