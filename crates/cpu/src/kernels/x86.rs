//! AVX2 + FMA fast paths. Every function here has a twin in `reference.rs`
//! and is only called after `is_x86_feature_detected!` confirmed the features.
#![allow(unsafe_code)]
// Small helpers are `inline(always)` so they are compiled inside the
// `target_feature` functions that call them.
#![allow(clippy::inline_always)]

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
    use hearth_core::GgmlType as T;
    // SAFETY (all arms): the caller guarantees AVX2; block sizes come from `ty`.
    match ty {
        T::Q4_0 => blocks32::q4_0(w, a),
        T::Q4_1 => blocks32::q4_1(w, a),
        T::Q5_0 => blocks32::q5_0(w, a),
        T::Q8_0 => blocks32::q8_0(w, a),
        _ => super::quant_dot::vec_dot(ty, w, a),
    }
}

/// AVX2 integer dot products for the 32-element block types. The integer
/// block sums are computed with `maddubs`/`madd` (exact), then combined with
/// the block scales in exactly the reference's float order, so results are
/// bit-identical to `quant_dot::vec_dot`.
mod blocks32 {
    use std::arch::x86_64::{
        __m256i, _mm256_abs_epi8, _mm256_and_si256, _mm256_castsi256_si128, _mm256_extracti128_si256,
        _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_or_si256, _mm256_set1_epi16,
        _mm256_set1_epi8, _mm256_set_m128i, _mm256_sign_epi8, _mm_add_epi32, _mm_cvtsi128_si32, _mm_loadu_si128,
        _mm_shuffle_epi32, _mm_srli_epi16,
    };

    use crate::kernels::quant_dot::Q8Row;
    use crate::kernels::reference::f16_at;

    /// Σ of 8 i32 lanes.
    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// Σ u·s over 32 byte pairs, `u` unsigned (≤ 31 or |q8|), `s` signed.
    #[inline(always)]
    unsafe fn dot_us(u: __m256i, s: __m256i) -> i32 {
        hsum_i32(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
    }

    /// The 32 nibbles of 16 bytes: low nibbles (elements 0..16) then high (16..32).
    #[inline(always)]
    unsafe fn nibbles(qs: &[u8]) -> __m256i {
        let raw = _mm_loadu_si128(qs.as_ptr().cast());
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// Bit `e` of `qh` as 0x10 in byte `e` (the fifth bit of Q5 values).
    #[inline(always)]
    unsafe fn fifth_bits(qh: u32) -> __m256i {
        let mut b = [0u8; 32];
        for (e, v) in b.iter_mut().enumerate() {
            *v = (((qh >> e) & 1) << 4) as u8;
        }
        _mm256_loadu_si256(b.as_ptr().cast())
    }

    #[inline(always)]
    unsafe fn acts(a: &Q8Row, i: usize) -> __m256i {
        _mm256_loadu_si256(a.qs[32 * i..32 * i + 32].as_ptr().cast())
    }

    /// Σ a over a block (for the offset of unsigned-coded weights).
    #[inline(always)]
    unsafe fn sum_acts(y: __m256i) -> i32 {
        dot_us(_mm256_set1_epi8(1), y)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn q4_0(w: &[u8], a: &Q8Row) -> f32 {
        let mut sum = 0f32;
        for (i, b) in w.chunks_exact(18).enumerate() {
            let y = acts(a, i);
            let isum = dot_us(nibbles(&b[2..18]), y) - 8 * sum_acts(y);
            sum += isum as f32 * f16_at(b, 0) * a.d[i];
        }
        sum
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn q4_1(w: &[u8], a: &Q8Row) -> f32 {
        let (mut sum, mut mins) = (0f32, 0f32);
        for (i, b) in w.chunks_exact(20).enumerate() {
            let isum = dot_us(nibbles(&b[4..20]), acts(a, i));
            sum += isum as f32 * (f16_at(b, 0) * a.d[i]);
            mins += f16_at(b, 2) * a.s[i];
        }
        sum + mins
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn q5_0(w: &[u8], a: &Q8Row) -> f32 {
        let mut sum = 0f32;
        for (i, b) in w.chunks_exact(22).enumerate() {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let q = _mm256_or_si256(nibbles(&b[6..22]), fifth_bits(qh));
            let y = acts(a, i);
            let isum = dot_us(q, y) - 16 * sum_acts(y);
            sum += isum as f32 * f16_at(b, 0) * a.d[i];
        }
        sum
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn q8_0(w: &[u8], a: &Q8Row) -> f32 {
        let mut sum = 0f32;
        for (i, b) in w.chunks_exact(34).enumerate() {
            let q = _mm256_loadu_si256(b[2..34].as_ptr().cast());
            // |q| · (a with q's sign): the maddubs operand order needs one unsigned side.
            let isum = dot_us(_mm256_abs_epi8(q), _mm256_sign_epi8(acts(a, i), q));
            sum += isum as f32 * f16_at(b, 0) * a.d[i];
        }
        sum
    }
}
