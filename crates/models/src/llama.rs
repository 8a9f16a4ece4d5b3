//! Llama (also Mistral, SmolLM): pre-norm blocks of grouped-query attention
//! with RoPE and a SiLU-gated MLP. Qwen2/Qwen3 share this graph (see `qwen.rs`).
//!
//! ```text
//! x = embed(tokens)
//! for each block:  x += attn(rms_norm(x));  x += mlp(rms_norm(x))
//! logits = output(rms_norm(x))
//! ```

use std::sync::Arc;

use hearth_core::{Activation, Backend, ForwardBatch, RopeParams, RopeStyle};
use hearth_gguf::GgufFile;

use crate::layers::{
    add_in_place, rope_params, Attention, Ctx, Embedding, Ffn, GatedMlp, LmHead, OutputRows, RmsNorm, SelfAttention,
};
use crate::moe::{Gating, MoeConfig, MoeFfn};
use crate::weights::WeightLoader;
use crate::{KvStore, Model, ModelConfig, ModelError};

/// One pre-norm block (shared with `bitnet.rs`, whose blocks add sub-norms).
pub(crate) struct Block {
    pub(crate) attn_norm: RmsNorm,
    pub(crate) attn: SelfAttention,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) ffn: Ffn,
}

/// A Llama-family decoder.
pub struct Llama {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    embed: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
    matmul_bytes: u64,
}

impl Llama {
    /// Loads a Llama-shaped model whose RoPE pairs dimensions in `style`.
    /// With `{arch}.expert_count` in the metadata its FFNs are mixtures of
    /// experts (Mixtral as `llama`, `qwen2moe`, `qwen3moe`), routed by a
    /// softmax over experts; Qwen2-MoE alone leaves the chosen weights
    /// unnormalized, and adds a sigmoid-gated shared expert.
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>, style: RopeStyle) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let moe = MoeConfig::from_gguf(&file, &cfg, cfg.arch != "qwen2moe", Gating::Softmax)?;
        if moe.is_none() && cfg.arch.ends_with("moe") {
            return Err(ModelError::BadMetadata(format!("{}.expert_count is missing", cfg.arch)));
        }
        Self::load_with_blocks(file, backend, style, |w, cfg, il| {
            let ffn = match &moe {
                Some(moe) => Ffn::Moe(MoeFfn::load(w, cfg, moe, il)?),
                None => Ffn::Dense(GatedMlp::load(w, cfg, il, Activation::Silu)?),
            };
            Ok(Block {
                attn_norm: RmsNorm::load(w, &format!("blk.{il}.attn_norm.weight"), cfg.n_embd, cfg.norm_eps)?,
                attn: SelfAttention::Gqa(Attention::load(w, cfg, il)?),
                ffn_norm: RmsNorm::load(w, &format!("blk.{il}.ffn_norm.weight"), cfg.n_embd, cfg.norm_eps)?,
                ffn,
            })
        })
    }

    /// Loads the Llama graph with blocks made by `block` (an architecture
    /// that only changes what is inside a block reuses the rest).
    pub(crate) fn load_with_blocks(
        file: GgufFile,
        backend: Arc<dyn Backend>,
        style: RopeStyle,
        block: impl Fn(&WeightLoader<'_>, &ModelConfig, usize) -> Result<Block, ModelError>,
    ) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let w = WeightLoader::new(&file, backend.as_ref());
        let blocks = (0..cfg.n_layer).map(|il| block(&w, &cfg, il)).collect::<Result<_, ModelError>>()?;
        let embed = Embedding::load(&w, &cfg)?;
        let head = LmHead::load(&w, &cfg, &embed)?;
        let rope = rope_params(&cfg, style);
        let matmul_bytes = w.prepared_bytes();
        Ok(Self { cfg, file, backend, rope, embed, blocks, head, matmul_bytes })
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn matmul_bytes(&self) -> u64 {
        self.matmul_bytes
    }

    fn decode_bytes(&self) -> u64 {
        self.matmul_bytes - self.blocks.iter().map(|b| b.ffn.unrouted_bytes()).sum::<u64>()
    }

    fn forward(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError> {
        let kv_rows = kv.rows_of(batch)?;
        let ctx = Ctx { backend: self.backend.as_ref(), file: &self.file, batch, kv_rows: &kv_rows };
        let mut x = self.embed.forward(&ctx, self.cfg.n_embd)?;
        let outputs = OutputRows::new(batch, self.blocks.len());
        for (il, b) in self.blocks.iter().enumerate() {
            let mut h = b.attn.forward(&ctx, kv, il, &b.attn_norm.forward(&ctx, &x), &self.rope, None)?;
            let c = outputs.after_attention(il, ctx, &mut x, &mut h, self.cfg.n_embd);
            add_in_place(&mut x, &h);
            let h = b.ffn.forward(&c, &b.ffn_norm.forward(&c, &x))?;
            add_in_place(&mut x, &h);
        }
        self.head.forward(&outputs.head(ctx), &x, self.cfg.n_embd)
    }
}
