//! AVX2 + FMA fast paths. Every function here has a twin in `reference.rs`
//! and is only called after `is_x86_feature_detected!` confirmed the features.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
    _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehdup_ps, _mm_movehl_ps,
};

/// Horizontal sum of 8 lanes.
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Dot product of two equal-length slices.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[must_use] 
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let k = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats at offset i with i + 8 <= k.
    while i + 32 <= k {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j)), *a);
        }
        i += 32;
    }
    while i + 8 <= k {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let mut sum = hsum(acc[0]) + hsum(acc[1]) + hsum(acc[2]) + hsum(acc[3]);
    while i < k {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

/// `out[r * n + t] = dot(w[r], x[t])` for a tile of `rows` dequantized weight
/// rows against `n` activation rows, all of length `k`.
///
/// A 4×4 register block: each step loads 4 weight and 4 activation vectors
/// and issues 16 FMAs, so the loop is bound by FMA throughput, not loads.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `w.len() >= rows * k`, `x.len() >= n * k`,
/// `out.len() >= rows * n`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_tile(w: &[f32], rows: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert!(w.len() >= rows * k && x.len() >= n * k && out.len() >= rows * n);
    let k8 = k - k % 8;
    let mut r = 0;
    while r + 4 <= rows {
        let mut t = 0;
        while t + 4 <= n {
            block_4x4(w, r, x, t, n, k, k8, out);
            t += 4;
        }
        for t in t..n {
            for rr in r..r + 4 {
                out[rr * n + t] = dot(&w[rr * k..rr * k + k], &x[t * k..t * k + k]);
            }
        }
        r += 4;
    }
    for rr in r..rows {
        for t in 0..n {
            out[rr * n + t] = dot(&w[rr * k..rr * k + k], &x[t * k..t * k + k]);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn block_4x4(w: &[f32], r: usize, x: &[f32], t: usize, n: usize, k: usize, k8: usize, out: &mut [f32]) {
    let wp = [0, 1, 2, 3].map(|i| w.as_ptr().add((r + i) * k));
    let xp = [0, 1, 2, 3].map(|i| x.as_ptr().add((t + i) * k));
    let mut acc = [[_mm256_setzero_ps(); 4]; 4];
    let mut i = 0;
    // SAFETY: i + 8 <= k8 <= k, and each pointer starts a row of length k
    // inside its slice (checked by the caller's assert).
    while i < k8 {
        let xv = [0, 1, 2, 3].map(|j| _mm256_loadu_ps(xp[j].add(i)));
        for (a, wrow) in acc.iter_mut().zip(wp) {
            let wv = _mm256_loadu_ps(wrow.add(i));
            for (aj, xj) in a.iter_mut().zip(xv) {
                *aj = _mm256_fmadd_ps(wv, xj, *aj);
            }
        }
        i += 8;
    }
    for (ri, a) in acc.iter().enumerate() {
        for (tj, &v) in a.iter().enumerate() {
            let mut s = hsum(v);
            for kk in k8..k {
                s += w[(r + ri) * k + kk] * x[(t + tj) * k + kk];
            }
            out[(r + ri) * n + t + tj] = s;
        }
    }
}

/// [`super::quant_dot::vec_dot`] compiled for AVX2: the same code (so the
/// same results: integer sums are exact and float operations keep their
/// order), with the integer inner loops vectorized.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[must_use]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quant_vec_dot(ty: hearth_core::GgmlType, w: &[u8], a: &super::quant_dot::Q8Row) -> f32 {
    super::quant_dot::vec_dot(ty, w, a)
}
