//! SIMD kernels for [`TernaryMatrix`]: per (super-block, lane) one `i32`
//! vector of exact partial sums by `vpdpbusd` (or `vpmaddubsw`+`vpmaddwd`)
//! over masked code vectors, one arithmetic shift to drop the mask's `4^k`
//! (see the layout in [`super::ternary`]), one f32 accumulator vector per
//! lane, and ggml's lane sum at the end. They follow `ternary::row_dot`
//! operation for operation: the 512-bit kernel 16 rows at once, the 256-bit
//! ones 8 (each half of a group in turn).
#![allow(unsafe_code)]
#![allow(clippy::inline_always)]

use std::arch::x86_64::{
    __m256, __m512, _mm256_add_ps, _mm256_and_si256, _mm256_cvtepi32_ps, _mm256_fmadd_ps, _mm256_loadu_si256,
    _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm256_srai_epi32, _mm256_srli_epi16, _mm256_storeu_ps, _mm256_sub_epi32, _mm512_add_ps, _mm512_and_si512,
    _mm512_cvtepi32_ps, _mm512_cvtph_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512,
    _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_epi8, _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512,
    _mm512_sra_epi32, _mm512_storeu_ps, _mm512_sub_epi32, _mm_cvtsi32_si128,
};

use super::acts::QuantizedActs;
use super::ternary::{TernaryMatrix, CHUNK_BYTES, LANES, ROWS, SUPER, SUPER_BYTES};
use super::x86::{load_scales, prefetch_block, scale_ptr, Avx2, Avx512Vnni, AvxVnni, Dot4};
use super::Scales;
use crate::pool::SharedOut;

/// Activation rows per register tile (the code vectors are masked once per tile).
const TILE: usize = 2;

/// The broadcast 4 activations of element `e` of row `t`.
#[inline(always)]
unsafe fn act4(a: &QuantizedActs, t: usize, e: usize) -> i32 {
    a.qs.as_ptr().add(t * a.cols + e).cast::<i32>().read_unaligned()
}

/// `Σ code·a − Σ a[block]` of lane `lane` in super-block `s`, from the masked sum.
#[inline(always)]
fn lane_offset(a: &QuantizedActs, t: usize, s: usize, lane: usize) -> i32 {
    a.sub_sum(t, s * (SUPER / 32) + lane, 32)
}

/// Eight rows (`half` of group `g`) against activation rows `t0..t0 + C`, 256-bit.
#[inline(always)]
unsafe fn tile256<D: Dot4, const F16S: bool, const C: usize>(
    m: &TernaryMatrix,
    g: usize,
    half: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    const HALF: usize = ROWS / 2;
    let supers = m.cols / SUPER;
    let codes = m.codes.as_ptr().add(g * supers * SUPER_BYTES + 32 * half);
    debug_assert_eq!(matches!(m.scales, Scales::F16(_)), F16S);
    let scales = scale_ptr(&m.scales);
    let mut acc = [[_mm256_setzero_ps(); LANES]; C];
    for s in 0..supers {
        let dw = load_scales::<F16S>(scales, (g * supers + s) * ROWS + HALF * half);
        let d: [__m256; C] =
            std::array::from_fn(|c| _mm256_mul_ps(dw, _mm256_set1_ps(a.scale(t0 + c, s * SUPER / 32))));
        if C == 1 && half == 0 {
            // As in `tile512`; the second half finds the lines in cache.
            prefetch_block(codes.add(s * SUPER_BYTES), SUPER_BYTES);
        }
        for h in 0..2 {
            let mut isum = [[_mm256_setzero_si256(); 4]; C];
            for b in 0..8 {
                let v = _mm256_loadu_si256(codes.add(s * SUPER_BYTES + CHUNK_BYTES * (2 * b + h)).cast());
                for k in 0..4 {
                    // vpmaddubsw saturates i16 pairs: keep its codes below 64.
                    let w = if D::SATURATES && k == 3 {
                        _mm256_and_si256(_mm256_srli_epi16::<2>(v), _mm256_set1_epi8(3 << 4))
                    } else {
                        _mm256_and_si256(v, _mm256_set1_epi8(3 << (2 * k)))
                    };
                    for (c, isum) in isum.iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(act4(a, t0 + c, s * SUPER + 32 * b + 4 * (4 * h + k)));
                        isum[k] = D::dot4::<false>(isum[k], w, x);
                    }
                }
            }
            for (c, (isum, acc)) in isum.iter().zip(acc.iter_mut()).enumerate() {
                for k in 0..4 {
                    let lane = 4 * h + k;
                    let exact = match (k, D::SATURATES) {
                        (0, _) => isum[0],
                        (1, _) => _mm256_srai_epi32::<2>(isum[1]),
                        (2, _) | (3, true) => _mm256_srai_epi32::<4>(isum[k]),
                        _ => _mm256_srai_epi32::<6>(isum[3]),
                    };
                    let i = _mm256_sub_epi32(exact, _mm256_set1_epi32(lane_offset(a, t0 + c, s, lane)));
                    acc[lane] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d[c], acc[lane]);
                }
            }
        }
    }
    let first = g * ROWS + HALF * half;
    let lanes = m.rows.saturating_sub(first).min(HALF);
    for (c, acc) in acc.iter().enumerate() {
        let r: [__m256; 4] = std::array::from_fn(|i| _mm256_add_ps(acc[i], acc[i + 4]));
        let sum = _mm256_add_ps(_mm256_add_ps(r[0], r[2]), _mm256_add_ps(r[1], r[3]));
        let mut tmp = [0f32; HALF];
        _mm256_storeu_ps(tmp.as_mut_ptr(), sum);
        out.slice((t0 + c) * m.rows + first, lanes).copy_from_slice(&tmp[..lanes]);
    }
}

