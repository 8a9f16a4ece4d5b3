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
//! The SIMD kernels compute the same operations lane by lane (one lane per
//! weight row), so their results are bit-identical to this function.

use super::acts::QuantizedActs;
use super::{PackedMatrix, BLOCK};

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
