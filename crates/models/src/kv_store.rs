//! The paged KV cache's memory: for every layer, a key pool and a value pool
//! of `n_blocks × block_size` token rows in the cache's element type (f16,
//! q8_0 or q4_0). Which sequence owns which block is decided outside
//! (`hearth-kv`); a batch brings its block tables and the store checks them
//! before anything is written.

use half::slice::HalfBitsSliceExt;
use hearth_core::{AttentionSpan, Backend, BlockId, ForwardBatch, KvData, KvDataMut, KvLayer, KvType};

use crate::{Model, ModelConfig, ModelError};

/// A pool's memory. Halves are kept as their bit patterns so that
/// `vec![0u16; n]` can come from `calloc` (lazily zeroed pages): a pool
/// sized for a large budget costs RAM only as blocks are first written.
#[derive(Debug)]
enum Pool {
    F16(Vec<u16>),
    Quantized(Vec<u8>),
}

impl Pool {
    fn zeroed(ty: KvType, rows: usize, dim: usize, row_bytes: usize) -> Self {
        match ty {
            KvType::F16 => Self::F16(vec![0; rows * dim]),
            _ => Self::Quantized(vec![0; rows * row_bytes]),
        }
    }

    fn view(&self, ty: KvType) -> KvData<'_> {
        match self {
            Self::F16(v) => KvData::F16(v.reinterpret_cast()),
            Self::Quantized(v) => KvData::Quantized(ty.ggml(), v),
        }
    }

    fn view_mut(&mut self, ty: KvType) -> KvDataMut<'_> {
        match self {
            Self::F16(v) => KvDataMut::F16(v.reinterpret_cast_mut()),
            Self::Quantized(v) => KvDataMut::Quantized(ty.ggml(), v),
        }
    }
}

/// Key/value pools of every layer.
#[derive(Debug)]
pub struct KvStore {
    ty: KvType,
    block_size: usize,
    n_blocks: usize,
    dim: usize,
    layers: Vec<[Pool; 2]>,
}

impl KvStore {
    /// Pools of `n_blocks` blocks of `block_size` tokens for a model shaped
    /// like `cfg`. Memory is zero-filled lazily by the OS, so untouched
    /// blocks cost address space, not RAM.
    pub fn new(cfg: &ModelConfig, ty: KvType, block_size: usize, n_blocks: usize) -> Result<Self, ModelError> {
        let dim = cfg.kv_dim();
        let row_bytes = Self::row_bytes(cfg, ty)?;
        if block_size == 0 {
            return Err(ModelError::BadBatch("KV block size must be positive".into()));
        }
        let rows = block_size * n_blocks;
        let layers = (0..cfg.n_layer)
            .map(|_| [Pool::zeroed(ty, rows, dim, row_bytes), Pool::zeroed(ty, rows, dim, row_bytes)])
            .collect();
        Ok(Self { ty, block_size, n_blocks, dim, layers })
    }

    /// Bytes of one token's row in one pool of one layer.
    pub fn row_bytes(cfg: &ModelConfig, ty: KvType) -> Result<usize, ModelError> {
        ty.row_bytes(cfg.kv_dim()).ok_or_else(|| {
            ModelError::BadMetadata(format!(
                "KV cache type {ty} needs rows in blocks of {}, but this model's KV rows have {} elements",
                ty.ggml().block_size(),
                cfg.kv_dim()
            ))
        })
    }

    /// KV bytes one token costs across all layers (keys and values).
    pub fn bytes_per_token(cfg: &ModelConfig, ty: KvType) -> Result<u64, ModelError> {
        Ok((2 * cfg.n_layer * Self::row_bytes(cfg, ty)?) as u64)
    }

