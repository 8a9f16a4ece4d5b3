//! Model architectures over the [`Backend`] trait. One file per architecture
//! reads like the model card; shared blocks live in `layers`, and the
//! generic pre-norm decoder that most of them fill with their own blocks in
//! `decoder`.
//!
//! Contract: [`Model::forward`] takes a flat [`ForwardBatch`] (any mix of
//! sequences, prefill and decode) and a [`KvStore`] with the batch's block tables, and returns the logits of
//! `batch.logit_rows`, `n_vocab` floats each.

pub mod bert;
pub mod bitnet;
mod config;
pub mod decoder;
pub mod deepseek2;
mod error;
pub mod gemma;
pub mod gpt_oss;
mod kv_store;
pub mod layers;
pub mod llama;
pub mod lora;
pub mod moe;
pub mod qwen;
pub mod weights;

use std::sync::Arc;

use hearth_core::{Backend, ForwardBatch};
use hearth_gguf::GgufFile;

pub use config::{ModelConfig, RopeScaling};
pub use error::ModelError;
pub use kv_store::{KvStore, SequenceCache};

/// A loaded model, ready to run batches.
pub trait Model: Send + Sync {
    /// Shape and numerics.
    fn config(&self) -> &ModelConfig;
    /// Bytes of the matrices in the backend's form: what one decode step
    /// reads besides the KV cache (one embedding row aside).
    fn matmul_bytes(&self) -> u64;
    /// Bytes of matrices one decode step reads: all of them for dense
    /// models; for mixtures of experts only the routed experts' share
    /// (`expert_used_count / expert_count` of the expert weights, on average).
    fn decode_bytes(&self) -> u64 {
        self.matmul_bytes()
    }
    /// Runs one batch; returns `batch.logit_rows.len() × n_vocab` logits.
    /// On error nothing was written to positions before the batch's.
    fn forward(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError>;
    /// As [`Model::forward`], with LoRA adapters on the sequences of
    /// `adapters` (the others use the bare base) in the same batch.
    fn forward_adapted(
        &self,
        batch: &ForwardBatch,
        kv: &mut KvStore,
        adapters: &lora::ActiveAdapters,
    ) -> Result<Vec<f32>, ModelError> {
        if adapters.is_empty() {
            self.forward(batch, kv)
        } else {
            Err(ModelError::NoAdapters(self.config().arch.clone()))
        }
    }
    /// As [`Model::forward`], but returns the final hidden states (after the
    /// output norm, before the vocabulary projection) of the logit rows,
    /// `batch.logit_rows.len() × n_embd`: what a decoder model embeds with.
    fn forward_hidden(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError> {
        let _ = (batch, kv);
        Err(ModelError::NoEmbeddings(self.config().arch.clone()))
    }
}

/// Architectures this build can run (`general.architecture` values).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "llama",
    "smollm3",
    "granite",
    "phi3",
    "mistral3",
    "qwen2",
    "qwen3",
    "qwen2moe",
    "qwen3moe",
    "deepseek2",
    "gpt-oss",
    "gemma2",
    "gemma3",
    "bitnet",
    "bitnet-b1.58",
    "bitnet-25",
];

/// Loads the model in `file` for `backend`, picking the architecture from metadata.
pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Box<dyn Model>, ModelError> {
    let arch = file.get_str("general.architecture")?.to_owned();
    Ok(match arch.as_str() {
        "llama" => Box::new(llama::load(file, backend, hearth_core::RopeStyle::Normal)?),
        "smollm3" => Box::new(llama::load_smollm3(file, backend)?),
        "granite" => Box::new(llama::load_granite(file, backend)?),
        "phi3" => Box::new(llama::load_phi3(file, backend)?),
        "mistral3" => Box::new(llama::load_mistral3(file, backend)?),
        "qwen2" | "qwen3" | "qwen2moe" | "qwen3moe" => Box::new(qwen::load(file, backend)?),
        "deepseek2" => Box::new(deepseek2::load(file, backend)?),
        "gemma2" | "gemma3" => Box::new(gemma::Gemma::load(file, backend)?),
        "gpt-oss" => Box::new(gpt_oss::GptOss::load(file, backend)?),
        "bitnet" | "bitnet-b1.58" | "bitnet-25" => Box::new(bitnet::load(file, backend)?),
        _ => return Err(ModelError::UnsupportedArch(arch)),
    })
}
