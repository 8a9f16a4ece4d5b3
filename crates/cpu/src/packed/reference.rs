//! The scalar specification of the packed matmul. For each weight row `r`
//! and activation row `t`, sub-blocks are visited in order and
//!
//! ```text
//! isum = Σ code·a − offset·Σa            (exact integers)
//! acc  = fma(isum, scale·d_a, acc)
//! acc  = fma(min, d_a·Σa, acc)           (types with a minimum; f16-rounded
//!                                         for f16 minimums, see `QuantizedActs::min_term`)
//! ```
//!
//! Super-block layouts (`Q4_K`, [`Scales::Super`]) keep ggml's integer
//! sub-block factors and sum a whole super-block of 256 exactly first:
//!
//! ```text
//! isum = Σ_sub sc·(Σ code·a)      msum = Σ_sub m·(Σa)      (exact integers)
//! acc  = fma(isum, d·d_a, acc)      acc_min = fma(msum, dmin·d_a, acc_min)
//! result = acc − acc_min
//! ```
//!
//! (llama.cpp's x86 `q4_K_8x8` repacked kernels.) Lane-wise layouts
//! ([`super::Layout::lanes`]) keep eight partial sums per row instead, as
//! llama.cpp's `vec_dot` kernels do; see [`lane_row_dot`].
//!
//! The SIMD kernels compute the same operations lane by lane (one lane per
//! weight row), so their results are bit-identical to this function.

use super::acts::QuantizedActs;
use super::{PackedMatrix, Scales, BLOCK, SUPER};

/// `out[t * m.rows + r] = W[r] · a[t]` for all rows of `m` and of `a`.
///
/// # Panics
/// When shapes disagree.
pub fn gemm(m: &PackedMatrix, a: &QuantizedActs, out: &mut [f32]) {
    assert!(a.cols == m.cols && out.len() >= a.n * m.rows);
    for t in 0..a.n {
        for r in 0..m.rows {
            out[t * m.rows + r] = row_dot(m, r, a, t);
        }
    }
}

/// One output: weight row `r` against activation row `t`.
#[must_use]
pub fn row_dot(m: &PackedMatrix, r: usize, a: &QuantizedActs, t: usize) -> f32 {
    let l = m.layout;
    if l.super_scales {
        return if l.lanes { k_lane_row_dot(m, r, a, t) } else { super_row_dot(m, r, a, t) };
    }
    if l.lanes {
        return lane_row_dot(m, r, a, t);
    }
    let x = a.row(t);
    let mut acc = 0f32;
    for s in 0..m.cols / l.sub {
        let first = s * l.sub;
        let mut isum: i32 = (first..first + l.sub).map(|c| i32::from(m.code(r, c)) * i32::from(x[c])).sum();
        let sum = a.sub_sum(t, s, l.sub);
        isum -= l.offset * sum;
        let i = m.scale_index(r, s);
        let da = a.scale(t, first / BLOCK);
        acc = (isum as f32).mul_add(m.scales.get(i) * da, acc);
        if l.has_min {
            acc = m.mins.get(i).mul_add(a.min_term(l.f16_scales, t, s, l.sub, da, sum), acc);
        }
    }
    acc
}

/// [`row_dot`] for lane-wise layouts ([`super::Layout::lanes`]): llama.cpp's
/// x86 `vec_dot_q4_1_q8_1` / tinyBLAS order. Lane `j` of a block holds its
/// elements `4j..4j+4`; each block adds `fma(d_w·d_a, lane sum, L_j)` per lane;
/// minimums gather separately (`summs = fma(m, s, summs)`); the result is
/// `hsum_float_8(L) + summs`.
fn lane_row_dot(m: &PackedMatrix, r: usize, a: &QuantizedActs, t: usize) -> f32 {
    let l = m.layout;
    let x = a.row(t);
    let mut lanes = [0f32; 8];
    let mut summs = 0f32;
    for b in 0..m.cols / BLOCK {
        let i = m.scale_index(r, b);
        let da = a.scale(t, b);
        let dd = m.scales.get(i) * da;
        for (j, lane) in lanes.iter_mut().enumerate() {
            let e = b * BLOCK + 4 * j;
            let dot: i32 = (e..e + 4).map(|c| i32::from(m.code(r, c)) * i32::from(x[c])).sum();
            let isum = dot - l.offset * a.sum4(t, b, j);
            *lane = dd.mul_add(isum as f32, *lane);
        }
        if l.has_min {
            let term = a.min_term(l.f16_scales, t, b, BLOCK, da, a.sub_sum(t, b, BLOCK));
            summs = m.mins.get(i).mul_add(term, summs);
        }
    }
    hsum8(&lanes) + summs
}

/// Whether activation row `t` of `n` falls in llama.cpp's 4-row `gemm` part
/// of a repacked matmul (the rest go through `gemv`).
#[must_use]
pub fn in_gemm_rows(t: usize, n: usize) -> bool {
    t < n - n % 4
}