/// Sixteen rows (group `g`) against activation rows `t0..t0 + C`, 512-bit VNNI.
#[inline(always)]
unsafe fn tile512<const F16S: bool, const C: usize>(
    m: &TernaryMatrix,
    g: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    let supers = m.cols / SUPER;
    let codes = m.codes.as_ptr().add(g * supers * SUPER_BYTES);
    let scales = scale_ptr(&m.scales);
    let mut acc = [[_mm512_setzero_ps(); LANES]; C];
    for s in 0..supers {
        let dw = load_scales16::<F16S>(scales, (g * supers + s) * ROWS);
        let d: [__m512; C] =
            std::array::from_fn(|c| _mm512_mul_ps(dw, _mm512_set1_ps(a.scale(t0 + c, s * SUPER / 32))));
        if C == 1 {
            // One activation row leaves too little work to hide DRAM
            // latency: without this, decode waited on memory half its time.
            prefetch_block(codes.add(s * SUPER_BYTES), SUPER_BYTES);
        }
        // Lane halves summed in one pass: both for a lone activation row (so
        // the lines are read in order and the hardware prefetchers follow),
        // one at a time for a tile (registers).
        let together = if C == 1 { 2 } else { 1 };
        for h0 in (0..2).step_by(together) {
            let mut isum = [[[_mm512_setzero_si512(); 4]; 2]; C];
            for b in 0..8 {
                for dh in 0..together {
                    let h = h0 + dh;
                    let v = _mm512_loadu_si512(codes.add(s * SUPER_BYTES + CHUNK_BYTES * (2 * b + h)).cast());
                    for k in 0..4 {
                        let w = _mm512_and_si512(v, _mm512_set1_epi8(3 << (2 * k)));
                        for (c, isum) in isum.iter_mut().enumerate() {
                            let x = _mm512_set1_epi32(act4(a, t0 + c, s * SUPER + 32 * b + 4 * (4 * h + k)));
                            isum[dh][k] = _mm512_dpbusd_epi32(isum[dh][k], w, x);
                        }
                    }
                }
            }
            for (c, (isum, acc)) in isum.iter().zip(acc.iter_mut()).enumerate() {
                for (dh, isum) in isum.iter().enumerate().take(together) {
                    for (k, &isum) in isum.iter().enumerate() {
                        let lane = 4 * (h0 + dh) + k;
                        let exact = _mm512_sra_epi32(isum, _mm_cvtsi32_si128(2 * k as i32));
                        let i = _mm512_sub_epi32(exact, _mm512_set1_epi32(lane_offset(a, t0 + c, s, lane)));
                        acc[lane] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), d[c], acc[lane]);
                    }
                }
            }
        }
    }
    let first = g * ROWS;
    let lanes = (m.rows - first).min(ROWS);
    for (c, acc) in acc.iter().enumerate() {
        store_lane_sums512(acc, out, (t0 + c) * m.rows + first, lanes);
    }
}

