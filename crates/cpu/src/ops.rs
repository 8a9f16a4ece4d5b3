//! Element-wise and attention operations. Written as plain loops that the
//! compiler vectorizes; the heavy ones are spread over the worker pool.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use half::f16;
use half::slice::HalfFloatSliceExt;
use hearth_core::{Activation, AttentionShape, AttentionSpan, KvData, KvLayer, RopeParams, RopeStyle};

use crate::dispatch::kernels;
use crate::kv::read_row;
use crate::pool::{SharedOut, ThreadPool};
use crate::tiled_attention::{attend_tiled, TiledScratch, TILE};

/// In-place RMS norm of each `dim`-sized row, scaled by `weight`.
///
/// The arithmetic is ggml's (`ggml_compute_forward_rms_norm_f32` then
/// `ggml_mul`): squares summed in f64, `x * scale` then `* weight`, each
/// rounded to f32. Models with large activation outliers (Gemma) quantize
/// activations into coarse blocks, where one ulp here can flip a rounding.
pub fn rms_norm(pool: &ThreadPool, x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
    pool.for_each_chunk_mut(x, dim * rows_per_task(dim), &|_, rows| rms_norm_rows(rows, dim, weight, eps));
}

/// Rows of `dim` elements handled by one task of an element-wise op: about
/// 64 Ki elements, so decode-sized inputs stay on one thread.
fn rows_per_task(dim: usize) -> usize {
    (ELEMENTS_PER_TASK / dim.max(1)).max(1)
}

/// Elements per task of the element-wise operations.
const ELEMENTS_PER_TASK: usize = 1 << 16;

fn rms_norm_rows(x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / dim as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// In-place rotary embedding; `x` is `positions.len()` rows of whole heads.
///
/// Numerics follow ggml's CPU `rope` exactly: `theta` starts at the position
/// and is multiplied by `base^(-2/n_rot)` for each pair, in f32 (not `powf`
/// per pair); the rotation is `fma(x0, cos, −x1·sin)`, `fma(x0, sin, x1·cos)`
/// (what GCC contracts ggml's `x0*cos - x1*sin` into). K is rounded to f16
/// in the cache, so a last-bit difference here can flip that rounding.
pub fn rope(x: &mut [f32], head_dim: usize, positions: &[usize], p: &RopeParams) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA; the body is the portable one, compiled with it.
        #[allow(unsafe_code)]
        unsafe {
            rope_fma(x, head_dim, positions, p);
        }
        return;
    }
    rope_portable(x, head_dim, positions, p);
}

/// ggml's `rope_yarn_ramp` for the pair `i` (dimension `2i`): 1 below the
/// first correction dimension, 0 above the second, linear between.
#[inline]
fn yarn_ramp(dims: [f32; 2], i: usize) -> f32 {
    let y = (i as f32 - dims[0]) / (dims[1] - dims[0]).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// [`rope_portable`] compiled with hardware FMA (`mul_add` is otherwise a libm call).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "fma")]
unsafe fn rope_fma(x: &mut [f32], head_dim: usize, positions: &[usize], p: &RopeParams) {
    rope_portable(x, head_dim, positions, p);
}

// Inlined into `rope_fma` so that `mul_add` compiles to FMA instructions there.
#[allow(clippy::inline_always)]
#[inline(always)]
fn rope_portable(x: &mut [f32], head_dim: usize, positions: &[usize], p: &RopeParams) {
    let half = p.n_rot / 2;
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let row_len = x.len() / positions.len().max(1);
    let mut cos = vec![0f32; half];
    let mut sin = vec![0f32; half];
    // YaRN's magnitude correction, as ggml's `rope_yarn` scales `mscale`.
    let mscale = if p.ext_factor == 0.0 {
        p.attn_factor
    } else {
        p.attn_factor * 0.1f32.mul_add((1.0 / p.freq_scale).ln(), 1.0)
    };
    for (row, &pos) in x.chunks_exact_mut(row_len).zip(positions) {
        let mut theta = pos as f32;
        for i in 0..half {
            // ggml's `rope_yarn`: the angle scaled (interpolated) and, where
            // YaRN mixes, blended with the unscaled (extrapolated) one.
            let extrap = p.freq_factors.as_ref().map_or(theta, |f| theta / f[i]);
            let interp = p.freq_scale * extrap;
            let t = if p.ext_factor == 0.0 {
                interp
            } else {
                let ramp_mix = yarn_ramp(p.corr_dims, i) * p.ext_factor;
                interp.mul_add(1.0 - ramp_mix, extrap * ramp_mix)
            };
            (sin[i], cos[i]) = (t.sin() * mscale, t.cos() * mscale);
            theta *= theta_scale;
        }
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match p.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::NeoX => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
                head[b] = x0.mul_add(sin[i], x1 * cos[i]);
            }
        }
    }
}

