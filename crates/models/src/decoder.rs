//! The generic pre-norm decoder that Llama, Qwen, BitNet, DeepSeek-2,
//! SmolLM3 and Granite build on: only what is inside a block differs between
//! them (each architecture's file makes its blocks), plus two switches —
//! layers without RoPE ([`Decoder::without_rope_every`]) and Granite's
//! constant multipliers ([`Multipliers`]).
//!
//! ```text
//! x = embed(tokens) · m.embedding
//! for each block:  x += m.residual · attn(rms_norm(x));  x += m.residual · ffn(rms_norm(x))
//! logits = output(rms_norm(x)) · m.logits
//! ```

use std::sync::Arc;

use hearth_core::{Backend, ForwardBatch, RopeParams, RopeStyle};
use hearth_gguf::GgufFile;

use crate::layers::{add_in_place, rope_params, Ctx, Embedding, Ffn, LmHead, OutputRows, RmsNorm, SelfAttention};
use crate::lora::ActiveAdapters;
use crate::weights::WeightLoader;
use crate::{KvStore, Model, ModelConfig, ModelError};

/// One pre-norm block.
pub(crate) struct Block {
    pub(crate) attn_norm: RmsNorm,
    pub(crate) attn: Box<dyn SelfAttention>,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) ffn: Ffn,
}

/// Constant factors some architectures put on the residual stream (Granite's
/// `embedding_scale`, `residual_scale` and `1 / logit_scale`); each applies
/// as one f32 multiplication where present, as llama.cpp's `ggml_scale`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Multipliers {
    pub(crate) embedding: Option<f32>,
    pub(crate) residual: Option<f32>,
    pub(crate) logits: Option<f32>,
}

/// A pre-norm decoder.
pub struct Decoder {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    /// Every `n`-th layer (counting from 1) takes no RoPE (SmolLM3's NoPE layers).
    no_rope_every: Option<usize>,
    multipliers: Multipliers,
    embed: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
    matmul_bytes: u64,
}

impl Decoder {
    /// Loads the decoder with blocks made by `block`, RoPE pairing
    /// dimensions in `style`.
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
        let rope = rope_params(&w, &cfg, style)?;
        let matmul_bytes = w.prepared_bytes();
        Ok(Self {
            cfg,
            file,
            backend,
            rope,
            no_rope_every: None,
            multipliers: Multipliers::default(),
            embed,
            blocks,
            head,
            matmul_bytes,
        })
    }

    /// Layers `n − 1`, `2n − 1`, … (every `n`-th, counting from 1) attend
    /// without positions (llama.cpp's `n_no_rope_layer_step`).
    #[must_use]
    pub(crate) fn without_rope_every(mut self, n: usize) -> Self {
        self.no_rope_every = Some(n).filter(|&n| n > 0);
        self
    }

    /// Applies `m` to the residual stream and the logits.
    #[must_use]
    pub(crate) fn with_multipliers(mut self, m: Multipliers) -> Self {
        self.multipliers = m;
        self
    }
}

/// `x *= s` where a factor is given.
fn scale(x: &mut [f32], s: Option<f32>) {
    if let Some(s) = s {
        x.iter_mut().for_each(|v| *v *= s);
    }
}

impl Model for Decoder {
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
        self.run(batch, kv, None, Output::Logits)
    }

    fn forward_adapted(&self, batch: &ForwardBatch, kv: &mut KvStore, adapters: &ActiveAdapters) -> Result<Vec<f32>, ModelError> {
        self.run(batch, kv, Some(adapters).filter(|a| !a.is_empty()), Output::Logits)
    }

    fn forward_hidden(&self, batch: &ForwardBatch, kv: &mut KvStore) -> Result<Vec<f32>, ModelError> {
        self.run(batch, kv, None, Output::Hidden)
    }
}

/// What a pass ends with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Logits,
    Hidden,
}

impl Decoder {
    fn run(
        &self,
        batch: &ForwardBatch,
        kv: &mut KvStore,
        adapters: Option<&ActiveAdapters>,
        out: Output,
    ) -> Result<Vec<f32>, ModelError> {
        let kv_rows = kv.rows_of(batch)?;
        let ctx = Ctx { backend: self.backend.as_ref(), file: &self.file, batch, kv_rows: &kv_rows, adapters };
        let m = self.multipliers;
        let mut x = self.embed.forward(&ctx, self.cfg.n_embd)?;
        scale(&mut x, m.embedding);
        let outputs = OutputRows::new(batch, self.blocks.len());
        let no_rope = self.rope.none();
        for (il, b) in self.blocks.iter().enumerate() {
            let rope = match self.no_rope_every {
                Some(n) if (il + 1) % n == 0 => &no_rope,
                _ => &self.rope,
            };
            let mut h = b.attn.forward(&ctx, kv, il, &b.attn_norm.forward(&ctx, &x), rope, None)?;
            let c = outputs.after_attention(il, ctx, &mut x, &mut h, self.cfg.n_embd);
            scale(&mut h, m.residual);
            add_in_place(&mut x, &h);
            let mut h = b.ffn.forward(&c, &b.ffn_norm.forward(&c, &x))?;
            scale(&mut h, m.residual);
            add_in_place(&mut x, &h);
        }
        match out {
            Output::Logits => {
                let mut logits = self.head.forward(&outputs.head(ctx), &x, self.cfg.n_embd)?;
                scale(&mut logits, m.logits);
                Ok(logits)
            }
            Output::Hidden => Ok(self.head.hidden(&outputs.head(ctx), &x, self.cfg.n_embd)),
        }
    }
}
