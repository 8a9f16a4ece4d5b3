//! Llama (also Mistral, SmolLM, and Mixtral's experts): pre-norm blocks of
//! grouped-query attention with RoPE and a SiLU-gated MLP, or a mixture of
//! experts. Qwen2/Qwen3 and their MoE variants use the same blocks with
//! NeoX-style RoPE (see `qwen.rs`).

use std::sync::Arc;

use hearth_core::{Activation, Backend, RopeStyle};
use hearth_gguf::GgufFile;

use crate::decoder::{Block, Decoder};
use crate::layers::{Attention, Ffn, GatedMlp, RmsNorm};
use crate::moe::{Gating, MoeConfig, MoeFfn};
use crate::{ModelConfig, ModelError};

/// Loads a Llama-shaped model whose RoPE pairs dimensions in `style`.
/// With `{arch}.expert_count` in the metadata its FFNs are mixtures of
/// experts (Mixtral as `llama`, `qwen2moe`, `qwen3moe`), routed by a
/// softmax over experts; Qwen2-MoE alone leaves the chosen weights
/// unnormalized, and adds a sigmoid-gated shared expert.
pub fn load(file: GgufFile, backend: Arc<dyn Backend>, style: RopeStyle) -> Result<Decoder, ModelError> {
    let cfg = ModelConfig::from_gguf(&file)?;
    let moe = MoeConfig::from_gguf(&file, &cfg, cfg.arch != "qwen2moe", Gating::Softmax)?;
    if moe.is_none() && cfg.arch.ends_with("moe") {
        return Err(ModelError::BadMetadata(format!("{}.expert_count is missing", cfg.arch)));
    }
    Decoder::load_with_blocks(file, backend, style, |w, cfg, il| {
        let ffn = match &moe {
            Some(moe) => Ffn::Moe(MoeFfn::load(w, cfg, moe, il)?),
            None => Ffn::Dense(GatedMlp::load(w, cfg, il, Activation::Silu)?),
        };
        Ok(Block {
            attn_norm: RmsNorm::load(w, &format!("blk.{il}.attn_norm.weight"), cfg.n_embd, cfg.norm_eps)?,
            attn: Box::new(Attention::load(w, cfg, il)?),
            ffn_norm: RmsNorm::load(w, &format!("blk.{il}.ffn_norm.weight"), cfg.n_embd, cfg.norm_eps)?,
            ffn,
        })
    })
}
