//! The paged KV cache's memory: for every layer, a key pool and a value pool
//! of `n_blocks × block_size` token rows in the cache's element type (f16,
//! q8_0 or q4_0). Models with latent attention (DeepSeek's MLA) keep only the
//! key pool: each row is `[latent; rotary key]` and the values are its latent
//! part. Which sequence owns which block is decided outside
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
    /// Elements per key row.
    dim: usize,
    /// Elements per value row; `None` when the values are read from the keys.
    dim_v: Option<usize>,
    /// Per layer: the key pool, and the value pool unless `dim_v` is `None`.
    layers: Vec<Vec<Pool>>,
}

impl KvStore {
    /// Pools of `n_blocks` blocks of `block_size` tokens for a model shaped
    /// like `cfg`. Memory is zero-filled lazily by the OS, so untouched
    /// blocks cost address space, not RAM.
    pub fn new(cfg: &ModelConfig, ty: KvType, block_size: usize, n_blocks: usize) -> Result<Self, ModelError> {
        if block_size == 0 {
            return Err(ModelError::BadBatch("KV block size must be positive".into()));
        }
        let dim = cfg.kv_dim();
        let dim_v = (!cfg.values_in_keys).then(|| cfg.kv_dim_v());
        let rows = block_size * n_blocks;
        let mut dims = vec![(dim, Self::dim_bytes(ty, dim)?)];
        if let Some(dim_v) = dim_v {
            dims.push((dim_v, Self::dim_bytes(ty, dim_v)?));
        }
        let layers = (0..cfg.n_layer)
            .map(|_| dims.iter().map(|&(dim, bytes)| Pool::zeroed(ty, rows, dim, bytes)).collect())
            .collect();
        Ok(Self { ty, block_size, n_blocks, dim, dim_v, layers })
    }

    /// Bytes of a `dim`-element row in `ty`.
    fn dim_bytes(ty: KvType, dim: usize) -> Result<usize, ModelError> {
        ty.row_bytes(dim).ok_or_else(|| {
            ModelError::BadMetadata(format!(
                "KV cache type {ty} needs rows in blocks of {}, but this model's KV rows have {dim} elements",
                ty.ggml().block_size(),
            ))
        })
    }

    /// Bytes of one token in one layer: its key row and value row (or the
    /// key row alone, where values are read from it).
    pub fn row_bytes(cfg: &ModelConfig, ty: KvType) -> Result<usize, ModelError> {
        let keys = Self::dim_bytes(ty, cfg.kv_dim())?;
        Ok(if cfg.values_in_keys { keys } else { keys + Self::dim_bytes(ty, cfg.kv_dim_v())? })
    }

    /// KV bytes one token costs across all layers (keys and values).
    pub fn bytes_per_token(cfg: &ModelConfig, ty: KvType) -> Result<u64, ModelError> {
        Ok((cfg.n_layer * Self::row_bytes(cfg, ty)?) as u64)
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
    /// Where the values are read from the keys (latent attention), `values`
    /// is ignored and may be empty.
    pub fn write(&mut self, backend: &dyn Backend, layer: usize, rows: &[usize], keys: &[f32], values: &[f32]) {
        let (ty, dim) = (self.ty, self.dim);
        let pools = &mut self.layers[layer];
        backend.write_kv(&mut pools[0].view_mut(ty), dim, rows, keys);
        if let (Some(dim_v), Some(v)) = (self.dim_v, pools.get_mut(1)) {
            backend.write_kv(&mut v.view_mut(ty), dim_v, rows, values);
        }
    }

    /// Layer `layer`'s pools, for attention.
    #[must_use]
    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        let pools = &self.layers[layer];
        let keys = pools[0].view(self.ty);
        let (v_dim, values) = match (self.dim_v, pools.get(1)) {
            (Some(dim_v), Some(v)) => (dim_v, v.view(self.ty)),
            _ => (self.dim, keys),
        };
        KvLayer { block_size: self.block_size, dim: self.dim, v_dim, keys, values }
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
    pub fn forward(&mut self, model: &dyn Model, batch: ForwardBatch) -> Result<Vec<f32>, ModelError> {
        let batch = self.tabled(batch)?;
        model.forward(&batch, &mut self.store)
    }

    /// As [`SequenceCache::forward`], returning final hidden states
    /// ([`Model::forward_hidden`]).
    pub fn forward_hidden(&mut self, model: &dyn Model, batch: ForwardBatch) -> Result<Vec<f32>, ModelError> {
        let batch = self.tabled(batch)?;
        model.forward_hidden(&batch, &mut self.store)
    }

    /// `batch` with this cache's table for every sequence, if it fits.
    fn tabled(&self, mut batch: ForwardBatch) -> Result<ForwardBatch, ModelError> {
        if batch.positions.iter().any(|&p| p >= self.n_ctx) {
            return Err(ModelError::ContextFull { limit: self.n_ctx });
        }
        for i in 0..batch.seq_ids.len() {
            let seq = batch.seq_ids[i];
            batch.block_tables.entry(seq).or_insert_with(|| self.table.clone());
        }
        Ok(batch)
    }
}
