//! Matrix multiplication on the CPU.
//!
//! Quantized weights are repacked once at load ([`crate::packed`]) and
//! multiplied with integer kernels against activations quantized to 8 bits
//! per call; float weights keep the file's element type (F16/BF16 stay
//! 16-bit: one row of activations reads them widened in registers, more
//! rows widen a tile at a time) and sum in llama.cpp's order for the shape.
//! Row groups are spread over the worker pool.

use std::borrow::Cow;
use std::cell::RefCell;

use hearth_core::GgmlType;

use crate::dispatch::kernels;
use crate::kernels::reference::{self, Unsupported};
use crate::packed::acts::{ActRule, QuantizedActs};
use crate::packed::ternary::TernaryMatrix;
use crate::packed::ternary_lut::{LutMatrix, LutTables};
use crate::packed::PackedMatrix;
use crate::pool::{SharedOut, ThreadPool};

/// Float weight rows multiplied together by one task (16 rows × 2048 cols =
/// 128 KiB, inside L2).
const FLOAT_TILE_ROWS: usize = 16;
/// Float products under this many multiply-adds run on the calling thread.
const SMALL_PRODUCT_MACS: usize = 1 << 15;

/// Tasks per thread for a matmul: enough to even out uneven progress.
const TASKS_PER_THREAD: usize = 4;

/// A weight matrix in the form the CPU kernels read.
#[derive(Debug, Clone)]
pub enum CpuWeight {
    /// Quantized, repacked for the integer kernels.
    Packed(PackedMatrix),
    /// Ternary, repacked as 2-bit codes.
    Ternary(TernaryMatrix),
    /// Ternary in the lookup-table layout (opt-in, `HEARTH_TERNARY_LUT`;
    /// measured against [`Self::Ternary`] in `docs/ARCHITECTURE.md`).
    TernaryLut(LutMatrix),
    /// Float weights as the file stores them (F16/BF16 stay 16-bit: half
    /// the memory and half the bytes a decode step reads), widened a tile
    /// at a time inside the product; activations are rounded to `act_ty`
    /// first, as ggml does (its F16 dot products convert activations to f16).
    Float {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// `rows × cols`.
        data: FloatData,
        /// Type activations are rounded through.
        act_ty: GgmlType,
        /// Sum in any order (the tiled GEMM): no llama.cpp order to match.
        any_order: bool,
        /// One row at a time in llama.cpp (MoE experts, `MUL_MAT_ID`): its
        /// `vec_dot` order rather than tinyBLAS's (see [`FloatOrder`]).
        row_by_row: bool,
    },
}

/// The elements of a float matrix.
#[derive(Debug, Clone)]
pub enum FloatData {
    /// F32 weights.
    F32(Vec<f32>),
    /// F16 or BF16 weights, as stored (widening to f32 is exact).
    Half {
        /// `F16` or `BF16`.
        ty: GgmlType,
        /// The raw 16-bit values.
        bits: Vec<u16>,
    },
}

impl FloatData {
    /// Rows `r0..r0 + nr` (of `cols`) as f32: borrowed for F32, widened
    /// into `scratch` for 16-bit weights.
    fn rows<'a>(&'a self, r0: usize, nr: usize, cols: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        let range = r0 * cols..(r0 + nr) * cols;
        match self {
            Self::F32(v) => &v[range],
            Self::Half { ty, bits } => {
                scratch.clear();
                scratch.resize(range.len(), 0.0);
                let src = &bits[range];
                if *ty == GgmlType::BF16 {
                    // BF16 is the top half of an f32: a shift (vectorized by the compiler).
                    for (d, &b) in scratch.iter_mut().zip(src) {
                        *d = f32::from_bits(u32::from(b) << 16);
                    }
                } else {
                    (kernels().f16_to_f32)(src, scratch);
                }
                scratch
            }
        }
    }
}

/// How ternary weights are laid out (see `docs/decisions/0002-*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TernaryLayout {
    /// 2-bit codes in masked lanes for VNNI dot products (faster prefill).
    #[default]
    MaskedVnni,
    /// T-MAC-style lookup tables (7% fewer bytes; opt-in for decode-only use).
    LookupTables,
}

