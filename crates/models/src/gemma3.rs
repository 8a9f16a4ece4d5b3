//! Gemma 3: embeddings scaled by √n_embd; each block has pre- *and* post-norms
//! around attention and MLP, per-head Q/K RMS norms, a GELU-gated MLP, NeoX
//! RoPE, and interleaved attention: five sliding-window layers (window from
//! metadata, RoPE base 10 000) then one global layer (RoPE base from
//! metadata). Norm weights in GGUF already include Gemma's `1 +` offset.
//! Follows llama.cpp's `llm_build_gemma3_iswa`.
//!
//! ```text
//! x = embed(tokens) * sqrt(n_embd)
//! for each block:  x += post_attn_norm(attn(rms_norm(x)))
//!                  x += post_ffw_norm(mlp(rms_norm(x)))
//! logits = embedding^T(rms_norm(x))
//! ```

use std::sync::Arc;

use hearth_core::{Activation, Backend, ForwardBatch, RopeParams, RopeStyle};
use hearth_gguf::GgufFile;

use crate::lora::ActiveAdapters;
use crate::layers::{
    add_in_place, rope_params, Attention, Ctx, Embedding, GatedMlp, LmHead, OutputRows, RmsNorm, SelfAttention,
};
use crate::weights::WeightLoader;
use crate::{KvStore, Model, ModelConfig, ModelError};

/// Every `SWA_PERIOD`-th layer is global; the others use the sliding window.
const SWA_PERIOD: usize = 6;
/// RoPE base of the sliding-window layers (fixed in Gemma 3).
const LOCAL_ROPE_BASE: f32 = 10_000.0;

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: GatedMlp,
    post_ffn_norm: RmsNorm,
    /// `Some(window)` for sliding-window layers.
    window: Option<usize>,
}

/// A Gemma 3 decoder.
pub struct Gemma3 {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    global_rope: RopeParams,
    local_rope: RopeParams,
    embed: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
    matmul_bytes: u64,
}

impl Gemma3 {
    /// Loads a `gemma3` model.
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let w = WeightLoader::new(&file, backend.as_ref());
        let norm =
            |il: usize, name: &str| RmsNorm::load(&w, &format!("blk.{il}.{name}.weight"), cfg.n_embd, cfg.norm_eps);
        let blocks = (0..cfg.n_layer)
            .map(|il| {
                let is_global = (il + 1) % SWA_PERIOD == 0;
                Ok(Block {
                    attn_norm: norm(il, "attn_norm")?,
                    attn: Attention::load(&w, &cfg, il)?.with_prescaled_queries(),
                    post_attn_norm: norm(il, "post_attention_norm")?,
                    ffn_norm: norm(il, "ffn_norm")?,
                    mlp: GatedMlp::load(&w, &cfg, il, Activation::GeluTanh)?,
                    post_ffn_norm: norm(il, "post_ffw_norm")?,
                    window: if is_global { None } else { cfg.sliding_window },
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let embed = Embedding::load(&w, &cfg)?;
        let head = LmHead::load(&w, &cfg, &embed)?;
        let global_rope = rope_params(&cfg, RopeStyle::NeoX);
        let local_rope = RopeParams { freq_base: LOCAL_ROPE_BASE, freq_scale: 1.0, ..global_rope };
        let matmul_bytes = w.prepared_bytes();
        Ok(Self { cfg, file, backend, global_rope, local_rope, embed, blocks, head, matmul_bytes })
    }
}

impl Model for Gemma3 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn matmul_bytes(&self) -> u64 {
        self.matmul_bytes
    }

    fn forward(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError> {
        self.forward_adapted(batch, kv, &ActiveAdapters::default())
    }

    fn forward_adapted(&self, batch: &ForwardBatch, kv: &mut KvStore, adapters: &ActiveAdapters) -> Result<Vec<f32>, ModelError> {
        let kv_rows = kv.rows_of(batch)?;
        let adapters = Some(adapters).filter(|a| !a.is_empty());
        let ctx = Ctx { backend: self.backend.as_ref(), file: &self.file, batch, kv_rows: &kv_rows, adapters };
        let mut x = self.embed.forward(&ctx, self.cfg.n_embd)?;
        let scale = (self.cfg.n_embd as f32).sqrt();
        x.iter_mut().for_each(|v| *v *= scale);
        let outputs = OutputRows::new(batch, self.blocks.len());
        for (il, b) in self.blocks.iter().enumerate() {
            let rope = if b.window.is_some() { &self.local_rope } else { &self.global_rope };
            let mut h = b.attn.forward(&ctx, kv, il, &b.attn_norm.forward(&ctx, &x), rope, b.window)?;
            let c = outputs.after_attention(il, ctx, &mut x, &mut h, self.cfg.n_embd);
            b.post_attn_norm.apply(&c, &mut h);
            add_in_place(&mut x, &h);
            let mut h = b.mlp.forward(&c, &b.ffn_norm.forward(&c, &x))?;
            b.post_ffn_norm.apply(&c, &mut h);
            add_in_place(&mut x, &h);
        }
        self.head.forward(&outputs.head(ctx), &x, self.cfg.n_embd)
    }
}
