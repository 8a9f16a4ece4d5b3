//! The generic pre-norm decoder that Llama, Qwen, BitNet and DeepSeek-2 build
//! on: only what is inside a block differs between them (each architecture's
//! file makes its blocks).
//!
//! ```text
//! x = embed(tokens)
//! for each block:  x += attn(rms_norm(x));  x += ffn(rms_norm(x))
//! logits = output(rms_norm(x))
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

/// A pre-norm decoder.
pub struct Decoder {
    cfg: ModelConfig,
    file: GgufFile,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
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
        let rope = rope_params(&cfg, style);
        let matmul_bytes = w.prepared_bytes();
        Ok(Self { cfg, file, backend, rope, embed, blocks, head, matmul_bytes })
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
        let mut x = self.embed.forward(&ctx, self.cfg.n_embd)?;
        let outputs = OutputRows::new(batch, self.blocks.len());
        for (il, b) in self.blocks.iter().enumerate() {
            let mut h = b.attn.forward(&ctx, kv, il, &b.attn_norm.forward(&ctx, &x), &self.rope, None)?;
            let c = outputs.after_attention(il, ctx, &mut x, &mut h, self.cfg.n_embd);
            add_in_place(&mut x, &h);
            let h = b.ffn.forward(&c, &b.ffn_norm.forward(&c, &x))?;
            add_in_place(&mut x, &h);
        }
        match out {
            Output::Logits => self.head.forward(&outputs.head(ctx), &x, self.cfg.n_embd),
            Output::Hidden => Ok(self.head.hidden(&outputs.head(ctx), &x, self.cfg.n_embd)),
        }
    }
}
