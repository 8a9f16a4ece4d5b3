//! Gemma 2 and Gemma 3: embeddings scaled by √n_embd; each block has pre-
//! *and* post-norms around attention and MLP, a GELU-gated MLP, NeoX RoPE, and
//! interleaved attention — sliding-window layers and global ones. Norm
//! weights in GGUF already include Gemma's `1 +` offset.
//!
//! - Gemma 3 (`llm_build_gemma3_iswa`): per-head Q/K RMS norms; five
//!   sliding-window layers (RoPE base 10 000) then one global layer (RoPE base
//!   from metadata).
//! - Gemma 2 (`llm_build_gemma2_iswa`): no Q/K norms; sliding-window and
//!   global layers alternate (window 4096 unless the file says), one RoPE
//!   base (or `rope.freq_base_swa` for the window layers); attention scores
//!   soft-capped (`cap · tanh(s / cap)`, `attn_logit_softcapping`, 50) inside
//!   attention, and the logits too (`final_logit_softcapping`, 30).
//!
//! ```text
//! x = embed(tokens) * sqrt(n_embd)
//! for each block:  x += post_attn_norm(attn(rms_norm(x)))
//!                  x += post_ffw_norm(mlp(rms_norm(x)))
//! logits = softcap(embedding^T(rms_norm(x)))
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

/// What differs between the generations.
struct Variant {
    /// Every `swa_period`-th layer is global; the others use the sliding window.
    swa_period: usize,
    /// RoPE base of the sliding-window layers (`None`: the global one).
    local_rope_base: Option<f32>,
    /// Soft cap of the attention scores.
    attn_softcap: Option<f32>,
    /// Soft cap of the logits.
    final_softcap: Option<f32>,
    /// Window when the file gives none.
    default_window: Option<usize>,
}

impl Variant {
    fn of(file: &GgufFile, cfg: &ModelConfig) -> Self {
        let f32_key = |k: &str| cfg.arch_f32(file, k);
        if cfg.arch == "gemma2" {
            // llama.cpp's defaults for Gemma 2 files without the keys.
            Self {
                swa_period: 2,
                local_rope_base: f32_key("rope.freq_base_swa"),
                attn_softcap: Some(f32_key("attn_logit_softcapping").unwrap_or(50.0)).filter(|c| *c != 0.0),
                final_softcap: Some(f32_key("final_logit_softcapping").unwrap_or(30.0)).filter(|c| *c != 0.0),
                default_window: Some(4096),
            }
        } else {
            // Gemma 3: the window layers' RoPE base is fixed.
            Self {
                swa_period: 6,
                local_rope_base: Some(10_000.0),
                attn_softcap: None,
                final_softcap: None,
                default_window: None,
            }
        }
    }
}

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

/// A Gemma 2 or Gemma 3 decoder.
pub struct Gemma {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    global_rope: RopeParams,
    local_rope: RopeParams,
    embed: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
    final_softcap: Option<f32>,
    matmul_bytes: u64,
}

impl Gemma {
    /// Loads a `gemma2` or `gemma3` model.
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let v = Variant::of(&file, &cfg);
        // Gemma 2 27B (46 layers) scales queries by 1/√(n_embd / n_head), not 1/√head_dim.
        let score_scale =
            (cfg.arch == "gemma2" && cfg.n_layer == 46).then(|| 1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt());
        let w = WeightLoader::new(&file, backend.as_ref());
        let norm =
            |il: usize, name: &str| RmsNorm::load(&w, &format!("blk.{il}.{name}.weight"), cfg.n_embd, cfg.norm_eps);
        let blocks = (0..cfg.n_layer)
            .map(|il| {
                let is_global = (il + 1) % v.swa_period == 0;
                Ok(Block {
                    attn_norm: norm(il, "attn_norm")?,
                    attn: Attention::load(&w, &cfg, il)?
                        .with_score_scale(score_scale)
                        .with_prescaled_queries()
                        .with_softcap(v.attn_softcap),
                    post_attn_norm: norm(il, "post_attention_norm")?,
                    ffn_norm: norm(il, "ffn_norm")?,
                    mlp: GatedMlp::load(&w, &cfg, il, Activation::GeluTanh)?,
                    post_ffn_norm: norm(il, "post_ffw_norm")?,
                    window: if is_global { None } else { cfg.sliding_window.or(v.default_window) },
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let embed = Embedding::load(&w, &cfg)?;
        let head = LmHead::load(&w, &cfg, &embed)?;
        let global_rope = rope_params(&w, &cfg, RopeStyle::NeoX)?;
        let local_rope = match v.local_rope_base {
            Some(base) if cfg.arch == "gemma3" => RopeParams { freq_base: base, freq_scale: 1.0, ..global_rope.clone() },
            Some(base) => RopeParams { freq_base: base, ..global_rope.clone() },
            None => global_rope.clone(),
        };
        let matmul_bytes = w.prepared_bytes();
        Ok(Self {
            cfg,
            file,
            backend,
            global_rope,
            local_rope,
            embed,
            blocks,
            head,
            final_softcap: v.final_softcap,
            matmul_bytes,
        })
    }
}

impl Model for Gemma {
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
        let mut logits = self.head.forward(&outputs.head(ctx), &x, self.cfg.n_embd)?;
        if let Some(cap) = self.final_softcap {
            // ggml_scale(1/cap), ggml_tanh, ggml_scale(cap): three f32 steps.
            let inv = 1.0 / cap;
            logits.iter_mut().for_each(|l| *l = (*l * inv).tanh() * cap);
        }
        Ok(logits)
    }
}
