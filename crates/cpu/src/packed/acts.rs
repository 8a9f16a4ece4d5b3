//! Activations quantized for the packed integer kernels: 8-bit values in
//! blocks of 32 with one scale each (ggml's `Q8_0` rule: `d = amax/127`,
//! rounded to f16, values `round(x · 127/amax)`; see
//! `kernels::reference::quantize_block_q8`), plus the sum of every 16
//! values, which the kernels need for code offsets and minimums.
//!
//! K-quant and ternary weights pair with ggml's `Q8_K` rule instead
//! ([`ActRule::Q8K`]): one f32 scale per 256 values, shared by their eight
//! blocks, so the integer dot products equal llama.cpp's for those types.

// `min_term` is called from `target_feature` kernels and must inline there.
#![allow(clippy::inline_always)]

use half::f16;

use super::BLOCK;
use crate::dispatch::kernels;
use crate::pool::{SharedOut, ThreadPool};

/// Activation rows quantized by one task.
const ROWS_PER_TASK: usize = 16;

/// How activations are rounded to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActRule {
    /// ggml `Q8_0`: per 32 values, `d = amax/127` rounded to f16.
    Q8_0,
    /// ggml `Q8_K`: per 256 values, `iscale = −127/max` (`max` the value of
    /// largest magnitude, sign kept), `q = min(127, round(iscale·x))`,
    /// `d = 1/iscale` in f32.
    Q8K,
}

impl ActRule {
    /// The rule ggml uses for activations meeting weights of `ty`.
    #[must_use]
    pub fn for_weights(ty: hearth_core::GgmlType) -> Self {
        if crate::kernels::reference::vec_dot_type(ty) == hearth_core::GgmlType::Q8_K {
            Self::Q8K
        } else {
            Self::Q8_0
        }
    }
}

/// Values per `Q8_K` super-block.
const QK_K: usize = 256;

/// `x.round_ties_even()` for |x| < 2²² (here |x| ≤ 127): adding and removing
/// 1.5·2²³ leaves no fraction bits, so the FPU's nearest-even rounding does
/// the work. Unlike `round_ties_even` (a libm `rintf` call without SSE4.1
/// at compile time), this vectorizes.
#[inline(always)]
fn round_ties_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// One `Q8_K` super-block (`x.len()` = 256): values into `q`, returns `d`.
fn quantize_super_block_q8k(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (round_ties_even_small(iscale * v) as i32).min(127) as i8;
    }
    1.0 / iscale
}

/// `n` rows of `cols` quantized activations.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    /// Rows.
    pub n: usize,
    /// Elements per row (a multiple of 32).
    pub cols: usize,
    /// `n × cols` values.
    pub qs: Vec<i8>,
    /// `n × cols/32` block scales.
    pub d: Vec<f32>,
    /// `n × cols/16` sums of 16 consecutive values.
    pub sums: Vec<i32>,
    /// `n × cols/4` sums of 4 consecutive values (code offsets of the
    /// lane-wise kernels, see `Layout::lanes`).
    pub sums4: Vec<i32>,
    /// `n × cols/32`: `f16(d · Σ block)` with the unrounded `d`, ggml's
    /// `block_q8_1.s`, the minimum term of types with f16 minimums.
    pub min_terms: Vec<f32>,
}

impl QuantizedActs {
    /// Quantizes `x` (`n × cols`) into `self`, reusing its buffers.
    ///
    /// # Panics
    /// When `cols` is not a multiple of 32 or `x` is shorter than `n × cols`.
    pub fn quantize(&mut self, pool: &ThreadPool, x: &[f32], n: usize, cols: usize) {
        self.quantize_with(pool, ActRule::Q8_0, x, n, cols);
    }

