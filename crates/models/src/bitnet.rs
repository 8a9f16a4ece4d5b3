//! BitNet b1.58 (`bitnet` in llama.cpp): a Llama-shaped decoder whose
//! matrices are ternary (TQ1_0 / TQ2_0) with an optional f32 scale per
//! matrix, and two extra norms: one on the attention output before `wo`,
//! one on the gated FFN activations before `down`. RoPE pairs halves (NeoX);
//! the LM head is the embedding table.
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     x += wo·s_o(sub_norm_a(attn(rms_norm(x))))
//!     x += down·s_d(sub_norm_f(silu(gate·s_g(h)) * up·s_u(h)))   with h = rms_norm(x)
//! logits = embed(rms_norm(x))
//! ```
//! (llama.cpp's `src/models/bitnet.cpp`; its FFN is SiLU-gated.)

use std::sync::Arc;

use hearth_core::{Activation, Backend, ForwardBatch, RopeParams, RopeStyle};
use hearth_gguf::GgufFile;

use crate::layers::{add_in_place, rope_params, Attention, Ctx, Embedding, GatedMlp, LmHead, RmsNorm};
use crate::weights::WeightLoader;
use crate::{KvStore, Model, ModelConfig, ModelError};

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: GatedMlp,
}

/// A BitNet b1.58 decoder.
pub struct BitNet {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    embed: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
    matmul_bytes: u64,
}

impl BitNet {
    /// Loads a `bitnet` GGUF.
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let w = WeightLoader::new(&file, backend.as_ref());
        let eps = cfg.norm_eps;
        let blocks = (0..cfg.n_layer)
            .map(|il| {
                let p = |s: &str| format!("blk.{il}.{s}");
                Ok(Block {
                    attn_norm: RmsNorm::load(&w, &p("attn_norm.weight"), cfg.n_embd, eps)?,
                    attn: Attention::load(&w, &cfg, il)?.with_sub_norm(RmsNorm::load(
                        &w,
                        &p("attn_sub_norm.weight"),
                        cfg.n_head * cfg.head_dim,
                        eps,
                    )?),
                    ffn_norm: RmsNorm::load(&w, &p("ffn_norm.weight"), cfg.n_embd, eps)?,
                    mlp: GatedMlp::load(&w, &cfg, il, Activation::Silu)?.with_sub_norm(RmsNorm::load(
                        &w,
                        &p("ffn_sub_norm.weight"),
                        cfg.n_ff,
                        eps,
                    )?),
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let embed = Embedding::load(&w, &cfg)?;
        let head = LmHead::load(&w, &cfg, &embed)?;
        let rope = rope_params(&cfg, RopeStyle::NeoX);
        let matmul_bytes = w.prepared_bytes();
        Ok(Self { cfg, file, backend, rope, embed, blocks, head, matmul_bytes })
    }
}

impl Model for BitNet {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn matmul_bytes(&self) -> u64 {
        self.matmul_bytes
    }

    fn forward(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError> {
        let kv_rows = kv.rows_of(batch)?;
        let ctx = Ctx { backend: self.backend.as_ref(), file: &self.file, batch, kv_rows: &kv_rows };
        let mut x = self.embed.forward(&ctx, self.cfg.n_embd)?;
        for (il, b) in self.blocks.iter().enumerate() {
            let h = b.attn.forward(&ctx, kv, il, &b.attn_norm.forward(&ctx, &x), &self.rope, None)?;
            add_in_place(&mut x, &h);
            let h = b.mlp.forward(&ctx, &b.ffn_norm.forward(&ctx, &x))?;
            add_in_place(&mut x, &h);
        }
        self.head.forward(&ctx, &x, self.cfg.n_embd)
    }
}