/// `gate = act(gate) * up`.
pub fn gated_activation(pool: &ThreadPool, gate: &mut [f32], up: &[f32], act: Activation) {
    pool.for_each_chunk_mut(gate, ELEMENTS_PER_TASK, &|i, g| {
        let start = i * ELEMENTS_PER_TASK;
        gated_activation_part(g, &up[start..start + g.len()], act);
    });
}

fn gated_activation_part(gate: &mut [f32], up: &[f32], act: Activation) {
    match act {
        Activation::Silu => (kernels().silu_mul)(gate, up),
        Activation::GeluTanh => gate.iter_mut().zip(up).for_each(|(g, u)| *g = gelu_f16_table(*g) * u),
        Activation::ReluSquared => gate.iter_mut().zip(up).for_each(|(g, u)| {
            let r = g.max(0.0);
            *g = r * r * u;
        }),
        Activation::SwigluOai => gate.iter_mut().zip(up).for_each(|(g, &u)| *g = swiglu_oai(*g, u)),
    }
}

/// ggml's `swiglu_oai` for one element (α = 1.702, limit 7), its float steps.
#[must_use]
pub fn swiglu_oai(gate: f32, up: f32) -> f32 {
    const ALPHA: f32 = 1.702;
    const LIMIT: f32 = 7.0;
    // std::min by comparison: a NaN gate passes through as in ggml (f32::min would drop it).
    let x = if LIMIT < gate { LIMIT } else { gate };
    let y = up.clamp(-LIMIT, LIMIT);
    let glu = x / (1.0 + (ALPHA * -x).exp());
    glu * (y + 1.0)
}

/// GELU as ggml evaluates it on the CPU (`GGML_GELU_FP16`): through a table
/// indexed by the f16 input holding f16 outputs, saturating outside ±10.
#[must_use]
pub fn gelu_f16_table(x: f32) -> f32 {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let table = TABLE.get_or_init(|| {
            (0..=u16::MAX).map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32()))).collect()
        });
        table[usize::from(f16::from_f32(x).to_bits())].to_f32()
    }
}

/// GELU with the tanh approximation (ggml `ggml_gelu_f32`), with the one
/// FMA GCC contracts its `1.0f + GELU_COEF_A*x*x` into (which flips the f16
/// table entry of some inputs, e.g. −1.999).
#[must_use]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (0.044_715 * x).mul_add(x, 1.0)).tanh())
}

/// In-place orthonormal Walsh–Hadamard transform (Sylvester order, scaled by
/// `1/sqrt(n)`) of `x`, whose length is a power of two.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two(), "Hadamard size {n} is not a power of two");
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi) {
                (*a, *b) = (*a + *b, *a - *b);
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= scale);
}

