//! Llama (also Mistral, SmolLM, and Mixtral's experts): pre-norm blocks of
//! grouped-query attention with RoPE and a SiLU-gated MLP, or a mixture of
//! experts. Qwen2/Qwen3 and their MoE variants use the same blocks with
//! NeoX-style RoPE (see `qwen.rs`). SmolLM3 is Llama with every fourth
//! layer attending without RoPE (its "NoPE" layers; llama.cpp's
//! `llm_build_smollm3`); Granite is Llama with constant multipliers on the
//! embeddings, residual branches, attention scores and logits
//! (`llm_build_granite`); Phi-3 is Llama from fused matrices (`load_phi3`);
//! Mistral 3 is Llama with Llama 4's query temperature tuning (`load_mistral3`).

use std::sync::Arc;

use hearth_core::{Activation, Backend, RopeStyle};
use hearth_gguf::GgufFile;

use crate::decoder::{Block, Decoder, Multipliers};
use crate::layers::{Attention, Ffn, GatedMlp, QueryTemperature, RmsNorm};
use crate::moe::{Gating, MoeConfig, MoeFfn};
use crate::{ModelConfig, ModelError};

/// Loads a Llama-shaped model whose RoPE pairs dimensions in `style`.
/// With `{arch}.expert_count` in the metadata its FFNs are mixtures of
/// experts (Mixtral as `llama`, `qwen2moe`, `qwen3moe`), routed by a
/// softmax over experts; Qwen2-MoE alone leaves the chosen weights
/// unnormalized, and adds a sigmoid-gated shared expert.
pub fn load(file: GgufFile, backend: Arc<dyn Backend>, style: RopeStyle) -> Result<Decoder, ModelError> {
    load_with(file, backend, style, Tweaks::default())
}

/// SmolLM3's period of layers without RoPE (fixed in llama.cpp).
const SMOLLM3_NO_ROPE_EVERY: usize = 4;

/// Loads a `smollm3` model.
pub fn load_smollm3(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    Ok(load(file, backend, RopeStyle::Normal)?.without_rope_every(SMOLLM3_NO_ROPE_EVERY))
}

/// Loads a `phi3` model (Phi-3, Phi-4): Llama's blocks from fused
/// `attn_qkv` and gate-and-up `ffn_up` tensors, NeoX RoPE, queries scaled
/// before attention (`llm_build_phi3`). LongRoPE files (`rope_factors_*`)
/// are refused until their frequency factors are implemented.
pub fn load_phi3(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    if let Some(t) = file.tensors().iter().find(|t| t.name.starts_with("rope_factors")) {
        return Err(ModelError::Unsupported(format!(
            "{} holds LongRoPE frequency factors, which this build does not apply yet",
            t.name
        )));
    }
    load_with(file, backend, RopeStyle::NeoX, Tweaks { prescale_queries: true, ..Tweaks::default() })
}

/// Loads a `mistral3` model (Ministral 3, Mistral Small 3.x layouts):
/// Llama's blocks, with Llama 4's query temperature tuning when the file
/// sets `attention.temperature_scale` (steps of the original context).
pub fn load_mistral3(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    let cfg = ModelConfig::from_gguf(&file)?;
    let temperature = match cfg.arch_f32(&file, "attention.temperature_scale").filter(|s| *s != 0.0) {
        Some(scale) if cfg.rope_scaling.n_ctx_orig == 0 => {
            return Err(ModelError::BadMetadata(format!("attention.temperature_scale {scale} needs an original context")))
        }
        Some(scale) => Some(QueryTemperature { scale, floor: cfg.rope_scaling.n_ctx_orig as f32, offset: 0.0 }),
        None => None,
    };
    load_with(file, backend, RopeStyle::Normal, Tweaks { temperature, ..Tweaks::default() })
}

/// Loads a `granite` model: `granite.logit_scale` is required, the
/// embedding, residual and attention scales apply where present.
pub fn load_granite(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Decoder, ModelError> {
    let cfg = ModelConfig::from_gguf(&file)?;
    let f32_key = |k: &str| cfg.arch_f32(&file, k);
    let logit_scale = f32_key("logit_scale")
        .filter(|s| *s != 0.0)
        .ok_or_else(|| ModelError::BadMetadata("granite.logit_scale is missing or zero".into()))?;
    // llama.cpp treats 0 as "not set" for each of these.
    let set = |k: &str| f32_key(k).filter(|s| *s != 0.0);
    let multipliers = Multipliers {
        embedding: set("embedding_scale"),
        residual: set("residual_scale"),
        logits: Some(1.0 / logit_scale),
    };
    let tweaks = Tweaks { attention_scale: set("attention.scale"), ..Tweaks::default() };
    Ok(load_with(file, backend, RopeStyle::Normal, tweaks)?.with_multipliers(multipliers))
}

/// How an architecture's attention departs from Llama's.
#[derive(Debug, Clone, Copy, Default)]
struct Tweaks {
    /// Replaces the score scale `1/√head_dim`.
    attention_scale: Option<f32>,
    /// Scales queries before attention instead of scores inside it.
    prescale_queries: bool,
    /// Scales queries by position (Llama 4's temperature tuning).
    temperature: Option<QueryTemperature>,
}

/// [`load`], with the attention tweaked.
fn load_with(file: GgufFile, backend: Arc<dyn Backend>, style: RopeStyle, tweaks: Tweaks) -> Result<Decoder, ModelError> {
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
            attn: Box::new({
                let attn = Attention::load(w, cfg, il)?
                    .with_score_scale(tweaks.attention_scale)
                    .with_temperature(tweaks.temperature);
                if tweaks.prescale_queries {
                    attn.with_prescaled_queries()
                } else {
                    attn
                }
            }),
            ffn_norm: RmsNorm::load(w, &format!("blk.{il}.ffn_norm.weight"), cfg.n_embd, cfg.norm_eps)?,
            ffn,
        })
    })
}
