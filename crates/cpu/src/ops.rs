//! Element-wise and attention operations. Written as plain loops that the
//! compiler vectorizes; the heavy ones are spread over the rayon pool.

use half::f16;
use half::slice::HalfFloatSliceExt;
use hearth_core::{Activation, AttentionShape, AttentionSpan, RopeParams, RopeStyle};
use rayon::prelude::*;

use crate::dispatch::kernels;

/// In-place RMS norm of each `dim`-sized row, scaled by `weight`.
///
/// The arithmetic is ggml's (`ggml_compute_forward_rms_norm_f32` then
/// `ggml_mul`): squares summed in f64, `x * scale` then `* weight`, each
/// rounded to f32. Models with large activation outliers (Gemma) quantize
/// activations into coarse blocks, where one ulp here can flip a rounding.
pub fn rms_norm(x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
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
/// Angles follow ggml's `ggml_rope_cache_init` exactly: `theta` starts at
/// the position and is multiplied by `base^(-2/n_rot)` for each pair, in f32
/// (not `powf` per pair), because K is rounded to f16 in the cache and a
/// last-bit difference can flip that rounding.
pub fn rope(x: &mut [f32], head_dim: usize, positions: &[usize], p: &RopeParams) {
    let half = p.n_rot / 2;
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let row_len = x.len() / positions.len().max(1);
    let mut cos = vec![0f32; half];
    let mut sin = vec![0f32; half];
    for (row, &pos) in x.chunks_exact_mut(row_len).zip(positions) {
        let mut theta = pos as f32;
        for i in 0..half {
            let t = p.freq_scale * theta;
            (sin[i], cos[i]) = (t.sin(), t.cos());
            theta *= theta_scale;
        }
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match p.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::NeoX => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// `gate = act(gate) * up`.
pub fn gated_activation(gate: &mut [f32], up: &[f32], act: Activation) {
    match act {
        Activation::Silu => gate.iter_mut().zip(up).for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u),
        Activation::GeluTanh => gate.iter_mut().zip(up).for_each(|(g, u)| *g = gelu_f16_table(*g) * u),
    }
}

/// GELU as ggml evaluates it on the CPU (`GGML_GELU_FP16`): through a table
/// indexed by the f16 input holding f16 outputs, saturating outside ±10.
#[must_use]
pub fn gelu_f16_table(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16::from_f32(gelu_tanh(f16::from_f32(x).to_f32())).to_f32()
    }
}

/// GELU with the tanh approximation (ggml `ggml_gelu`).
#[must_use]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Attention of every query row and head over its span, split by (row,
/// head); grouped-query heads share K/V rows.
///
/// Numerics follow ggml's CPU flash attention with an f16 cache
/// (`ggml_compute_forward_flash_attn_ext_f16`): the query is rounded to f16,
/// `q·k` accumulates in f32, and the softmax runs online with the weighted
/// sum of values kept in an f16 accumulator, rescaled whenever a new
/// maximum appears. Matching it keeps greedy output identical to llama.cpp's.
pub fn attention(q: &[f32], s: &AttentionShape, spans: &[AttentionSpan<'_>], out: &mut [f32]) {
    let hd = s.head_dim;
    let group = s.n_head / s.n_kv_head;
    let kv_stride = s.n_kv_head * hd;
    let dot = kernels().dot;
    let (caches, cache_of_row) = widen_spans(spans, kv_stride);
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || (vec![0f32; hd], vec![0f32; hd], vec![f16::ZERO; hd]),
        |(qf, acc, acc16), (idx, o)| {
            let (row, head) = (idx / s.n_head, idx % s.n_head);
            let span = &spans[row];
            let (keys, values) = &caches[cache_of_row[row]];
            let kv_off = (head / group) * hd;
            acc16.convert_from_f32_slice(&q[idx * hd..(idx + 1) * hd]);
            acc16.convert_to_f32_slice(qf);
            acc.fill(0.0);
            let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
            for p in span.start..span.end {
                let base = p * kv_stride + kv_off;
                let score = dot(qf, &keys[base..base + hd]) * s.scale;
                let (mut ms, mut vs) = (1f32, 1f32);
                if score > max {
                    ms = (max - score).exp();
                    max = score;
                    acc.iter_mut().for_each(|a| *a *= ms);
                    round_to_f16(acc, acc16);
                } else {
                    vs = (score - max).exp();
                }
                for (a, v) in acc.iter_mut().zip(&values[base..base + hd]) {
                    *a = v.mul_add(vs, *a);
                }
                round_to_f16(acc, acc16);
                sum = sum * ms + vs;
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            o.iter_mut().zip(acc.iter()).for_each(|(o, a)| *o = a * inv);
        },
    );
}

/// Rounds every element of `x` to the nearest f16 (vectorized via `half`'s
/// slice conversions, which use F16C when the CPU has it).
fn round_to_f16(x: &mut [f32], scratch: &mut [f16]) {
    scratch.convert_from_f32_slice(x);
    scratch.convert_to_f32_slice(x);
}

/// Keys and values of one sequence widened to f32.
type WideKv = (Vec<f32>, Vec<f32>);

/// f32 copies of the distinct K/V spans of a batch (one per sequence, up to
/// the furthest position any of its rows reads), and which copy each row
/// uses. Widening f16 to f32 is exact, so this only saves repeated work.
fn widen_spans(spans: &[AttentionSpan<'_>], kv_stride: usize) -> (Vec<WideKv>, Vec<usize>) {
    let mut distinct: Vec<(usize, usize)> = Vec::new(); // (first row using it, max end)
    let mut of_row = Vec::with_capacity(spans.len());
    for (row, span) in spans.iter().enumerate() {
        let found = distinct.iter().position(|&(r, _)| std::ptr::eq(spans[r].keys.as_ptr(), span.keys.as_ptr()));
        let i = found.unwrap_or_else(|| {
            distinct.push((row, 0));
            distinct.len() - 1
        });
        distinct[i].1 = distinct[i].1.max(span.end);
        of_row.push(i);
    }
    let caches = distinct
        .par_iter()
        .map(|&(row, end)| {
            let n = end * kv_stride;
            let mut k = vec![0f32; n];
            let mut v = vec![0f32; n];
            spans[row].keys[..n].convert_to_f32_slice(&mut k);
            spans[row].values[..n].convert_to_f32_slice(&mut v);
            (k, v)
        })
        .collect();
    (caches, of_row)
}
