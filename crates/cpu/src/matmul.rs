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
    /// Quantized activations of the jobs of a [`matmul_many`] call.
    static MANY_ACTS: RefCell<Vec<QuantizedActs>> = const { RefCell::new(Vec::new()) };
}

/// Independent products `out = x · wᵀ` (`(w, x, n, out)`, each as
/// [`matmul`]) in one pool dispatch: the row groups of all integer-kernel
/// jobs form one task list, so a MoE layer's experts or attention's Q/K/V
/// cost one synchronization, and threads balance across the jobs. Jobs
/// reading the same activations with the same rounding share one
/// quantization. Results are bit-identical to separate [`matmul`] calls.
///
/// # Panics
/// When a job's `x` or `out` is too short.
pub fn matmul_many(jobs: &mut [(&CpuWeight, &[f32], usize, &mut [f32])]) {
    let mut integer = Vec::new();
    for (j, (w, x, n, out)) in jobs.iter_mut().enumerate() {
        assert!(x.len() >= *n * w.cols() && out.len() >= *n * w.rows(), "matmul buffers too short");
        match w {
            CpuWeight::Float { .. } => matmul(w, x, *n, out),
            _ if *n > 0 => integer.push(j),
            _ => {}
        }
    }
    if integer.is_empty() {
        return;
    }
    MANY_ACTS.with_borrow_mut(|acts| {
        // `source[i]`: index into `acts` of job `integer[i]`'s activations.
        let mut source: Vec<usize> = Vec::with_capacity(integer.len());
        let mut keys: Vec<(*const f32, usize, usize, ActRule)> = Vec::new();
        for &j in &integer {
            let (w, x, n, _) = &jobs[j];
            let rule = integer_rule(w);
            let key = (x.as_ptr(), *n, w.cols(), rule);
            let at = if let Some(at) = keys.iter().position(|k| *k == key) {
                at
            } else {
                keys.push(key);
                if acts.len() < keys.len() {
                    acts.push(QuantizedActs::default());
                }
                acts[keys.len() - 1].quantize_with(rule, x, *n, w.cols());
                keys.len() - 1
            };
            source.push(at);
        }
        // One task list over every job's row groups.
        let total: usize = integer.iter().map(|&j| groups_of(jobs[j].0)).sum();
        let per_task = total.div_ceil(pool::global().threads() * TASKS_PER_THREAD).max(1);
        let mut tasks = Vec::new();
        for (i, &j) in integer.iter().enumerate() {
            let g = groups_of(jobs[j].0);
            tasks.extend((0..g).step_by(per_task).map(|g0| (i, g0, (g0 + per_task).min(g))));
        }
        let outs: Vec<SharedOut> = integer
            .iter()
            .map(|&j| {
                let (w, _, n, out) = &mut jobs[j];
                SharedOut::new(&mut out[..*n * w.rows()])
            })
            .collect();
        let (acts, jobs, integer) = (&*acts, &*jobs, &integer);
        pool::parallel_for(tasks.len(), &|task| {
            let (i, g0, g1) = tasks[task];
            let (w, a, out) = (jobs[integer[i]].0, &acts[source[i]], &outs[i]);
            for g in g0..g1 {
                match w {
                    CpuWeight::Packed(p) => (kernels().packed_group)(p, g, a, out),
                    CpuWeight::Ternary(t) => (kernels().ternary_group)(t, g, a, out),
                    CpuWeight::Float { .. } => unreachable!("float jobs ran above"),
                }
            }
        });
    });
}

/// Activation rounding of an integer-kernel weight.
fn integer_rule(w: &CpuWeight) -> ActRule {
    match w {
        CpuWeight::Packed(p) => ActRule::for_weights(p.ty),
        CpuWeight::Ternary(t) => ActRule::for_weights(t.ty),
        CpuWeight::Float { act_ty, .. } => ActRule::for_weights(*act_ty),
    }
}

/// Row groups of an integer-kernel weight.
fn groups_of(w: &CpuWeight) -> usize {
    match w {
        CpuWeight::Packed(p) => p.groups(),
        CpuWeight::Ternary(t) => t.groups(),
        CpuWeight::Float { rows, .. } => rows.div_ceil(crate::packed::GROUP),
    }
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