impl CpuWeight {
    /// Prepares `rows × cols` elements of `ty` (ggml encoding) for [`matmul`].
    pub fn new(
        pool: &ThreadPool,
        ty: GgmlType,
        data: &[u8],
        rows: usize,
        cols: usize,
        ternary: TernaryLayout,
    ) -> Result<Self, Unsupported> {
        if let Some(p) = PackedMatrix::pack(pool, ty, data, rows, cols) {
            return Ok(Self::Packed(p));
        }
        if let Some(t) = TernaryMatrix::pack(pool, ty, data, rows, cols) {
            if ternary == TernaryLayout::LookupTables {
                if let Some(lut) = LutMatrix::from_ternary(pool, &t) {
                    return Ok(Self::TernaryLut(lut));
                }
            }
            return Ok(Self::Ternary(t));
        }
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(Unsupported(ty));
        }
        let row_bytes = ty.row_bytes(cols).ok_or(Unsupported(ty))?;
        let data = &data[..(rows * row_bytes).min(data.len())];
        let data = if ty == GgmlType::F32 {
            let mut out = vec![0f32; rows * cols];
            for (src, dst) in data.chunks_exact(row_bytes).zip(out.chunks_exact_mut(cols)) {
                reference::dequantize_row(ty, src, dst)?;
            }
            FloatData::F32(out)
        } else {
            let bits = data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            FloatData::Half { ty, bits }
        };
        Ok(Self::Float { rows, cols, data, act_ty: reference::vec_dot_type(ty), row_by_row: false, any_order: false })
    }

    /// Output features.
    #[must_use]
    pub fn rows(&self) -> usize {
        match self {
            Self::Packed(p) => p.rows,
            Self::Ternary(t) => t.rows,
            Self::TernaryLut(t) => t.rows,
            Self::Float { rows, .. } => *rows,
        }
    }

    /// Input features.
    #[must_use]
    pub fn cols(&self) -> usize {
        match self {
            Self::Packed(p) => p.cols,
            Self::Ternary(t) => t.cols,
            Self::TernaryLut(t) => t.cols,
            Self::Float { cols, .. } => *cols,
        }
    }

    /// Bytes held in memory (and read by one decode step).
    #[must_use]
    pub fn bytes(&self) -> usize {
        match self {
            Self::Packed(p) => p.bytes(),
            Self::Ternary(t) => t.bytes(),
            Self::TernaryLut(t) => t.bytes(),
            Self::Float { data: FloatData::F32(v), .. } => v.len() * 4,
            Self::Float { data: FloatData::Half { bits, .. }, .. } => bits.len() * 2,
        }
    }
}

/// `out[t * rows + r] = W[r] · x[t]` for `t < n`; `x` is `n × cols`.
///
/// # Panics
/// When `x` or `out` is too short.
pub fn matmul(pool: &ThreadPool, w: &CpuWeight, x: &[f32], n: usize, out: &mut [f32]) {
    matmul_many(pool, &mut [(w, x, n, out)]);
}

thread_local! {
    /// Quantized activations of the jobs of the current call, reused across calls.
    static ACTS: RefCell<Vec<QuantizedActs>> = const { RefCell::new(Vec::new()) };
}

