//! Element-wise and attention operations. Written as plain loops that the
//! compiler vectorizes; the heavy ones are spread over the rayon pool.

use half::f16;
use hearth_core::{Activation, AttentionShape, AttentionSpan, RopeParams, RopeStyle};
use rayon::prelude::*;

use crate::dispatch::kernels;

/// In-place RMS norm of each `dim`-sized row, scaled by `weight`.
pub fn rms_norm(x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v *= inv * w;
        }
    }
}

/// In-place rotary embedding; `x` is `positions.len()` rows of whole heads.
pub fn rope(x: &mut [f32], head_dim: usize, positions: &[usize], p: &RopeParams) {
    let half = p.n_rot / 2;
    // theta_i = pos * scale * base^(-2i/n_rot), as in ggml's rope_yarn with ext_factor 0.
    let inv_freq: Vec<f32> = (0..half).map(|i| p.freq_base.powf(-((2 * i) as f32) / p.n_rot as f32)).collect();
    let row_len = x.len() / positions.len().max(1);
    for (row, &pos) in x.chunks_exact_mut(row_len).zip(positions) {
        let (sin, cos): (Vec<f32>, Vec<f32>) =
            inv_freq.iter().map(|f| (pos as f32 * p.freq_scale * f).sin_cos()).unzip();
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
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || (vec![0f32; hd], vec![0f32; hd], vec![f16::ZERO; hd]),
        |(qf, kf, acc), (idx, o)| {
            let (row, head) = (idx / s.n_head, idx % s.n_head);
            let span = &spans[row];
            let kv_off = (head / group) * hd;
            for (d, &v) in qf.iter_mut().zip(&q[idx * hd..(idx + 1) * hd]) {
                *d = f16::from_f32(v).to_f32();
            }
            acc.fill(f16::ZERO);
            let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
            for p in span.start..span.end {
                let base = p * kv_stride + kv_off;
                for (d, k) in kf.iter_mut().zip(&span.keys[base..base + hd]) {
                    *d = k.to_f32();
                }
                let score = dot(qf, kf) * s.scale;
                let (mut ms, mut vs) = (1f32, 1f32);
                if score > max {
                    ms = (max - score).exp();
                    max = score;
                    acc.iter_mut().for_each(|a| *a = f16::from_f32(a.to_f32() * ms));
                } else {
                    vs = (score - max).exp();
                }
                for (a, v) in acc.iter_mut().zip(&span.values[base..base + hd]) {
                    *a = f16::from_f32(v.to_f32().mul_add(vs, a.to_f32()));
                }
                sum = sum * ms + vs;
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            for (o, a) in o.iter_mut().zip(acc.iter()) {
                *o = a.to_f32() * inv;
            }
        },
    );
}
