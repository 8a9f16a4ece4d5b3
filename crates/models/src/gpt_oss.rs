//! gpt-oss, OpenAI's open-weight mixture of experts (GGUF architecture
//! `gpt-oss`, llama.cpp's `llm_build_openai_moe_iswa`): pre-norm blocks of
//! grouped-query attention with Q/K/V and output biases and a learned *sink*
//! logit per head (a zero-valued key every query may attend to), sliding-window
//! layers (window from metadata) alternating with global ones, YaRN RoPE in
//! NeoX pairs; and a mixture of experts whose router has a bias, whose
//! weights are a softmax over the chosen experts' logits, and whose experts
//! (MXFP4 in OpenAI's files) have biases and a clamped SwiGLU.
//!
//! ```text
//! x = embed(tokens)
//! for each block:  x += attn(rms_norm(x))             (sinks; window on even layers)
//!                  x += moe(post_attention_norm(x))
//! logits = output(rms_norm(x))
//! ```
//!
//! Unlike the generic decoder, llama.cpp keeps every row through the last
//! block and drops the rows without logits only before the output norm.

use std::sync::Arc;

use hearth_core::{Activation, Backend, ForwardBatch, RopeParams, RopeStyle};
use hearth_gguf::GgufFile;

use crate::layers::{add_in_place, rope_params, Attention, Ctx, Embedding, LmHead, RmsNorm, SelfAttention};
use crate::moe::{Gating, MoeConfig, MoeFfn};
use crate::weights::WeightLoader;
use crate::{KvStore, Model, ModelConfig, ModelError};

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    /// `Some(window)` for sliding-window layers.
    window: Option<usize>,
    ffn_norm: RmsNorm,
    moe: MoeFfn,
}

/// A gpt-oss decoder.
pub struct GptOss {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    local_rope: RopeParams,
    embed: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
    matmul_bytes: u64,
}

impl GptOss {
    /// Loads a `gpt-oss` model.
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let Some(mut moe) = MoeConfig::from_gguf(&file, &cfg, false, Gating::SoftmaxWeight)? else {
            return Err(ModelError::BadMetadata("gpt-oss.expert_count is missing".into()));
        };
        moe.activation = Activation::SwigluOai;
        let window = cfg
            .sliding_window
            .ok_or_else(|| ModelError::BadMetadata("gpt-oss.attention.sliding_window is missing".into()))?;
        let w = WeightLoader::new(&file, backend.as_ref());
        let norm = |name: String| RmsNorm::load(&w, &name, cfg.n_embd, cfg.norm_eps);
        let blocks = (0..cfg.n_layer)
            .map(|il| {
                Ok(Block {
                    attn_norm: norm(format!("blk.{il}.attn_norm.weight"))?,
                    attn: Attention::load(&w, &cfg, il)?,
                    // llama.cpp's sliding-window pattern 2: even layers look back `window` tokens.
                    window: (il % 2 == 0).then_some(window),
                    ffn_norm: norm(format!("blk.{il}.post_attention_norm.weight"))?,
                    moe: MoeFfn::load(&w, &cfg, &moe, il)?,
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let embed = Embedding::load(&w, &cfg)?;
        let head = LmHead::load(&w, &cfg, &embed)?;
        let rope = rope_params(&w, &cfg, RopeStyle::NeoX)?;
        let local_rope = match cfg.arch_f32(&file, "rope.freq_base_swa") {
            Some(base) => RopeParams { freq_base: base, ..rope.clone() },
            None => rope.clone(),
        };
        let matmul_bytes = w.prepared_bytes();
        Ok(Self { cfg, file, backend, rope, local_rope, embed, blocks, head, matmul_bytes })
    }
}

impl Model for GptOss {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn matmul_bytes(&self) -> u64 {
        self.matmul_bytes
    }

    fn decode_bytes(&self) -> u64 {
        self.matmul_bytes - self.blocks.iter().map(|b| b.moe.unrouted_bytes()).sum::<u64>()
    }

    fn forward(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError> {
        let kv_rows = kv.rows_of(batch)?;
        let ctx = Ctx { backend: self.backend.as_ref(), file: &self.file, batch, kv_rows: &kv_rows, adapters: None };
        let mut x = self.embed.forward(&ctx, self.cfg.n_embd)?;
        for (il, b) in self.blocks.iter().enumerate() {
            let rope = if b.window.is_some() { &self.local_rope } else { &self.rope };
            let h = b.attn.forward(&ctx, kv, il, &b.attn_norm.forward(&ctx, &x), rope, b.window)?;
            add_in_place(&mut x, &h);
            let h = b.moe.forward(&ctx, &b.ffn_norm.forward(&ctx, &x))?;
            add_in_place(&mut x, &h);
        }
        // The head keeps only the logit rows (after the last block, as llama.cpp here).
        self.head.forward(&ctx, &x, self.cfg.n_embd)
    }
}
