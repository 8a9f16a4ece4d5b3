//! Attention for long runs of query rows (prefill, perplexity) in the order of
//! llama.cpp's tiled CPU flash attention, which ggml uses once a batch holds
//! at least [`TILE`] query rows and the cache is f16: f32 queries, keys and
//! values converted to f32 a tile of [`TILE`] positions at a time, scores and
//! value sums as small GEMMs (one FMA chain per element, `kernels().gemm_acc`),
//! and the online softmax updated once per key tile rather than once per key.
//!
//! Per query row and key tile: `m' = max(m, max s)`; when it grows, the
//! accumulator and the sum are scaled by `expf(m − m')`; `p = expf(s − m')`
//! (ggml's vector `expf`), `sum += Σp` (16 at a time in `_mm512_reduce_add_ps`
//! order, gathered in f64), `acc += p·V`; at the end `out = acc · (1/sum)`.
//! Being GEMMs, both products run at several times the speed of the per-key
//! path; their results do not depend on how rows or heads are split.

use crate::dispatch::kernels;
use crate::kv::read_row;
use crate::ops::{AttentionCall, AttentionTask};

/// Query rows per tile and key positions per tile (ggml's `GGML_FA_TILE_Q`
/// and `GGML_FA_TILE_KV`); also the fewest rows of one sequence for which a
/// batch takes this path, as in ggml.
pub const TILE: usize = 64;

/// Per-thread buffers of [`attend_tiled`].
#[derive(Default)]
pub(crate) struct TiledScratch {
    /// Queries, `[head][row][hd]`.
    q: Vec<f32>,
    /// Keys of the tile, transposed: `[hd][TILE]`.
    kt: Vec<f32>,
    /// Values of the tile: `[TILE][vhd]`.
    v: Vec<f32>,
    /// One key row, widened.
    key: Vec<f32>,
    /// Scores, then probabilities, of one head: `[row][TILE]`.
    kq: Vec<f32>,
    /// Output accumulators `[head][row][vhd]`, running maxima and sums `[head][row]`.
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// An [`AttentionTask`] (at most [`TILE`] rows) in the tiled order, each
/// row over its own span; writes its outputs.
pub(crate) fn attend_tiled(call: &AttentionCall<'_, '_>, task: AttentionTask, w: &mut TiledScratch) {
    let AttentionCall { q, s, kv, spans, sinks, out } = *call;
    let AttentionTask { rows, kvh, heads } = task;
    let (hd, vhd) = (s.head_dim, s.v_head_dim);
    let first_head = kvh * (s.n_head / s.n_kv_head) + heads.start;
    let (group, nr) = (heads.len(), rows.len());
    let tile = &spans[rows.clone()];
    let Some(first) = tile.first() else { return };
    let (start, end) = (tile.iter().map(|t| t.start).min().unwrap_or(0), tile.iter().map(|t| t.end).max().unwrap_or(0));
    let k = kernels();
    w.q.resize(group * nr * hd, 0.0);
    for h in 0..group {
        for (i, row) in rows.clone().enumerate() {
            let src = row * s.n_head * hd + (first_head + h) * hd;
            w.q[(h * nr + i) * hd..(h * nr + i + 1) * hd].copy_from_slice(&q[src..src + hd]);
        }
    }
    w.acc.clear();
    w.acc.resize(group * nr * vhd, 0.0);
    w.max.clear();
    w.max.resize(group * nr, f32::NEG_INFINITY);
    w.sum.clear();
    w.sum.resize(group * nr, 0.0);
    w.kt.resize(hd * TILE, 0.0);
    w.v.resize(TILE * vhd, 0.0);
    w.key.resize(hd, 0.0);
    w.kq.resize(nr * TILE, 0.0);
    for c0 in (start / TILE * TILE..end).step_by(TILE) {
        let c1 = (c0 + TILE).min(end);
        if tile.iter().all(|t| t.end <= c0 || t.start >= c1) {
            continue;
        }
        // Positions outside the tile's real keys stay zero (ggml pads so);
        // their scores are masked, their probabilities 0.
        w.kt.fill(0.0);
        w.v.fill(0.0);
        for p in c0..c1 {
            let row = kv.row(first.blocks, p);
            read_row(&kv.keys, kv.dim, row, kvh * hd, &mut w.key);
            for (d, &x) in w.key.iter().enumerate() {
                w.kt[d * TILE + p - c0] = x;
            }
            read_row(&kv.values, kv.v_dim, row, kvh * vhd, &mut w.v[(p - c0) * vhd..(p - c0 + 1) * vhd]);
        }
        for h in 0..group {
            w.kq.fill(0.0);
            (k.gemm_acc)(&mut w.kq, &w.q[h * nr * hd..(h + 1) * nr * hd], &w.kt, nr, hd, TILE);
            for (i, span) in tile.iter().enumerate() {
                let state = h * nr + i;
                let acc = &mut w.acc[state * vhd..(state + 1) * vhd];
                let row = &mut w.kq[i * TILE..(i + 1) * TILE];
                let visible = |tk: usize| (span.start..span.end).contains(&(c0 + tk));
                let mut tile_max = f32::NEG_INFINITY;
                for (tk, x) in row.iter_mut().enumerate() {
                    *x = if visible(tk) { s.score(*x) } else { f32::NEG_INFINITY };
                    tile_max = tile_max.max(*x);
                }
                if tile_max == f32::NEG_INFINITY {
                    // Nothing visible: probabilities 0 leave the accumulator as it is.
                    row.fill(0.0);
                    continue;
                }
                let m_old = w.max[state];
                let m_new = m_old.max(tile_max);
                if m_new > m_old {
                    let ms = (m_old - m_new).exp();
                    acc.iter_mut().for_each(|a| *a *= ms);
                    w.sum[state] *= ms;
                }
                w.max[state] = m_new;
                // Masked scores (−∞) come out as 0.
                w.sum[state] = (f64::from(w.sum[state]) + (k.soft_max)(row, m_new)) as f32;
            }
            (k.gemm_acc)(&mut w.acc[h * nr * vhd..(h + 1) * nr * vhd], &w.kq, &w.v, nr, TILE, vhd);
        }
    }
    let out_stride = s.n_head * vhd;
    for (i, row) in rows.enumerate() {
        for h in 0..group {
            let state = h * nr + i;
            // SAFETY: this head of this row is written by this task only.
            #[allow(unsafe_code)]
            let o = unsafe { out.slice(row * out_stride + (first_head + h) * vhd, vhd) };
            if let Some(sinks) = sinks {
                let acc = &mut w.acc[state * vhd..(state + 1) * vhd];
                w.sum[state] = crate::ops::add_sink(sinks[first_head + h], w.max[state], w.sum[state], acc);
            }
            let inv = if w.sum[state] == 0.0 { 0.0 } else { 1.0 / w.sum[state] };
            o.iter_mut().zip(&w.acc[state * vhd..(state + 1) * vhd]).for_each(|(o, a)| *o = a * inv);
        }
    }
}
