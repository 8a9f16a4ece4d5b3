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

/// `acc = round_f16(v · s + acc)` element-wise (fused multiply-add, then
/// rounded to the nearest f16 and widened back): the V accumulation of
/// ggml's f16 flash attention.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_round_f16(acc: &mut [f32], v: &[f32], s: f32) {
    use std::arch::x86_64::{
        _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_set1_ps, _mm256_storeu_ps, _MM_FROUND_TO_NEAREST_INT,
    };
    let n = acc.len().min(v.len());
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    // SAFETY: every access is at i..i + 8 <= n.
    while i + 8 <= n {
        let r = _mm256_fmadd_ps(_mm256_loadu_ps(v.as_ptr().add(i)), sv, _mm256_loadu_ps(acc.as_ptr().add(i)));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r);
        _mm256_storeu_ps(acc.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for j in i..n {
        acc[j] = half::f16::from_f32(v[j].mul_add(s, acc[j])).to_f32();
    }
}

/// `acc = round_f16(acc · s)` element-wise.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_round_f16(acc: &mut [f32], s: f32) {
    use std::arch::x86_64::{
        _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_mul_ps, _mm256_set1_ps, _mm256_storeu_ps, _MM_FROUND_TO_NEAREST_INT,
    };
    let n = acc.len();
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    // SAFETY: every access is at i..i + 8 <= n.
    while i + 8 <= n {
        let r = _mm256_mul_ps(_mm256_loadu_ps(acc.as_ptr().add(i)), sv);
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r);
        _mm256_storeu_ps(acc.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for a in &mut acc[i..] {
        *a = half::f16::from_f32(*a * s).to_f32();
    }
}

/// One block of 32 activations quantized as `packed::acts` specifies:
/// returns the scale `amax/127` (before any rounding); `q` gets
/// `round_ties_even(x · 127/amax)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` and `q` hold 32 elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_block_q8(x: &[f32], q: &mut [i8]) -> f32 {
    use std::arch::x86_64::{
        _mm256_andnot_ps, _mm256_cvtps_epi32, _mm256_max_ps, _mm256_mul_ps, _mm256_packs_epi16, _mm256_packs_epi32,
        _mm256_permutevar8x32_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_storeu_si256,
    };
    assert!(x.len() >= 32 && q.len() >= 32);
    let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(x.as_ptr().add(8 * k)));
    let sign = _mm256_set1_ps(-0.0);
    let abs = v.map(|v| _mm256_andnot_ps(sign, v));
    let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
    let mut lanes = [0f32; 8];
    std::arch::x86_64::_mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let amax = lanes.iter().fold(0f32, |a, &b| a.max(b));
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    let idv = _mm256_set1_ps(id);
    // cvtps rounds to nearest even under the default MXCSR, like `round_ties_even`.
    let i = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, idv)));
    let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    // The packs work within 128-bit lanes: restore element order.
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr().cast(), ordered);
    amax / 127.0
}

/// `gate = silu(gate) · up` (see `reference::silu_mul`): ggml's `expf`, 8
/// lanes at a time; a vector with a lane outside the normal-exponent range
/// (|x| ≳ 87) goes through the scalar twin.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    use super::reference::expf_consts::{LN2_HI, LN2_LO, LOG2E, P1, P2, P3, P4, P5, SHIFTER};
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_add_ps, _mm256_andnot_ps, _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_cvtps_epi32,
        _mm256_div_ps, _mm256_fnmadd_ps, _mm256_movemask_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps,
        _mm256_slli_epi32, _mm256_storeu_ps, _mm256_sub_ps, _CMP_GT_OQ,
    };
    let n = gate.len().min(up.len());
    let c = |v: f32| _mm256_set1_ps(v);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 floats at i with i + 8 <= n in both slices.
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let neg = _mm256_sub_ps(_mm256_setzero_ps(), x);
        let z = _mm256_fmadd_ps(neg, c(LOG2E), c(SHIFTER));
        let k = _mm256_sub_ps(z, c(SHIFTER));
        let b = _mm256_fnmadd_ps(k, c(LN2_LO), _mm256_fnmadd_ps(k, c(LN2_HI), neg));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_fmadd_ps(c(P5), b, c(P4)), u, _mm256_fmadd_ps(c(P3), b, c(P2))),
            u,
            _mm256_fmadd_ps(c(P1), b, c(1.0)),
        );
        let out_of_range = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_andnot_ps(c(-0.0), k), c(126.0));
        if _mm256_movemask_ps(out_of_range) != 0 {
            super::reference::silu_mul(&mut gate[i..i + 8], &up[i..i + 8]);
        } else {
            let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)));
            let e = _mm256_mul_ps(j, _mm256_castsi256_ps(pow2));
            let s = _mm256_div_ps(x, _mm256_add_ps(c(1.0), e));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(s, _mm256_loadu_ps(up.as_ptr().add(i))));
        }
        i += 8;
    }
    super::reference::silu_mul(&mut gate[i..n], &up[i..n]);
}