/// Independent products `out = x · wᵀ` (`(w, x, n, out)`, each as
/// [`matmul`]) in one pool dispatch: the row groups of all integer-kernel
/// jobs form one task list, so a MoE layer's experts or attention's Q/K/V
/// cost one synchronization, and threads balance across the jobs. Jobs
/// reading the same activations with the same rounding share one
/// quantization. Each result is the same, bit for bit, however the jobs are
/// batched.
///
/// # Panics
/// When a job's `x` or `out` is too short.
pub fn matmul_many(pool: &ThreadPool, jobs: &mut [(&CpuWeight, &[f32], usize, &mut [f32])]) {
    // (job, activation rule, row groups) of the integer-kernel jobs.
    let mut integer = Vec::new();
    for (j, (w, x, n, out)) in jobs.iter_mut().enumerate() {
        let (rows, cols) = (w.rows(), w.cols());
        assert!(x.len() >= *n * cols && out.len() >= *n * rows, "matmul buffers too short");
        match w {
            _ if *n == 0 => {}
            CpuWeight::Float { data, act_ty, row_by_row, any_order, .. } => {
                let order = if *any_order { FloatOrder::Free } else { FloatOrder::of(*act_ty, rows, cols, *n, *row_by_row) };
                float_matmul(pool, data, rows, cols, *act_ty, order, x, *n, out);
            }
            CpuWeight::Packed(p) => integer.push((j, ActRule::for_weights(p.ty), p.groups())),
            CpuWeight::Ternary(t) => integer.push((j, ActRule::for_weights(t.ty), t.groups())),
            CpuWeight::TernaryLut(t) => integer.push((j, ActRule::Q8K, t.groups())),
        }
    }
    if integer.is_empty() {
        return;
    }
    ACTS.with_borrow_mut(|acts| {
        // `source[i]`: index into `acts` of job `integer[i]`'s activations.
        let mut source: Vec<usize> = Vec::with_capacity(integer.len());
        let mut keys: Vec<(*const f32, usize, usize, ActRule)> = Vec::new();
        for &(j, rule, _) in &integer {
            let (w, x, n, _) = &jobs[j];
            let key = (x.as_ptr(), *n, w.cols(), rule);
            let at = if let Some(at) = keys.iter().position(|k| *k == key) {
                at
            } else {
                keys.push(key);
                if acts.len() < keys.len() {
                    acts.push(QuantizedActs::default());
                }
                acts[keys.len() - 1].quantize_with(pool, rule, x, *n, w.cols());
                keys.len() - 1
            };
            source.push(at);
        }
        // Lookup tables of the activations a lookup-layout job reads (none,
        // and no allocation, in the default layout).
        let any_lut = integer.iter().any(|&(j, _, _)| matches!(jobs[j].0, CpuWeight::TernaryLut(_)));
        let tables: Vec<Option<LutTables>> = (0..if any_lut { keys.len() } else { 0 })
            .map(|k| {
                let wants = integer
                    .iter()
                    .zip(&source)
                    .any(|(&(j, _, _), &at)| at == k && matches!(jobs[j].0, CpuWeight::TernaryLut(_)));
                wants.then(|| LutTables::build(&acts[k]))
            })
            .collect();
        // One task list over every job's row groups.
        let total: usize = integer.iter().map(|&(_, _, g)| g).sum();
        let per_task = total.div_ceil(pool.threads() * TASKS_PER_THREAD).max(1);
        let mut tasks = Vec::new();
        for (i, &(_, _, g)) in integer.iter().enumerate() {
            tasks.extend((0..g).step_by(per_task).map(|g0| (i, g0, (g0 + per_task).min(g))));
        }
        let outs: Vec<SharedOut> = integer
            .iter()
            .map(|&(j, _, _)| {
                let (w, _, n, out) = &mut jobs[j];
                SharedOut::new(&mut out[..*n * w.rows()])
            })
            .collect();
        let (acts, jobs, integer) = (&*acts, &*jobs, &integer);
        pool.run(tasks.len(), &|task| {
            let (i, g0, g1) = tasks[task];
            let (w, a, out) = (jobs[integer[i].0].0, &acts[source[i]], &outs[i]);
            for g in g0..g1 {
                match w {
                    CpuWeight::Packed(p) => (kernels().packed_group)(p, g, a, out),
                    CpuWeight::Ternary(t) => (kernels().ternary_group)(t, g, a, out),
                    CpuWeight::TernaryLut(t) => {
                        let tables = tables[source[i]].as_ref().expect("lookup tables"); // ok: built above for every lookup job's key
                        (kernels().lut_group)(t, g, tables, a, out);
                    }
                    CpuWeight::Float { .. } => unreachable!("float jobs ran above"),
                }
            }
        });
    });
}

/// The float order of a float-weight product, as llama.cpp's x86 build runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatOrder {
    /// tinyBLAS (`llamafile_sgemm`: two or more activation rows — llama.cpp
    /// enables it "only for prompt processing" — weight rows a multiple of 4
    /// and columns of 16): 16 lanes, lane `l` an FMA chain over columns
    /// `≡ l (mod 16)`, then `_mm512_reduce_add_ps` (`reference::dot_lanes16`).
    TinyBlas,
    /// `ggml_vec_dot_f16` / `_f32` (one activation row, MoE experts, other
    /// shapes): 64 lanes, folded, then the tail in f64 (`reference::dot_f16_ggml`).
    VecDot,
    /// No ggml order mirrored (BF16): a register-tiled GEMM.
    Free,
}