    /// Quantizes `x` (`n × cols`) by `rule` into `self`, reusing its buffers.
    ///
    /// # Panics
    /// When `cols` is not a multiple of the rule's block or `x` is shorter than `n × cols`.
    pub fn quantize_with(&mut self, pool: &ThreadPool, rule: ActRule, x: &[f32], n: usize, cols: usize) {
        let unit = if rule == ActRule::Q8K { QK_K } else { BLOCK };
        assert!(cols.is_multiple_of(unit) && x.len() >= n * cols);
        self.n = n;
        self.cols = cols;
        self.qs.resize(n * cols, 0);
        self.d.resize(n * cols / BLOCK, 0.0);
        self.sums.resize(n * cols / 16, 0);
        self.sums4.resize(n * cols / 4, 0);
        self.min_terms.resize(n * cols / BLOCK, 0.0);
        let quantize_block = kernels().quantize_block_q8;
        let blocks = cols / BLOCK;
        // Large batches (prefill) are quantized in parallel.
        let rows = ROWS_PER_TASK;
        let (d, min_terms, sums, sums4) = (
            SharedOut::new(&mut self.d),
            SharedOut::new(&mut self.min_terms),
            SharedOut::new(&mut self.sums),
            SharedOut::new(&mut self.sums4),
        );
        pool.for_each_chunk_mut(&mut self.qs[..n * cols], rows * cols, &|task, qs| {
            let first = task * rows * blocks;
            let nb = qs.len() / BLOCK;
            // SAFETY: blocks first..first+nb belong to this task's rows only.
            #[allow(unsafe_code)]
            let (d, min_terms, sums, sums4) = unsafe {
                (
                    d.slice(first, nb),
                    min_terms.slice(first, nb),
                    sums.slice(2 * first, 2 * nb),
                    sums4.slice(8 * first, 8 * nb),
                )
            };
            let xs = &x[first * BLOCK..first * BLOCK + qs.len()];
            // Q8_K: quantize whole super-blocks first; their scale is every block's.
            let super_scales: Vec<f32> = match rule {
                ActRule::Q8_0 => Vec::new(),
                ActRule::Q8K => xs
                    .chunks_exact(QK_K)
                    .zip(qs.chunks_exact_mut(QK_K))
                    .map(|(xb, qb)| quantize_super_block_q8k(xb, qb))
                    .collect(),
            };
            for (b, (xb, qb)) in xs.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)).enumerate() {
                let (scale, stored) = match rule {
                    ActRule::Q8_0 => {
                        let scale = quantize_block(xb, qb);
                        (scale, f16::from_f32(scale).to_f32())
                    }
                    ActRule::Q8K => {
                        let scale = super_scales[b * BLOCK / QK_K];
                        (scale, scale)
                    }
                };
                for (j, q) in qb.chunks_exact(4).enumerate() {
                    sums4[8 * b + j] = q.iter().map(|&v| i32::from(v)).sum();
                }
                for h in 0..2 {
                    sums[2 * b + h] = sums4[8 * b + 4 * h..8 * b + 4 * h + 4].iter().sum();
                }
                d[b] = stored;
                min_terms[b] = f16::from_f32(scale * (sums[2 * b] + sums[2 * b + 1]) as f32).to_f32();
            }
        });
    }

    /// Values of row `t`.
    #[must_use]
    pub fn row(&self, t: usize) -> &[i8] {
        &self.qs[t * self.cols..(t + 1) * self.cols]
    }

    /// Scale of block `b` of row `t`.
    #[must_use]
    pub fn scale(&self, t: usize, b: usize) -> f32 {
        self.d[t * (self.cols / BLOCK) + b]
    }

    /// What a minimum of sub-block `s` (`len` elements, inside block `s·len/32`)
    /// of row `t` is multiplied by: `d_a · Σa`, taken from the f16-rounded
    /// [`Self::min_terms`] for weights whose minimums are f16 (as ggml's
    /// `block_q8_1.s` is), computed in f32 otherwise. `da` and `sum` are the
    /// block's scale and the sub-block's sum, which callers already hold.
    #[inline(always)]
    #[must_use]
    pub fn min_term(&self, f16_minimums: bool, t: usize, s: usize, len: usize, da: f32, sum: i32) -> f32 {
        if f16_minimums {
            self.min_terms[t * (self.cols / BLOCK) + s * len / BLOCK]
        } else {
            da * sum as f32
        }
    }

    /// Sum of the 4 values `4j..4j+4` of block `b` in row `t`.
    #[inline(always)]
    #[must_use]
    pub fn sum4(&self, t: usize, b: usize, j: usize) -> i32 {
        self.sums4[(t * (self.cols / BLOCK) + b) * 8 + j]
    }

    /// Sum of the `len` (16 or 32) values starting at sub-block `s` of `len` elements in row `t`.
    #[must_use]
    pub fn sub_sum(&self, t: usize, s: usize, len: usize) -> i32 {
        let i = t * (self.cols / 16) + s * (len / 16);
        if len == 16 {
            self.sums[i]
        } else {
            self.sums[i] + self.sums[i + 1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        for i in -300_000..300_000 {
            let x = i as f32 / 2048.0;
            // Equal as integers (−0.5 gives +0 instead of −0, the same code).
            assert_eq!(round_ties_even_small(x) as i32, x.round_ties_even() as i32, "{x}");
        }
    }

    #[test]
    fn q8k_rule_shares_one_f32_scale_per_256_and_keeps_the_sign_of_the_max() {
        let mut x = vec![0.1f32; 512];
        x[5] = 2.0;
        x[256..].fill(0.5);
        x[259] = -4.0;
        let mut a = QuantizedActs::default();
        a.quantize_with(&ThreadPool::new(1), ActRule::Q8K, &x, 1, 512);
        // iscale = -127/max: the value of largest magnitude always maps to -127.
        assert!((0..8).all(|b| a.scale(0, b).to_bits() == (-2.0f32 / 127.0).to_bits()));
        assert!((8..16).all(|b| a.scale(0, b).to_bits() == (1.0f32 / (127.0 / 4.0)).to_bits()));
        let q = a.row(0);
        assert_eq!((q[5], q[0], q[259], q[256]), (-127, -6, -127, 16));
    }
}
