//! Matrix multiplication on the CPU.
//!
//! Quantized weights are repacked once at load ([`crate::packed`]) and
//! multiplied with integer kernels against activations quantized to 8 bits
//! per call; float weights (F32/F16/BF16) are widened to f32 once and use a
//! register-tiled f32 GEMM. Row groups are spread over the worker pool.

use std::borrow::Cow;
use std::cell::RefCell;

use hearth_core::GgmlType;

use crate::dispatch::kernels;
use crate::kernels::reference::{self, Unsupported};
use crate::packed::acts::{ActRule, QuantizedActs};
use crate::packed::ternary::TernaryMatrix;
use crate::packed::PackedMatrix;
use crate::pool::{self, SharedOut};

/// Float weight rows multiplied together by one task (16 rows × 2048 cols =
/// 128 KiB, inside L2).
const FLOAT_TILE_ROWS: usize = 16;

/// Tasks per thread for a matmul: enough to even out uneven progress.
const TASKS_PER_THREAD: usize = 4;

/// A weight matrix in the form the CPU kernels read.
#[derive(Debug, Clone)]
pub enum CpuWeight {
    /// Quantized, repacked for the integer kernels.
    Packed(PackedMatrix),
    /// Ternary, repacked as 2-bit codes.
    Ternary(TernaryMatrix),
    /// Float weights widened to f32; activations are rounded to `act_ty`
    /// first, as ggml does (its F16 dot products convert activations to f16).
    Float {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// `rows × cols`.
        data: Vec<f32>,
        /// Type activations are rounded through.
        act_ty: GgmlType,
    },
}

impl CpuWeight {
    /// Prepares `rows × cols` elements of `ty` (ggml encoding) for [`matmul`].
    pub fn new(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Result<Self, Unsupported> {
        if let Some(p) = PackedMatrix::pack(ty, data, rows, cols) {
            return Ok(Self::Packed(p));
        }
        if let Some(t) = TernaryMatrix::pack(ty, data, rows, cols) {
            return Ok(Self::Ternary(t));
        }
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(Unsupported(ty));
        }
        let row_bytes = ty.row_bytes(cols).ok_or(Unsupported(ty))?;
        let mut out = vec![0f32; rows * cols];
        for (src, dst) in data.chunks_exact(row_bytes).zip(out.chunks_exact_mut(cols)) {
            reference::dequantize_row(ty, src, dst)?;
        }
        Ok(Self::Float { rows, cols, data: out, act_ty: reference::vec_dot_type(ty) })
    }

    /// Output features.
    #[must_use]
    pub fn rows(&self) -> usize {
        match self {
            Self::Packed(p) => p.rows,
            Self::Ternary(t) => t.rows,
            Self::Float { rows, .. } => *rows,
        }
    }

    /// Input features.
    #[must_use]
    pub fn cols(&self) -> usize {
        match self {
            Self::Packed(p) => p.cols,
            Self::Ternary(t) => t.cols,
            Self::Float { cols, .. } => *cols,
        }
    }

    /// Bytes held in memory (and read by one decode step).
    #[must_use]
    pub fn bytes(&self) -> usize {
        match self {
            Self::Packed(p) => p.bytes(),
            Self::Ternary(t) => t.bytes(),
            Self::Float { data, .. } => data.len() * 4,
        }
    }
}

/// `out[t * rows + r] = W[r] · x[t]` for `t < n`; `x` is `n × cols`.
///
/// # Panics
/// When `x` or `out` is too short.
pub fn matmul(w: &CpuWeight, x: &[f32], n: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(x.len() >= n * cols && out.len() >= n * rows, "matmul buffers too short");
    if n == 0 {
        return;
    }
    match w {
        CpuWeight::Packed(p) => {
            integer_matmul(ActRule::for_weights(p.ty), p.cols, p.rows, p.groups(), x, n, out, &|g, acts, out| {
                (kernels().packed_group)(p, g, acts, out);
            });
        }
        CpuWeight::Ternary(t) => {
            integer_matmul(ActRule::for_weights(t.ty), t.cols, t.rows, t.groups(), x, n, out, &|g, acts, out| {
                (kernels().ternary_group)(t, g, acts, out);
            });
        }
        CpuWeight::Float { data, act_ty, .. } => float_matmul(data, rows, cols, *act_ty, x, n, out),
    }
}

thread_local! {
    /// Quantized activations of the current call, reused across calls.
    static ACTS: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::default());
}

/// Quantizes `x` by `rule` once, then runs `group(g, acts, out)` for every
/// row group of a `rows × cols` integer-kernel matrix, spread over the pool.
#[allow(clippy::too_many_arguments)]
fn integer_matmul(
    rule: ActRule,
    cols: usize,
    rows: usize,
    groups: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    group: &(dyn Fn(usize, &QuantizedActs, &SharedOut) + Sync),
) {
    ACTS.with_borrow_mut(|acts| {
        acts.quantize_with(rule, x, n, cols);
        let per_task = groups.div_ceil(pool::global().threads() * TASKS_PER_THREAD).max(1);
        let out = SharedOut::new(&mut out[..n * rows]);
        let acts = &*acts;
        pool::parallel_for(groups.div_ceil(per_task), &|task| {
            for g in task * per_task..((task + 1) * per_task).min(groups) {
                group(g, acts, &out);
            }
        });
    });
}

fn float_matmul(w: &[f32], rows: usize, cols: usize, act_ty: GgmlType, x: &[f32], n: usize, out: &mut [f32]) {
    let gemm_tile = kernels().gemm_tile;
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
    pool::parallel_for(rows.div_ceil(FLOAT_TILE_ROWS), &|tile| {
        let r0 = tile * FLOAT_TILE_ROWS;
        let nr = FLOAT_TILE_ROWS.min(rows - r0);
        let mut by_row = vec![0f32; nr * n];
        gemm_tile(&w[r0 * cols..(r0 + nr) * cols], nr, x, n, cols, &mut by_row);
        for t in 0..n {
            // SAFETY: rows r0..r0+nr of every output row belong to this tile only.
            #[allow(unsafe_code)]
            let dst = unsafe { out.slice(t * rows + r0, nr) };
            for (i, d) in dst.iter_mut().enumerate() {
                *d = by_row[i * n + t];
            }
        }
    });
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
