//! What the backend needs to know about the paged KV cache: block ids, the
//! element type of the cache, and views of one layer's key/value pool.
//!
//! The pool of a layer is `n_blocks × block_size` token rows; a sequence's
//! position `p` lives in row `blocks[p / block_size] * block_size + p % block_size`
//! (vLLM's block table). Bookkeeping (which blocks a sequence owns, prefix
//! sharing) is `hearth-kv`'s business; this module only describes memory.

use half::f16;

use crate::GgmlType;

/// Index of a KV block in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

impl BlockId {
    /// As an index into pool arrays.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half precision: llama.cpp's default and the numerics of the reference.
    #[default]
    F16,
    /// 8-bit blocks of 32 with an f16 scale: ~1.9× the capacity of f16.
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale: ~3.6× the capacity of f16.
    Q4_0,
}

impl KvType {
    /// The ggml block encoding of one row.
    #[must_use]
    pub fn ggml(self) -> GgmlType {
        match self {
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// Bytes of one row of `dim` elements, or `None` when `dim` does not
    /// split into whole blocks of the type.
    #[must_use]
    pub fn row_bytes(self, dim: usize) -> Option<usize> {
        self.ggml().row_bytes(dim)
    }

    /// Name as used on the command line (`f16`, `q8_0`, `q4_0`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            _ => Err(format!("unknown KV cache type {s:?} (expected f16, q8_0 or q4_0)")),
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The storage of one layer's keys or values: f16 elements, or the bytes of
/// a quantized block encoding.
#[derive(Debug, Clone, Copy)]
pub enum KvData<'a> {
    /// `rows × dim` halves.
    F16(&'a [f16]),
    /// `rows × row_bytes` bytes of `ty`'s blocks.
    Quantized(GgmlType, &'a [u8]),
}

/// Mutable twin of [`KvData`], for writing new rows.
#[derive(Debug)]
pub enum KvDataMut<'a> {
    /// `rows × dim` halves.
    F16(&'a mut [f16]),
    /// `rows × row_bytes` bytes of `ty`'s blocks.
    Quantized(GgmlType, &'a mut [u8]),
}

/// One layer's key and value pools, read by attention.
#[derive(Debug, Clone, Copy)]
pub struct KvLayer<'a> {
    /// Token rows per block.
    pub block_size: usize,
    /// Elements per key row (`n_kv_head × head_dim`).
    pub dim: usize,
    /// Elements per value row: `n_kv_head × v_head_dim`, or `dim` where the
    /// values are the leading part of each key row (DeepSeek's latent
    /// attention caches one latent vector per token and reads it as both).
    pub v_dim: usize,
    /// Keys of every row of the pool.
    pub keys: KvData<'a>,
    /// Values, rows of `v_dim` elements (possibly the `keys` pool itself).
    pub values: KvData<'a>,
}

impl KvLayer<'_> {
    /// Pool row of position `pos` of a sequence with block table `blocks`.
    #[must_use]
    pub fn row(&self, blocks: &[BlockId], pos: usize) -> usize {
        blocks[pos / self.block_size].index() * self.block_size + pos % self.block_size
    }
}

/// The keys and values one query row attends to.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpan<'a> {
    /// Block table of the sequence: covers at least `end` positions.
    pub blocks: &'a [BlockId],
    /// First position attended (sliding windows start later than 0).
    pub start: usize,
    /// One past the last position attended (causal: query position + 1).
    pub end: usize,
}