/// [`super::reference::gemm_acc`]: vectorized over `n` (8 columns per
/// register), each element still one FMA chain over `k` in order.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `c`, `a`, `b` hold `m×n`, `m×k`, `k×n`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_acc(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let cols = n - n % (8 * GEMM_VECS);
    let mut i = 0;
    while i < m {
        let rows = if m - i >= GEMM_ROWS { GEMM_ROWS } else { 1 };
        for j in (0..cols).step_by(8 * GEMM_VECS) {
            if rows == GEMM_ROWS {
                gemm_acc_tile::<GEMM_ROWS>(c, a, b, i, j, k, n);
            } else {
                gemm_acc_tile::<1>(c, a, b, i, j, k, n);
            }
        }
        i += rows;
    }
    // Ragged columns: the same chains, one element at a time.
    for i in 0..m {
        for j in cols..n {
            let mut acc = c[i * n + j];
            for kk in 0..k {
                acc = a[i * k + kk].mul_add(b[kk * n + j], acc);
            }
            c[i * n + j] = acc;
        }
    }
}

/// Rows and 8-column vectors of one register tile of [`gemm_acc`].
/// (2 × 4: 8 accumulators and 4 B vectors fit AVX2's 16 registers; 32
/// columns divide the 64-wide attention tiles.)
const GEMM_ROWS: usize = 2;
const GEMM_VECS: usize = 4;

/// One full `ROWS × 8·GEMM_VECS` tile of [`gemm_acc`] at `(i, j)`.
// Index loops over the fixed-size register tile unroll fully.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn gemm_acc_tile<const ROWS: usize>(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    i: usize,
    j: usize,
    k: usize,
    n: usize,
) {
    use std::arch::x86_64::{_mm256_set1_ps, _mm256_storeu_ps};
    let mut acc = [[_mm256_setzero_ps(); GEMM_VECS]; ROWS];
    for r in 0..ROWS {
        for v in 0..GEMM_VECS {
            acc[r][v] = _mm256_loadu_ps(c.as_ptr().add((i + r) * n + j + 8 * v));
        }
    }
    for kk in 0..k {
        let bp = b.as_ptr().add(kk * n + j);
        let bv: [__m256; GEMM_VECS] =
            [_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)), _mm256_loadu_ps(bp.add(16)), _mm256_loadu_ps(bp.add(24))];
        for r in 0..ROWS {
            let p = _mm256_set1_ps(*a.get_unchecked((i + r) * k + kk));
            for v in 0..GEMM_VECS {
                acc[r][v] = _mm256_fmadd_ps(p, bv[v], acc[r][v]);
            }
        }
    }
    for r in 0..ROWS {
        for v in 0..GEMM_VECS {
            _mm256_storeu_ps(c.as_mut_ptr().add((i + r) * n + j + 8 * v), acc[r][v]);
        }
    }
}

/// [`super::reference::dot_f16_ggml`] compiled for AVX2 + FMA: the same 64
/// independent FMA chains, so the same bits, in 8 registers instead of 16
/// spilling SSE ones (and no `fmaf` calls).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[must_use]
pub unsafe fn dot_f16_ggml(x: &[f32], y: &[f32]) -> f32 {
    super::reference::dot_f16_ggml(x, y)
}

/// [`super::reference::dot_f16w_ggml`] compiled for AVX2 + FMA + F16C
/// (same bits): weights widened 64 at a time in registers.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[must_use]
pub unsafe fn dot_f16w_ggml(w: &[u16], x: &[f32]) -> f32 {
    super::reference::dot_f16w_with(w, x, |s, d| unsafe { f16_to_f32(s, d) })
}

/// [`super::reference::f16_to_f32`] with F16C, 8 values per instruction
/// (exact, so the same bits).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = src.len().min(dst.len());
    let whole = n & !7;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 <= n for both slices; `loadu` takes unaligned addresses.
        #[allow(clippy::cast_ptr_alignment)]
        let h = unsafe { _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>()) };
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h)) };
        i += 8;
    }
    super::reference::f16_to_f32(&src[whole..n], &mut dst[whole..n]);
}

/// [`super::reference::dot_f32_ggml`] compiled for AVX2 + FMA (same bits).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[must_use]
pub unsafe fn dot_f32_ggml(x: &[f32], y: &[f32]) -> f32 {
    super::reference::dot_f32_ggml(x, y)
}

/// [`super::reference::dot_lanes16`] compiled for AVX2 + FMA (same bits).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[must_use]
pub unsafe fn dot_lanes16(x: &[f32], y: &[f32]) -> f32 {
    super::reference::dot_lanes16(x, y)
}

/// [`super::reference::soft_max_f32`] compiled with FMA (its `expf` is FMA
/// chains): the same bits, without `fmaf` calls.
///
/// # Safety
/// The CPU must support FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    super::reference::soft_max_f32(x, max)
}