/// In-place softmax of each `dim`-sized row in ggml's `soft_max` order:
/// `kernels().soft_max` (`reference::soft_max_f32`), then `x · f32(1/Σ)`.
pub fn softmax_rows(x: &mut [f32], dim: usize) {
    let soft_max = kernels().soft_max;
    for row in x.chunks_exact_mut(dim.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv = (1.0 / soft_max(row, max)) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Attention of every query row and head over its span. One task per (tile
/// of query rows, KV head): each key and value row is widened from f16 once
/// and used by all query heads of the tile that share it (grouped-query
/// attention and prefill read K/V once per tile).
///
/// Numerics follow ggml's CPU flash attention with an f16 cache
/// (`ggml_compute_forward_flash_attn_ext_f16`): the query is rounded to f16,
/// `q·k` accumulates in f32, and the softmax runs online with the weighted
/// sum of values kept in an f16 accumulator, rescaled whenever a new
/// maximum appears. Matching it keeps greedy output identical to llama.cpp's.
///
/// With fewer (tile, KV head) pairs than threads — one user decoding with
/// few KV heads, as Gemma 3 (1 KV head) or DeepSeek's latent attention do —
/// the query heads of a KV head are split over tasks too, each re-reading
/// the K/V rows; results do not depend on the split.
pub fn attention(
    pool: &ThreadPool,
    q: &[f32],
    s: &AttentionShape,
    kv: &KvLayer<'_>,
    spans: &[AttentionSpan<'_>],
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let tiles = query_tiles(spans, matches!(kv.keys, KvData::F16(_)));
    let out = SharedOut::new(out);
    let call = AttentionCall { q, s, kv, spans, sinks, out: &out };
    let group = s.n_head / s.n_kv_head;
    let pairs = tiles.len() * s.n_kv_head;
    let splits = pool.threads().div_ceil(pairs.max(1)).clamp(1, group);
    let per_split = group.div_ceil(splits);
    let splits = group.div_ceil(per_split);
    pool.run(pairs * splits, &|task| {
        let (pair, split) = (task / splits, task % splits);
        let ((rows, tiled), kvh) = (tiles[pair / s.n_kv_head].clone(), pair % s.n_kv_head);
        let heads = split * per_split..((split + 1) * per_split).min(group);
        if tiled {
            TILED_SCRATCH.with_borrow_mut(|w| attend_tiled(&call, AttentionTask { rows, kvh, heads }, w));
        } else {
            SCRATCH.with_borrow_mut(|w| attend_tile(&call, AttentionTask { rows, kvh, heads }, w));
        }
    });
}

/// Adds a sink logit `sink` to one head's finished online softmax (running
/// maximum `max`, sum `sum`, value accumulator `acc` in f32): ggml's flash
/// attention after its key loop. Returns the new sum. (Its `S = S*ms + vs`
/// here is a separate multiply and add — GCC does not fuse this one, unlike
/// the key loop's; measured against llama.cpp's outputs.)
pub(crate) fn add_sink(sink: f32, max: f32, sum: f32, acc: &mut [f32]) -> f32 {
    if sink > max {
        let ms = (max - sink).exp();
        acc.iter_mut().for_each(|a| *a *= ms);
        sum * ms + 1.0
    } else {
        sum + (sink - max).exp()
    }
}

/// Query rows attended together (they share each widened K/V row): runs of
/// consecutive batch rows of the same sequence (same block table), at most this many.
const QUERY_TILE: usize = 8;

/// Rows attended together, and whether in the tiled order: a sequence with
/// at least [`TILE`] rows in the batch over an f16 cache goes in tiles of
/// [`TILE`] through `tiled_attention`, others in tiles of [`QUERY_TILE`]
/// through `attend_tile`. ggml decides by the rows of the whole batch; we
/// decide per sequence, so that a sequence's result does not depend on who
/// else is in the batch (the server's greedy replies equal `hearth run`'s).
/// A single user's batches are the same either way.
fn query_tiles(spans: &[AttentionSpan<'_>], f16_cache: bool) -> Vec<(Range<usize>, bool)> {
    let mut tiles = Vec::new();
    let mut row = 0;
    while row < spans.len() {
        let run = spans[row..].iter().take_while(|t| std::ptr::eq(t.blocks, spans[row].blocks)).count();
        let (size, tiled) = if f16_cache && run >= TILE { (TILE, true) } else { (QUERY_TILE, false) };
        tiles.extend((row..row + run).step_by(size).map(|t| (t..(t + size).min(row + run), tiled)));
        row += run;
    }
    tiles
}

thread_local! {
    static SCRATCH: RefCell<AttentionScratch> = RefCell::new(AttentionScratch::default());
    static TILED_SCRATCH: RefCell<TiledScratch> = RefCell::new(TiledScratch::default());
}

#[derive(Default)]
struct AttentionScratch {
    q: Vec<f32>,
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
    key: Vec<f32>,
    value: Vec<f32>,
    half: Vec<f16>,
}

/// What every task of one attention call reads, and where it writes.
#[derive(Clone, Copy)]
pub(crate) struct AttentionCall<'a, 'k> {
    /// Queries, `rows × n_head × head_dim`.
    pub q: &'a [f32],
    pub s: &'a AttentionShape,
    pub kv: &'a KvLayer<'k>,
    /// Per batch row: its sequence's blocks and visible positions.
    pub spans: &'a [AttentionSpan<'k>],
    /// Per query head: a logit that joins the softmax with a zero value.
    pub sinks: Option<&'a [f32]>,
    /// Outputs, `rows × n_head × v_head_dim`.
    pub out: &'a SharedOut,
}

/// One task: query heads `heads` (numbered within KV head `kvh`'s group) of
/// batch rows `rows` (consecutive rows of one sequence).
pub(crate) struct AttentionTask {
    pub rows: Range<usize>,
    pub kvh: usize,
    pub heads: Range<usize>,
}

/// An [`AttentionTask`] key by key (ggml's `one_chunk` order), each row over
/// its own span; writes its outputs.
fn attend_tile(call: &AttentionCall<'_, '_>, task: AttentionTask, w: &mut AttentionScratch) {
    let AttentionCall { q, s, kv, spans, sinks, out } = *call;
    let AttentionTask { rows, kvh, heads: head_range } = task;
    let (hd, vhd) = (s.head_dim, s.v_head_dim);
    // Heads of the KV group handled here; the first is `first_head` of the row.
    let first_head = kvh * (s.n_head / s.n_kv_head) + head_range.start;
    let group = head_range.len();
    let (q_stride, out_stride) = (s.n_head * hd, s.n_head * vhd);
    let heads = rows.len() * group;
    let k = kernels();
    w.half.resize(hd, f16::ZERO);
    w.q.resize(heads * hd, 0.0);
    w.key.resize(hd, 0.0);
    w.value.resize(vhd, 0.0);
    w.acc.clear();
    w.acc.resize(heads * vhd, 0.0);
    w.max.clear();
    w.max.resize(heads, f32::NEG_INFINITY);
    w.sum.clear();
    w.sum.resize(heads, 0.0);
    for (i, row) in rows.clone().enumerate() {
        let first = row * q_stride + first_head * hd;
        for (qh, src) in w.q[i * group * hd..(i + 1) * group * hd].chunks_exact_mut(hd).zip(q[first..].chunks_exact(hd))
        {
            w.half.convert_from_f32_slice(src);
            w.half.convert_to_f32_slice(qh);
        }
    }
    let tile = &spans[rows.clone()];
    let start = tile.iter().map(|t| t.start).min().unwrap_or(0);
    // Spans of one sequence may be cut at their own end: read through the longest.
    let Some(longest) = tile.iter().max_by_key(|t| t.end) else { return };
    for p in start..longest.end {
        let row = kv.row(longest.blocks, p);
        read_row(&kv.keys, kv.dim, row, kvh * hd, &mut w.key);
        read_row(&kv.values, kv.v_dim, row, kvh * vhd, &mut w.value);
        for (i, span) in tile.iter().enumerate() {
            if p < span.start || p >= span.end {
                continue;
            }
            for h in i * group..(i + 1) * group {
                let score = s.score((k.dot_f16_ggml)(&w.q[h * hd..(h + 1) * hd], &w.key));
                let acc = &mut w.acc[h * vhd..(h + 1) * vhd];
                // ggml's `S = S*ms + vs` (compiled to an FMA): with a new
                // maximum vs = 1, otherwise ms = 1 and it is a plain sum.
                if score > w.max[h] {
                    let ms = (w.max[h] - score).exp();
                    w.max[h] = score;
                    (k.scale_round_f16)(acc, ms);
                    (k.mad_round_f16)(acc, &w.value, 1.0);
                    w.sum[h] = w.sum[h].mul_add(ms, 1.0);
                } else {
                    let vs = (score - w.max[h]).exp();
                    (k.mad_round_f16)(acc, &w.value, vs);
                    w.sum[h] += vs;
                }
            }
        }
    }
    for (i, row) in rows.enumerate() {
        // SAFETY: these heads of this row are written by this task only.
        #[allow(unsafe_code)]
        let o = unsafe { out.slice(row * out_stride + first_head * vhd, group * vhd) };
        for (j, o) in o.chunks_exact_mut(vhd).enumerate() {
            let h = i * group + j;
            if let Some(sinks) = sinks {
                let acc = &mut w.acc[h * vhd..(h + 1) * vhd];
                w.sum[h] = add_sink(sinks[first_head + j], w.max[h], w.sum[h], acc);
            }
            let inv = if w.sum[h] == 0.0 { 0.0 } else { 1.0 / w.sum[h] };
            o.iter_mut().zip(&w.acc[h * vhd..(h + 1) * vhd]).for_each(|(o, a)| *o = a * inv);
        }
    }
}

#[cfg(test)]
mod activation_tests {
    use super::*;

    #[test]
    fn squared_relu_gates_with_relu_of_the_gate_squared() {
        let mut gate = vec![-2.0, 0.0, 0.5, 3.0];
        gated_activation(&ThreadPool::new(1), &mut gate, &[1.0, 1.0, 2.0, -1.0], Activation::ReluSquared);
        assert_eq!(gate, [0.0, 0.0, 0.5, -9.0]);
    }

    #[test]
    fn silu_uses_ggml_expf_within_an_ulp_or_two_of_libm() {
        for x in [-20.0f32, -3.5, -0.1, 0.0, 0.7, 4.0, 30.0] {
            let e = crate::kernels::reference::expf_ggml(x);
            assert!((e - x.exp()).abs() <= 3.0 * f32::EPSILON * x.exp(), "{x}: {e} vs {}", x.exp());
        }
        let mut g = vec![1.0f32; 3];
        gated_activation(&ThreadPool::new(1), &mut g, &[2.0, 2.0, 2.0], Activation::Silu);
        assert!((g[0] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
    }
}

#[cfg(test)]
mod hadamard_tests {
    use super::hadamard;

    #[test]
    fn hadamard_is_its_own_inverse_and_keeps_dot_products() {
        let a: Vec<f32> = (0..64).map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.37).collect();
        let b: Vec<f32> = (0..64).map(|i| ((i * 17 % 11) as f32 - 5.0) * 0.21).collect();
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let (mut ra, mut rb) = (a.clone(), b.clone());
        hadamard(&mut ra);
        hadamard(&mut rb);
        assert!((dot(&ra, &rb) - dot(&a, &b)).abs() < 1e-3);
        hadamard(&mut ra);
        assert!(ra.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}

#[cfg(test)]
mod attention_tests {
    use half::f16;
    use hearth_core::{AttentionShape, AttentionSpan, BlockId, KvData, KvLayer};

    use super::{attend_tile, attention, AttentionCall, AttentionScratch, AttentionTask};
    use crate::pool::{SharedOut, ThreadPool};

    /// One decoding row with one KV head (Gemma 3, MLA): the query heads are
    /// split over tasks; every head's output must equal the unsplit tile's.
    #[test]
    fn head_split_single_row_equals_whole_group() {
        let s = AttentionShape { n_head: 4, n_kv_head: 1, head_dim: 96, v_head_dim: 64, scale: 0.125, softcap: 0.0 };
        let val = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 40.0;
        let (rows, dim) = (16, 96);
        let keys: Vec<f16> = (0..rows * dim).map(|i| f16::from_f32(val(i))).collect();
        // Latent attention: the values are the first 64 elements of each key row.
        let kv = KvLayer { block_size: 16, dim, v_dim: dim, keys: KvData::F16(&keys), values: KvData::F16(&keys) };
        let blocks = [BlockId(0)];
        let spans = [AttentionSpan { blocks: &blocks, start: 0, end: 11 }];
        let q: Vec<f32> = (0..4 * 96).map(|i| val(i + 7) * 0.3).collect();
        let mut split = vec![0.0; 4 * 64];
        // Four threads for one (tile, KV head) pair: the heads are split.
        attention(&ThreadPool::new(4), &q, &s, &kv, &spans, None, &mut split);
        let mut whole = vec![0.0; 4 * 64];
        let out = SharedOut::new(&mut whole);
        let call = AttentionCall { q: &q, s: &s, kv: &kv, spans: &spans, sinks: None, out: &out };
        attend_tile(&call, AttentionTask { rows: 0..1, kvh: 0, heads: 0..4 }, &mut AttentionScratch::default());
        assert!(split.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(whole.iter().any(|&v| v != 0.0));
    }

    /// A 150-row causal prefill (tiled order: rows in tiles of 64, keys in
    /// tiles of 64, a sliding window on some rows) against softmax in f64.
    #[test]
    fn tiled_prefill_equals_exact_softmax() {
        let (n, hd, vhd) = (150usize, 32, 16);
        let s = AttentionShape { n_head: 2, n_kv_head: 1, head_dim: hd, v_head_dim: vhd, scale: 0.25, softcap: 0.0 };
        let val = |i: usize| ((i * 7919 % 211) as f32 - 105.0) / 60.0;
        let dim = hd + vhd;
        let keys: Vec<f16> = (0..160 * dim).map(|i| f16::from_f32(val(i))).collect();
        let kv = KvLayer { block_size: 16, dim, v_dim: dim, keys: KvData::F16(&keys), values: KvData::F16(&keys) };
        // Blocks in scrambled order: positions map through the table.
        let blocks: Vec<BlockId> = (0..10u32).map(|b| BlockId((b * 3) % 10)).collect();
        let spans: Vec<AttentionSpan<'_>> = (0..n)
            .map(|p| AttentionSpan {
                blocks: &blocks,
                start: if p % 3 == 0 { p.saturating_sub(70) } else { 0 },
                end: p + 1,
            })
            .collect();
        let q: Vec<f32> = (0..n * 2 * hd).map(|i| val(i + 3)).collect();
        let mut out = vec![0.0; n * 2 * vhd];
        attention(&ThreadPool::new(2), &q, &s, &kv, &spans, None, &mut out);
        // Values are the leading part of each key row (`v_dim` = `dim`), as with MLA.
        let k_at = |p: usize, d: usize| f64::from(keys[kv.row(&blocks, p) * dim + d].to_f32());
        let v_at = k_at;
        for (row, span) in spans.iter().enumerate() {
            for h in 0..2 {
                let qh = &q[(row * 2 + h) * hd..(row * 2 + h + 1) * hd];
                let scores: Vec<f64> = (span.start..span.end)
                    .map(|p| 0.25 * qh.iter().enumerate().map(|(d, &x)| f64::from(x) * k_at(p, d)).sum::<f64>())
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..vhd {
                    let want: f64 =
                        (span.start..span.end).zip(&weights).map(|(p, w)| w * v_at(p, d)).sum::<f64>() / total;
                    let got = out[(row * 2 + h) * vhd + d];
                    assert!((f64::from(got) - want).abs() < 1e-5, "row {row} head {h} dim {d}: {got} vs {want}");
                }
            }
        }
    }
}