impl FloatOrder {
    fn of(act_ty: GgmlType, rows: usize, cols: usize, n: usize, row_by_row: bool) -> Self {
        match act_ty {
            GgmlType::F32 | GgmlType::F16
                if !row_by_row && n >= 2 && rows.is_multiple_of(4) && cols.is_multiple_of(16) =>
            {
                Self::TinyBlas
            }
            GgmlType::F32 | GgmlType::F16 => Self::VecDot,
            _ => Self::Free,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn float_matmul(
    pool: &ThreadPool,
    w: &FloatData,
    rows: usize,
    cols: usize,
    act_ty: GgmlType,
    order: FloatOrder,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let k = kernels();
    let gemm_tile = k.gemm_tile;
    // Only F16/BF16 weights round activations (to their own type); F32 uses them as they are.
    let x: Cow<'_, [f32]> = if act_ty == GgmlType::F32 {
        Cow::Borrowed(&x[..n * cols])
    } else {
        let mut rounded = x[..n * cols].to_vec();
        rounded.chunks_mut(cols).for_each(|row| reference::round_trip(act_ty, row));
        Cow::Owned(rounded)
    };
    let x = &x[..];
    let out = SharedOut::new(&mut out[..n * rows]);
    // A tile's results (`nr` rows × `n`) into the output rows.
    let store = |r0: usize, nr: usize, by_row: &[f32]| {
        for t in 0..n {
            // SAFETY: rows r0..r0+nr of every output row belong to this tile only.
            #[allow(unsafe_code)]
            let dst = unsafe { out.slice(t * rows + r0, nr) };
            for (i, d) in dst.iter_mut().enumerate() {
                *d = by_row[i * n + t];
            }
        }
    };
    let tile_product = |tile: usize| {
        let r0 = tile * FLOAT_TILE_ROWS;
        let nr = FLOAT_TILE_ROWS.min(rows - r0);
        let mut by_row = vec![0f32; nr * n];
        if let (FloatOrder::VecDot, FloatData::Half { ty: GgmlType::F16, bits }) = (order, w) {
            // One row at a time over F16 weights: widened in registers as
            // they are read, so a decode step reads their 2 bytes each.
            for i in 0..nr {
                let wr = &bits[(r0 + i) * cols..(r0 + i + 1) * cols];
                for (t, xr) in x.chunks_exact(cols).enumerate() {
                    by_row[i * n + t] = (k.dot_f16w_ggml)(wr, xr);
                }
            }
            return store(r0, nr, &by_row);
        }
        let mut scratch = Vec::new();
        let w = w.rows(r0, nr, cols, &mut scratch);
        match order {
            FloatOrder::Free => gemm_tile(w, nr, x, n, cols, &mut by_row),
            FloatOrder::TinyBlas | FloatOrder::VecDot => {
                let dot = match (order, act_ty) {
                    (FloatOrder::TinyBlas, _) => k.dot_lanes16,
                    (_, GgmlType::F32) => k.dot_f32_ggml,
                    _ => k.dot_f16_ggml,
                };
                for (i, wr) in w.chunks_exact(cols).enumerate() {
                    for (t, xr) in x.chunks_exact(cols).enumerate() {
                        by_row[i * n + t] = dot(wr, xr);
                    }
                }
            }
        }
        store(r0, nr, &by_row);
    };
    // A product this small (a LoRA's low-rank factors at decode) costs less
    // than waking the workers: it runs here.
    let tiles = rows.div_ceil(FLOAT_TILE_ROWS);
    if rows * cols * n < SMALL_PRODUCT_MACS {
        (0..tiles).for_each(tile_product);
    } else {
        pool.run(tiles, &tile_product);
    }
}

/// Dequantizes the selected rows (embedding lookup): `out` is `ids.len() × cols`.
pub fn get_rows(ty: GgmlType, w: &[u8], cols: usize, ids: &[u32], out: &mut [f32]) -> Result<(), Unsupported> {
    let row_bytes = ty.row_bytes(cols).ok_or(Unsupported(ty))?;
    for (i, &id) in ids.iter().enumerate() {
        let start = id as usize * row_bytes;
        reference::dequantize_row(ty, &w[start..start + row_bytes], &mut out[i * cols..(i + 1) * cols])?;
    }
    Ok(())
}
