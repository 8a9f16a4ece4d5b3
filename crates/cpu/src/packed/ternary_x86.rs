//! SIMD kernels for [`TernaryMatrix`]: per (row group, activation row) and
//! per lane, one `i32` vector of partial sums by `vpdpbusd` (or
//! `vpmaddubsw`+`vpmaddwd`), one f32 accumulator vector per lane, and
//! ggml's lane sum at the end. They follow `ternary::row_dot` operation for
//! operation, 8 rows at once.
#![allow(unsafe_code)]
#![allow(clippy::inline_always)]

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256, _mm256_cvtepi32_ps, _mm256_fmadd_ps,
    _mm256_loadu_si256, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_setzero_si256, _mm256_srli_epi16, _mm256_storeu_ps, _mm256_sub_epi32,
};

use super::acts::QuantizedActs;
use super::ternary::{TernaryMatrix, LANES, LANE_BYTES, SUPER, SUPER_BYTES};
use super::x86::{load_scales, scale_ptr, Avx2, Avx512Vnni, AvxVnni, Dot4};
use super::{Scales, GROUP};
use crate::pool::SharedOut;

/// The 8 code vectors (one per 32-element block) of one lane.
#[inline(always)]
unsafe fn lane_codes(p: *const u8) -> [__m256i; 8] {
    let mask = _mm256_set1_epi8(3);
    let v = [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())];
    let shifted = |x: __m256i, k: usize| match k {
        0 => x,
        1 => _mm256_srli_epi16::<2>(x),
        2 => _mm256_srli_epi16::<4>(x),
        _ => _mm256_srli_epi16::<6>(x),
    };
    std::array::from_fn(|b| _mm256_and_si256(shifted(v[b / 4], b % 4), mask))
}

/// `Σ code·a` of one lane: `x` points at the lane's first activation.
/// Two chains halve the latency when one activation row leaves nothing
/// else to overlap; integer sums are exact either way.
#[inline(always)]
unsafe fn lane_dot<D: Dot4>(w: &[__m256i; 8], x: *const i8) -> __m256i {
    let xv = |b: usize| _mm256_set1_epi32(x.add(32 * b).cast::<i32>().read_unaligned());
    let (mut a, mut c) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for b in (0..8).step_by(2) {
        a = D::dot4::<false>(a, w[b], xv(b));
        c = D::dot4::<false>(c, w[b + 1], xv(b + 1));
    }
    _mm256_add_epi32(a, c)
}

/// ggml's `hsum_float_8` order, lane-wise over 8 rows.
#[inline(always)]
unsafe fn sum_lanes(l: &[__m256; LANES]) -> __m256 {
    let r: [__m256; 4] = std::array::from_fn(|i| _mm256_add_ps(l[i], l[i + 4]));
    _mm256_add_ps(_mm256_add_ps(r[0], r[2]), _mm256_add_ps(r[1], r[3]))
}

/// Rows of group `g` against activation rows `t0..t0 + C`.
#[inline(always)]
unsafe fn tile<D: Dot4, const F16S: bool, const C: usize>(
    m: &TernaryMatrix,
    g: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    let cols = m.cols;
    let supers = cols / SUPER;
    let codes = m.codes.as_ptr().add(g * supers * SUPER_BYTES);
    debug_assert_eq!(matches!(m.scales, Scales::F16(_)), F16S);
    let scales = scale_ptr(&m.scales);
    let mut acc = [[_mm256_setzero_ps(); LANES]; C];
    for s in 0..supers {
        let dw = load_scales::<F16S>(scales, (g * supers + s) * GROUP);
        let d: [__m256; C] =
            std::array::from_fn(|c| _mm256_mul_ps(dw, _mm256_set1_ps(a.scale(t0 + c, s * SUPER / 32))));
        for lane in 0..LANES {
            let w = lane_codes(codes.add(s * SUPER_BYTES + lane * LANE_BYTES));
            for (c, acc) in acc.iter_mut().enumerate() {
                let t = t0 + c;
                let x = a.qs.as_ptr().add(t * cols + s * SUPER + 4 * lane);
                let isum = _mm256_sub_epi32(
                    lane_dot::<D>(&w, x),
                    _mm256_set1_epi32(a.sub_sum(t, s * (SUPER / 32) + lane, 32)),
                );
                acc[lane] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d[c], acc[lane]);
            }
        }
    }
    let lanes = (m.rows - g * GROUP).min(GROUP);
    for (c, acc) in acc.iter().enumerate() {
        let mut tmp = [0f32; GROUP];
        _mm256_storeu_ps(tmp.as_mut_ptr(), sum_lanes(acc));
        out.slice((t0 + c) * m.rows + g * GROUP, lanes).copy_from_slice(&tmp[..lanes]);
    }
}

/// Activation rows per register tile.
const TILE: usize = 2;

#[inline(always)]
unsafe fn group<D: Dot4>(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    let f16s = matches!(m.scales, Scales::F16(_));
    let mut t = 0;
    while t + TILE <= a.n {
        if f16s {
            tile::<D, true, TILE>(m, g, a, t, out);
        } else {
            tile::<D, false, TILE>(m, g, a, t, out);
        }
        t += TILE;
    }
    while t < a.n {
        if f16s {
            tile::<D, true, 1>(m, g, a, t, out);
        } else {
            tile::<D, false, 1>(m, g, a, t, out);
        }
        t += 1;
    }
}

/// Group `g` of `m` against every row of `a` (AVX-512 VNNI).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX512VNNI and AVX512VL; `a` must
/// match `m`'s columns and `out` hold `a.n × m.rows` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn group_avx512vnni(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    group::<Avx512Vnni>(m, g, a, out);
}

/// As [`group_avx512vnni`], with AVX-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVXVNNI; shapes as above.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn group_avxvnni(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    group::<AvxVnni>(m, g, a, out);
}

/// As [`group_avx512vnni`], with plain AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; shapes as above.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_avx2(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    group::<Avx2>(m, g, a, out);
}

/// The kernels of this file the running CPU supports, safely wrapped, in
/// the same order as `x86::available` (the last is the most capable).
pub(crate) fn available() -> Vec<(&'static str, crate::dispatch::TernaryGroupFn)> {
    // SAFETY (all wrappers): listed only when their features are present.
    fn w512(m: &TernaryMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avx512vnni(m, g, a, out) }
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
            v.push(("avx512-vnni", w512));
        }
    }
    v
}