/// 16 scales (f16 or f32, as the layout says) starting at element `i`.
///
/// # Safety
/// AVX-512F and F16C; `p` must hold 16 scales from `i`.
#[inline(always)]
pub(super) unsafe fn load_scales16<const F16S: bool>(p: *const u8, i: usize) -> __m512 {
    if F16S {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i).cast()))
    } else {
        _mm512_loadu_ps(p.add(4 * i).cast())
    }
}

/// Adds 16 rows' lane accumulators in ggml's `hsum_float_8` order and
/// stores the first `len` sums at `out[at..]`.
///
/// # Safety
/// AVX-512F; `out[at..at + len]` must belong to the calling task.
#[inline(always)]
pub(super) unsafe fn store_lane_sums512(acc: &[__m512; LANES], out: &SharedOut, at: usize, len: usize) {
    let r: [__m512; 4] = std::array::from_fn(|i| _mm512_add_ps(acc[i], acc[i + 4]));
    let sum = _mm512_add_ps(_mm512_add_ps(r[0], r[2]), _mm512_add_ps(r[1], r[3]));
    let mut tmp = [0f32; 16];
    _mm512_storeu_ps(tmp.as_mut_ptr(), sum);
    out.slice(at, len).copy_from_slice(&tmp[..len]);
}

#[inline(always)]
unsafe fn group256<D: Dot4>(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    let f16s = matches!(m.scales, Scales::F16(_));
    for half in 0..2 {
        if g * ROWS + half * ROWS / 2 < m.rows {
            if f16s {
                row_tiles!(
                    a,
                    TILE,
                    |t| tile256::<D, true, TILE>(m, g, half, a, t, out),
                    tile256::<D, true, 1>(m, g, half, a, t, out)
                );
            } else {
                row_tiles!(
                    a,
                    TILE,
                    |t| tile256::<D, false, TILE>(m, g, half, a, t, out),
                    tile256::<D, false, 1>(m, g, half, a, t, out)
                );
            }
        }
    }
}

/// Group `g` of `m` against every row of `a` (512-bit AVX-512 VNNI).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, AVX2, FMA and F16C; `a` must
/// match `m`'s columns and `out` hold `a.n × m.rows` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn group_avx512vnni(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    let f16s = matches!(m.scales, Scales::F16(_));
    if f16s {
        row_tiles!(a, TILE, |t| tile512::<true, TILE>(m, g, a, t, out), tile512::<true, 1>(m, g, a, t, out));
    } else {
        row_tiles!(a, TILE, |t| tile512::<false, TILE>(m, g, a, t, out), tile512::<false, 1>(m, g, a, t, out));
    }
}

/// As [`group_avx512vnni`], 256-bit with AVX-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVXVNNI; shapes as above.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn group_avxvnni(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    group256::<AvxVnni>(m, g, a, out);
}

/// As [`group_avx512vnni`], 256-bit with AVX-512 VNNI's VL forms.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX512VNNI and AVX512VL; shapes as above.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn group_avx512vl(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    group256::<Avx512Vnni>(m, g, a, out);
}

/// As [`group_avx512vnni`], with plain AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; shapes as above.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_avx2(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    group256::<Avx2>(m, g, a, out);
}

/// The kernels of this file the running CPU supports, safely wrapped, in
/// the same order as `x86::available` (the last is the most capable).
pub(crate) fn available() -> Vec<(&'static str, crate::dispatch::TernaryGroupFn)> {
    // SAFETY (all wrappers): listed only when their features are present.
    fn w512(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avx512vnni(m, g, a, out) }
    }
    fn w512vl(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avx512vl(m, g, a, out) }
    }
    fn wvnni(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avxvnni(m, g, a, out) }
    }
    fn w2(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avx2(m, g, a, out) }
    }
    let base = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    let mut v: Vec<(&'static str, crate::dispatch::TernaryGroupFn)> = Vec::new();
    if base {
        v.push(("avx2", w2));
        if is_x86_feature_detected!("avxvnni") {
            v.push(("avx-vnni", wvnni));
        }
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            v.push(("avx512-vnni-256", w512vl));
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                v.push(("avx512-vnni", w512));
            }
        }
    }
    v
}