    /// Element type.
    #[must_use]
    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Tokens per block.
    #[must_use]
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in each pool.
    #[must_use]
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// The pool row of every batch row, after checking that each row's
    /// sequence has a block table reaching its position inside the pool.
    pub fn rows_of(&self, batch: &ForwardBatch) -> Result<Vec<usize>, ModelError> {
        if batch.positions.len() != batch.len() || batch.seq_ids.len() != batch.len() {
            return Err(ModelError::BadBatch("tokens, positions and seq_ids differ in length".into()));
        }
        batch
            .seq_ids
            .iter()
            .zip(&batch.positions)
            .map(|(seq, &pos)| {
                let table = batch
                    .block_tables
                    .get(seq)
                    .ok_or_else(|| ModelError::BadBatch(format!("sequence {} has no block table", seq.0)))?;
                match table.get(pos / self.block_size) {
                    Some(b) if b.index() < self.n_blocks => Ok(b.index() * self.block_size + pos % self.block_size),
                    Some(b) => Err(ModelError::BadBatch(format!("block {} is outside the pool", b.0))),
                    None => Err(ModelError::ContextFull { limit: table.len() * self.block_size }),
                }
            })
            .collect()
    }

    /// Stores layer `layer`'s keys and values (`rows.len() × dim` each) at pool rows `rows`.
    pub fn write(&mut self, backend: &dyn Backend, layer: usize, rows: &[usize], keys: &[f32], values: &[f32]) {
        let (ty, dim) = (self.ty, self.dim);
        let [k, v] = &mut self.layers[layer];
        backend.write_kv(&mut k.view_mut(ty), dim, rows, keys);
        backend.write_kv(&mut v.view_mut(ty), dim, rows, values);
    }

    /// Layer `layer`'s pools, for attention.
    #[must_use]
    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        let [k, v] = &self.layers[layer];
        KvLayer { block_size: self.block_size, dim: self.dim, keys: k.view(self.ty), values: v.view(self.ty) }
    }

    /// What each row of the batch attends to: causal, and limited to the
    /// last `window` positions when given.
    #[must_use]
    pub fn spans(batch: &ForwardBatch, window: Option<usize>) -> Vec<AttentionSpan<'_>> {
        batch
            .seq_ids
            .iter()
            .zip(&batch.positions)
            .map(|(seq, &pos)| {
                let end = pos + 1;
                let start = window.map_or(0, |w| end.saturating_sub(w));
                AttentionSpan { blocks: batch.block_tables.get(seq).map_or(&[], Vec::as_slice), start, end }
            })
            .collect()
    }
}

/// A store for one sequence of up to `n_ctx` positions that owns every block
/// in order: the paged cache without the bookkeeping, for perplexity,
/// benches and tests that run one sequence at a time.
#[derive(Debug)]
pub struct SequenceCache {
    store: KvStore,
    table: Vec<BlockId>,
    n_ctx: usize,
}

impl SequenceCache {
    /// Tokens per block of a single-sequence store (any size works; large
    /// blocks keep the table short).
    const BLOCK: usize = 256;

    /// Room for `n_ctx` positions of a model shaped like `cfg`.
    pub fn new(cfg: &ModelConfig, ty: KvType, n_ctx: usize) -> Result<Self, ModelError> {
        let n_blocks = n_ctx.div_ceil(Self::BLOCK).max(1);
        let store = KvStore::new(cfg, ty, Self::BLOCK, n_blocks)?;
        Ok(Self { store, table: (0..n_blocks as u32).map(BlockId).collect(), n_ctx })
    }

    /// Runs `batch` (rows of any sequence ids; each gets this cache's table,
    /// so use one id) through `model`.
    pub fn forward(&mut self, model: &dyn Model, mut batch: ForwardBatch) -> Result<Vec<f32>, ModelError> {
        if batch.positions.iter().any(|&p| p >= self.n_ctx) {
            return Err(ModelError::ContextFull { limit: self.n_ctx });
        }
        for i in 0..batch.seq_ids.len() {
            let seq = batch.seq_ids[i];
            batch.block_tables.entry(seq).or_insert_with(|| self.table.clone());
        }
        model.forward(&batch, &mut self.store)
    }
}
