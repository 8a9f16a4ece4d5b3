//! Activations quantized for the packed integer kernels: 8-bit values in
//! blocks of 32 with one scale each (ggml's `Q8_0` rule: `d = amax/127`,
//! rounded to f16, values `round(x · 127/amax)`; see
//! `kernels::reference::quantize_block_q8`), plus the sum of every 16
//! values, which the kernels need for code offsets and minimums.

// `min_term` is called from `target_feature` kernels and must inline there.
#![allow(clippy::inline_always)]

use half::f16;

use super::BLOCK;
use crate::dispatch::kernels;
use crate::pool::{for_each_chunk_mut, SharedOut};

/// Activation rows quantized by one task.
const ROWS_PER_TASK: usize = 16;

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
    /// `n × cols/32`: `f16(d · Σ block)` with the unrounded `d`, ggml's
    /// `block_q8_1.s`, the minimum term of types with f16 minimums.
    pub min_terms: Vec<f32>,
}

impl QuantizedActs {
    /// Quantizes `x` (`n × cols`) into `self`, reusing its buffers.
    ///
    /// # Panics
    /// When `cols` is not a multiple of 32 or `x` is shorter than `n × cols`.
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        assert!(cols.is_multiple_of(BLOCK) && x.len() >= n * cols);
        self.n = n;
        self.cols = cols;
        self.qs.resize(n * cols, 0);
        self.d.resize(n * cols / BLOCK, 0.0);
        self.sums.resize(n * cols / 16, 0);
        self.min_terms.resize(n * cols / BLOCK, 0.0);
        let quantize_block = kernels().quantize_block_q8;
        let blocks = cols / BLOCK;
        // Large batches (prefill) are quantized in parallel.
        let rows = ROWS_PER_TASK;
        let (d, min_terms, sums) =
            (SharedOut::new(&mut self.d), SharedOut::new(&mut self.min_terms), SharedOut::new(&mut self.sums));
        for_each_chunk_mut(&mut self.qs[..n * cols], rows * cols, &|task, qs| {
            let first = task * rows * blocks;
            let nb = qs.len() / BLOCK;
            // SAFETY: blocks first..first+nb belong to this task's rows only.
            #[allow(unsafe_code)]
            let (d, min_terms, sums) =
                unsafe { (d.slice(first, nb), min_terms.slice(first, nb), sums.slice(2 * first, 2 * nb)) };
            for (b, (xb, qb)) in x[first * BLOCK..].chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)).enumerate() {
                let scale = quantize_block(xb, qb);
                for (h, q) in qb.chunks_exact(16).enumerate() {
                    sums[2 * b + h] = q.iter().map(|&v| i32::from(v)).sum();
                }
                d[b] = f16::from_f32(scale).to_f32();
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