/// ggml's `hsum_float_8`: high half plus low half, then pairs.
#[must_use]
pub fn hsum8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// [`row_dot`] for lane-wise super-block layouts (`Q3_K`, `Q5_K`, `Q6_K`),
/// in llama.cpp's AVX2 `vec_dot_qN_K_q8_K` order: lane `k` of a super-block
/// gathers, in exact integers, `sc·Σ (code − offset)·a` over elements
/// `32c+4k..32c+4k+4` of its eight 32-element chunks `c` (`sc` the scale of
/// the sub-block holding them); then `L_k = fma(d_w·d_a, lane, L_k)` per
/// super-block, and `hsum_float_8(L)` at the end. Minimums (`Q5_K`) gather
/// apart, `summs = fma(−d_a·dmin, Σ m·Σa, summs)` per super-block, added last.
/// `Q6_K` moves its offset term differently between lanes (its `vec_dot`
/// subtracts `32·(sc·Σa)` of sub-blocks `2k` and `2k+1` from lane `k`).
///
/// Batches of at least [`TILED_MM_MIN_ROWS`] rows follow ggml's tiled K-quant
/// matmul instead (`ggml-cpu/tiled`, which takes such batches for
/// non-repacked K-quants): the lanes' integer total `s1` and the minimums'
/// `s2` per super-block, `r = fma(−dmin, s2, f32(s1)·d_w)`, then
/// `acc = fma(r, d_a, acc)`.
pub(crate) fn k_lane_row_dot(m: &PackedMatrix, r: usize, a: &QuantizedActs, t: usize) -> f32 {
    let Scales::Super { d, q: sc, .. } = &m.scales else { unreachable!("super-block layouts store factors") };
    let l = m.layout;
    let x = a.row(t);
    let sub_scale = |s: usize| i32::from(sc[m.scale_index(r, s)]);
    let pairs = m.ty == hearth_core::GgmlType::Q6_K;
    let tiled = a.n >= TILED_MM_MIN_ROWS;
    let mut lanes = [0f32; 8];
    let (mut summs, mut acc) = (0f32, 0f32);
    for first in (0..m.cols).step_by(SUPER) {
        let s0 = first / l.sub;
        let mut isum = [0i32; 8];
        for (k, lane) in isum.iter_mut().enumerate() {
            for c in 0..SUPER / BLOCK {
                let e = first + BLOCK * c + 4 * k;
                let dot: i32 = (e..e + 4).map(|i| i32::from(m.code(r, i)) * i32::from(x[i])).sum();
                let offset = if pairs { 0 } else { l.offset * a.sum4(t, e / BLOCK, k) };
                *lane += sub_scale(e / l.sub) * (dot - offset);
            }
            if pairs {
                let (s_a, s_b) = (s0 + 2 * k, s0 + 2 * k + 1);
                *lane -=
                    l.offset * (sub_scale(s_a) * a.sub_sum(t, s_a, l.sub) + sub_scale(s_b) * a.sub_sum(t, s_b, l.sub));
            }
        }
        let si = m.scales.super_index(m.scale_index(r, s0));
        let (dw, da) = (d[si].to_f32(), a.scale(t, first / BLOCK));
        // Minimums: Σ m·Σa over the super-block's sub-blocks, exact.
        let (dmin, msum) = match &m.mins {
            Scales::Super { d: dmin, q: mn, .. } if l.has_min => {
                let msum: i32 = (s0..s0 + SUPER / l.sub)
                    .map(|s| i32::from(mn[m.scale_index(r, s)]) * a.sub_sum(t, s, l.sub))
                    .sum();
                (dmin[si].to_f32(), msum)
            }
            _ => (0.0, 0),
        };
        if tiled {
            let s1: i32 = isum.iter().sum();
            let scaled = s1 as f32 * dw;
            let r = if l.has_min { (-dmin).mul_add(msum as f32, scaled) } else { scaled };
            acc = r.mul_add(da, acc);
            continue;
        }
        let dd = dw * da;
        for (lane, &isum) in lanes.iter_mut().zip(&isum) {
            *lane = dd.mul_add(isum as f32, *lane);
        }
        if l.has_min {
            summs = (-(da * dmin)).mul_add(msum as f32, summs);
        }
    }
    if tiled {
        acc
    } else {
        hsum8(&lanes) + summs
    }
}

/// Activation rows from which ggml's tiled K-quant matmul takes a product.
pub const TILED_MM_MIN_ROWS: usize = 8;

/// [`row_dot`] for repacked super-block layouts (`Q4_K`, `Q2_K`), as
/// llama.cpp's x86 `q4_K_8x8` / `q2_K_8x8` kernels sum: its `gemm` (whole
/// groups of 4 activation rows, the first `n − n % 4` rows of a batch)
/// applies the float steps every [`super::Layout::gemm_step`] elements (64
/// for `Q4_K`, 128 for `Q2_K`), its `gemv` (the remaining rows, and every row
/// of a MoE expert: [`PackedMatrix::row_by_row`]) per super-block.
fn super_row_dot(m: &PackedMatrix, r: usize, a: &QuantizedActs, t: usize) -> f32 {
    let (Scales::Super { d, q: sc, .. }, Scales::Super { d: dmin, q: mn, .. }) = (&m.scales, &m.mins) else {
        unreachable!("super-block layouts store factors")
    };
    let sub = m.layout.sub;
    let step = if in_gemm_rows(t, a.n) && !m.row_by_row { m.layout.gemm_step } else { SUPER };
    let x = a.row(t);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for first in (0..m.cols).step_by(step) {
        let (mut isum, mut msum) = (0i32, 0i32);
        for s in first / sub..(first + step) / sub {
            let dot: i32 = (s * sub..(s + 1) * sub).map(|c| i32::from(m.code(r, c)) * i32::from(x[c])).sum();
            let i = m.scale_index(r, s);
            isum += i32::from(sc[i]) * dot;
            msum += i32::from(mn[i]) * a.sub_sum(t, s, sub);
        }
        let si = m.scales.super_index(m.scale_index(r, first / sub));
        let da = a.scale(t, first / BLOCK);
        acc = (isum as f32).mul_add(d[si].to_f32() * da, acc);
        acc_min = (msum as f32).mul_add(dmin[si].to_f32() * da, acc_min);
    }
    acc - acc_min
}
