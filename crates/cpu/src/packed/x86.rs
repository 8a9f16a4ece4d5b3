//! SIMD kernels for packed matrices: one 8-lane f32 accumulator per
//! (row group, activation row), integer partial sums by `vpdpbusd` (AVX-512
//! VNNI or AVX-VNNI) or by `vpmaddubsw`+`vpmaddwd` (plain AVX2). They follow
//! `reference::row_dot` operation for operation, lane by lane.
#![allow(unsafe_code)]
#![allow(clippy::inline_always)]

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256, _mm256_blendv_epi8, _mm256_castsi256_ps, _mm256_cmpgt_epi32, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_cvtepi8_epi32,
    _mm256_cvtph_ps, _mm256_dpbusd_avx_epi32, _mm256_dpbusd_epi32, _mm256_dpwssd_avx_epi32, _mm256_dpwssd_epi32,
    _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps,
    _mm256_mullo_epi32, _mm256_or_si256, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi16, _mm256_slli_epi32, _mm256_sllv_epi32, _mm256_srli_epi16, _mm256_storeu_ps, _mm256_sub_epi32, _mm256_sub_ps, _mm256_xor_ps,
    _mm_loadl_epi64, _mm_loadu_si128,
};

use super::acts::QuantizedActs;
use super::{PackedMatrix, Scales, BLOCK, GROUP, SUPER};
use crate::pool::SharedOut;

/// Σ of 4 adjacent `u8 × i8` products into each i32 lane of `acc`.
pub(crate) trait Dot4 {
    /// `dot4` saturates i16 pair sums (`vpmaddubsw`): unsigned codes × i8
    /// activations must stay below 2¹⁵ / 254 ≈ 129 per pair.
    const SATURATES: bool = false;

    /// `wide`: codes may exceed 127 (would saturate `vpmaddubsw`).
    unsafe fn dot4<const WIDE: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;

    /// `acc + a.lo·b.lo + a.hi·b.hi` over the i16 halves of each i32 lane.
    #[inline(always)]
    unsafe fn mad16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
}

pub(crate) struct Avx512Vnni;
pub(crate) struct AvxVnni;
pub(crate) struct Avx2;

impl Dot4 for Avx512Vnni {
    #[inline(always)]
    unsafe fn dot4<const WIDE: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }

    #[inline(always)]
    unsafe fn mad16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, a, b)
    }
}

impl Dot4 for AvxVnni {
    #[inline(always)]
    unsafe fn dot4<const WIDE: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, u, s)
    }

    #[inline(always)]
    unsafe fn mad16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpwssd_avx_epi32(acc, a, b)
    }
}

impl Dot4 for Avx2 {
    const SATURATES: bool = true;

    #[inline(always)]
    unsafe fn dot4<const WIDE: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        if WIDE {
            // u = low7 + 128·bit7; each part stays inside i16 in vpmaddubsw.
            let low = _mm256_and_si256(u, _mm256_set1_epi8(0x7F));
            let top = _mm256_and_si256(_mm256_srli_epi16::<7>(u), _mm256_set1_epi8(1));
            let a = _mm256_madd_epi16(_mm256_maddubs_epi16(low, s), ones);
            let b = _mm256_madd_epi16(_mm256_maddubs_epi16(top, s), _mm256_set1_epi16(128));
            _mm256_add_epi32(acc, _mm256_add_epi32(a, b))
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones))
        }
    }
}

/// ORs a bit plane into the 8 code vectors `$out`: byte `j` of a row's
/// plane holds, in bit `k`, the bit of element `4k + j` — the same byte as
/// in code vector `k` — so a 16-bit shift (`l`eft or `r`ight, listed per
/// vector) moves it to bit `$to` without crossing into the neighbouring
/// byte (see `PackedMatrix::slot_in_block`). Immediate shifts: a macro, as
/// a shift count held in a variable costs a third of the kernel's speed.
macro_rules! or_plane {
    ($out:expr, $plane:expr, $to:expr, [$($dir:ident $n:literal),*]) => {{
        let bit = _mm256_set1_epi8(1 << $to);
        let moved = [$(or_plane!(@shift $dir $n, $plane)),*];
        for (o, m) in $out.iter_mut().zip(moved) {
            *o = _mm256_or_si256(*o, _mm256_and_si256(m, bit));
        }
    }};
    (@shift l $n:literal, $p:expr) => {
        _mm256_slli_epi16::<$n>($p)
    };
    (@shift r $n:literal, $p:expr) => {
        _mm256_srli_epi16::<$n>($p)
    };
}

/// The 8 code vectors of one block (vector `k` holds elements `4k..4k+4` of
/// the 8 rows). With `NL`, the nibbles index a value grid (`Layout::grid`,
/// as [`grid_table`] gives it) and come back as `value + 128` bytes (one
/// `vpshufb` each). `two_bit` layouts hold four codes per byte; `planes`
/// more bits of each code come from the bit planes after the low bits
/// (`PackedMatrix::slot_in_block`).
#[inline(always)]
unsafe fn load_codes<const EIGHT: bool, const NL: bool>(
    p: *const u8,
    table: __m256i,
    two_bit: bool,
    planes: usize,
) -> [__m256i; 8] {
    let mut out = [_mm256_setzero_si256(); 8];
    if EIGHT {
        for (k, o) in out.iter_mut().enumerate() {
            *o = _mm256_loadu_si256(p.add(32 * k).cast());
        }
        return out;
    }
    // Loops, not `array::from_fn`: a closure would not inherit the target
    // features, and the intrinsics inside it would become calls.
    if two_bit {
        let mask = _mm256_set1_epi8(3);
        let v = [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())];
        out = [
            v[0],
            v[1],
            _mm256_srli_epi16::<2>(v[0]),
            _mm256_srli_epi16::<2>(v[1]),
            _mm256_srli_epi16::<4>(v[0]),
            _mm256_srli_epi16::<4>(v[1]),
            _mm256_srli_epi16::<6>(v[0]),
            _mm256_srli_epi16::<6>(v[1]),
        ];
        for o in &mut out {
            *o = _mm256_and_si256(*o, mask);
        }
        if planes > 0 {
            let plane = _mm256_loadu_si256(p.add(GROUP * BLOCK / 4).cast());
            or_plane!(out, plane, 2, [l 2, l 1, l 0, r 1, r 2, r 3, r 4, r 5]);
        }
        return out;
    }
    let mask = _mm256_set1_epi8(0x0F);
    for k in 0..4 {
        let v = _mm256_loadu_si256(p.add(32 * k).cast());
        out[k] = _mm256_and_si256(v, mask);
        out[k + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
    }
    if NL {
        for o in &mut out {
            *o = _mm256_shuffle_epi8(table, *o);
        }
    } else if planes > 0 {
        let plane = _mm256_loadu_si256(p.add(GROUP * BLOCK / 2).cast());
        or_plane!(out, plane, 4, [l 4, l 3, l 2, l 1, l 0, r 1, r 2, r 3]);
        if planes > 1 {
            let plane = _mm256_loadu_si256(p.add(GROUP * BLOCK / 2 + 32).cast());
            or_plane!(out, plane, 5, [l 5, l 4, l 3, l 2, l 1, l 0, r 1, r 2]);
        }
    }
    out
}

/// `m`'s value grid `+ 128` in both 128-bit lanes, for `vpshufb` (zeros
/// for layouts without a grid).
#[inline(always)]
unsafe fn grid_table(m: &PackedMatrix) -> __m256i {
    let t = m.layout.grid.map_or([0; 16], |g| g.map(|v| (i16::from(v) + 128) as u8));
    _mm256_loadu_si256([t, t].as_ptr().cast())
}

/// Start of a scale array (f16 or f32 elements, as the layout says).
pub(super) fn scale_ptr(s: &Scales) -> *const u8 {
    match s {
        Scales::F16(v) => v.as_ptr().cast(),
        Scales::F32(v) => v.as_ptr().cast(),
        Scales::E8M0(v) => v.as_ptr(),
        Scales::Super { .. } => unreachable!("super-block scales are read by `tile_super`"),
    }
}

/// 8 scales (one per row of the group) starting at element `i`.
#[inline(always)]
pub(super) unsafe fn load_scales<const F16S: bool>(p: *const u8, i: usize) -> __m256 {
    if F16S {
        _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast()))
    } else {
        _mm256_loadu_ps(p.add(4 * i).cast())
    }
}

/// 8 E8M0 exponent bytes starting at element `i`, as the f32 values
/// `2^(e − 128)` (`reference::e8m0_to_f32_half`: subnormal below e = 2).
#[inline(always)]
unsafe fn load_e8m0(p: *const u8, i: usize) -> __m256 {
    let e = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(i).cast()));
    let normal = _mm256_slli_epi32::<23>(_mm256_sub_epi32(e, _mm256_set1_epi32(1)));
    let subnormal = _mm256_sllv_epi32(_mm256_set1_epi32(0x0020_0000), e);
    let is_normal = _mm256_cmpgt_epi32(e, _mm256_set1_epi32(1));
    _mm256_castsi256_ps(_mm256_blendv_epi8(subnormal, normal, is_normal))
}

/// Σ code·x over one sub-block: `w` holds its `SUB/4` code vectors, `x`
/// points at its activations. With `split`, two independent chains halve
/// the `vpdpbusd` latency chain (a lone activation row leaves the core
/// nothing else to overlap); integer sums are exact either way.
#[inline(always)]
unsafe fn sub_dot<D: Dot4, const EIGHT: bool, const SUB: usize>(w: &[__m256i], x: *const i8, split: bool) -> __m256i {
    let xv = |k: usize| _mm256_set1_epi32(x.add(4 * k).cast::<i32>().read_unaligned());
    if split {
        let (mut a, mut b) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for k in (0..SUB / 4).step_by(2) {
            a = D::dot4::<EIGHT>(a, w[k], xv(k));
            b = D::dot4::<EIGHT>(b, w[k + 1], xv(k + 1));
        }
        _mm256_add_epi32(a, b)
    } else {
        let mut a = _mm256_setzero_si256();
        for (k, &wk) in w.iter().enumerate() {
            a = D::dot4::<EIGHT>(a, wk, xv(k));
        }
        a
    }
}

/// Rows of group `g` against activation rows `t0..t0 + C`.
#[inline(always)]
unsafe fn tile<
    D: Dot4,
    const EIGHT: bool,
    const NL: bool,
    const SUB: usize,
    const MIN: bool,
    const F16S: bool,
    const C: usize,
>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    let cols = m.cols;
    let blocks = cols / BLOCK;
    let subs = cols / SUB;
    let bb = m.layout.block_bytes();
    let offset = m.layout.offset;
    let codes = m.codes.as_ptr().add(g * blocks * bb);
    let table = grid_table(m);
    let (two_bit, planes) = (m.layout.two_bit, m.layout.planes);
    let scale_base = g * subs * GROUP;
    debug_assert_eq!(matches!(m.scales, Scales::F16(_)), F16S);
    let e8m0 = m.layout.e8m0_scales;
    let (scales, mins) = (scale_ptr(&m.scales), scale_ptr(&m.mins));
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..blocks {
        if C == 1 {
            prefetch_block(codes.add(b * bb), bb);
        }
        let w = load_codes::<EIGHT, NL>(codes.add(b * bb), table, two_bit, planes);
        for s in 0..BLOCK / SUB {
            let sidx = b * (BLOCK / SUB) + s;
            let dw = if e8m0 {
                load_e8m0(scales, scale_base + sidx * GROUP)
            } else {
                load_scales::<F16S>(scales, scale_base + sidx * GROUP)
            };
            let mw = if MIN { load_scales::<F16S>(mins, scale_base + sidx * GROUP) } else { _mm256_setzero_ps() };
            for (c, acc) in acc.iter_mut().enumerate() {
                let t = t0 + c;
                let x = a.qs.as_ptr().add(t * cols + b * BLOCK + s * SUB);
                let ws = &w[s * (SUB / 4)..(s + 1) * (SUB / 4)];
                // IQ4 codes reach 241: the wide form where `vpmaddubsw` could saturate.
                let mut isum =
                    if NL { sub_dot::<D, true, SUB>(ws, x, C == 1) } else { sub_dot::<D, EIGHT, SUB>(ws, x, C == 1) };
                let sum = a.sub_sum(t, sidx, SUB);
                isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(offset * sum));
                let da = a.scale(t, b);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(da)), *acc);
                if MIN {
                    let term = a.min_term(F16S, t, sidx, SUB, da, sum);
                    *acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(term), *acc);
                }
            }
        }
    }
    store_tile(m, g, t0, &acc, out);
}

/// [`tile`] for lane-wise layouts (`Layout::lanes`, sub-blocks of 32 with
/// f16 scales): per block, each of the eight `vpdpbusd` results (elements
/// `4k..4k+4` of the 8 rows) is its own lane and gets its own FMA, the
/// minimums their own accumulator; lanes are added in `hsum_float_8` order
/// at the end (see `reference::lane_row_dot`).
#[inline(always)]
unsafe fn tile_lanes<D: Dot4, const EIGHT: bool, const MIN: bool, const C: usize>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    let cols = m.cols;
    let blocks = cols / BLOCK;
    let bb = m.layout.block_bytes();
    let offset = m.layout.offset;
    let codes = m.codes.as_ptr().add(g * blocks * bb);
    let offsets = _mm256_set1_epi8(offset as u8 as i8);
    let (two_bit, planes) = (m.layout.two_bit, m.layout.planes);
    debug_assert!(matches!(m.scales, Scales::F16(_)));
    let (scales, mins) = (scale_ptr(&m.scales), scale_ptr(&m.mins));
    let mut lanes = [[_mm256_setzero_ps(); 8]; C];
    let mut summs = [_mm256_setzero_ps(); C];
    for b in 0..blocks {
        if C == 1 {
            prefetch_block(codes.add(b * bb), bb);
        }
        let w = load_codes::<EIGHT, false>(codes.add(b * bb), _mm256_setzero_si256(), two_bit, planes);
        let dw = load_scales::<true>(scales, (g * blocks + b) * GROUP);
        for (c, lanes) in lanes.iter_mut().enumerate() {
            let t = t0 + c;
            let x = a.qs.as_ptr().add(t * cols + b * BLOCK);
            let da = a.scale(t, b);
            let dd = _mm256_mul_ps(dw, _mm256_set1_ps(da));
            for (k, lane) in lanes.iter_mut().enumerate() {
                let xk = _mm256_set1_epi32(x.add(4 * k).cast::<i32>().read_unaligned());
                let mut isum = D::dot4::<EIGHT>(_mm256_setzero_si256(), w[k], xk);
                if offset != 0 {
                    // offset·Σa of these four activations, by the same instruction
                    // (|128·Σ of 2| fits `vpmaddubsw`'s i16).
                    isum = _mm256_sub_epi32(isum, D::dot4::<false>(_mm256_setzero_si256(), offsets, xk));
                }
                *lane = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(isum), *lane);
            }
            if MIN {
                let mw = load_scales::<true>(mins, (g * blocks + b) * GROUP);
                let term = a.min_term(true, t, b, BLOCK, da, a.sub_sum(t, b, BLOCK));
                summs[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(term), summs[c]);
            }
        }
    }
    // Loops, not `array::from_fn`: a closure would not inherit the target
    // features, and the intrinsics inside it would become calls.
    let mut acc = summs;
    for (acc, lanes) in acc.iter_mut().zip(&lanes) {
        *acc = _mm256_add_ps(hsum8_lanes(lanes), *acc);
    }
    store_tile(m, g, t0, &acc, out);
}

/// Writes the accumulators of group `g` for activation rows `t0..t0 + C`
/// (a partial last group writes only its real rows).
#[inline(always)]
unsafe fn store_tile<const C: usize>(m: &PackedMatrix, g: usize, t0: usize, acc: &[__m256; C], out: &SharedOut) {
    let lanes = (m.rows - g * GROUP).min(GROUP);
    for (c, acc) in acc.iter().enumerate() {
        let dst = out.slice((t0 + c) * m.rows + g * GROUP, lanes);
        if lanes == GROUP {
            _mm256_storeu_ps(dst.as_mut_ptr(), *acc);
        } else {
            let mut tmp = [0f32; GROUP];
            _mm256_storeu_ps(tmp.as_mut_ptr(), *acc);
            dst.copy_from_slice(&tmp[..lanes]);
        }
    }
}

/// How [`tile_super`] applies its float steps: llama.cpp's repacked `gemv`
/// (per super-block) and `gemm` (per `Layout::gemm_step`) for `Q4_K`/`Q2_K`,
/// or its tiled K-quant matmul for the lane-wise K-quants' batches.
const GEMV: u8 = 0;
const GEMM: u8 = 1;
const TILED: u8 = 2;

/// [`tile`] for super-block layouts summed as whole integers: codes (`EIGHT`
/// bits or nibbles) in sub-blocks of `SUB`, integer sums over each float
/// step scaled by the integer sub-block factors (less `offset·Σa`), then
/// the float steps of `MODE` — for `GEMV`/`GEMM` an FMA into each of two
/// accumulators (see `reference::super_row_dot`), for `TILED`
/// `r = fma(−dmin, Σm·Σa, f32(s1)·d_w)`, `acc = fma(r, d_a, acc)` (see
/// `reference::k_lane_row_dot`).
#[inline(always)]
unsafe fn tile_super<
    D: Dot4,
    const EIGHT: bool,
    const NL: bool,
    const SUB: usize,
    const MIN: bool,
    const C: usize,
    const MODE: u8,
>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    let Scales::Super { d, q: sc, .. } = &m.scales else { unreachable!("super-block layouts store factors") };
    let (dmin, mn) = match &m.mins {
        Scales::Super { d, q, .. } => (d.as_slice(), q.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let cols = m.cols;
    let (blocks, subs) = (cols / BLOCK, cols / SUB);
    let offset = m.layout.offset;
    let step = if MODE == GEMM { m.layout.gemm_step / BLOCK } else { SUPER / BLOCK };
    let bb = m.layout.block_bytes();
    let codes = m.codes.as_ptr().add(g * blocks * bb);
    let table = grid_table(m);
    let (two_bit, planes) = (m.layout.two_bit, m.layout.planes);
    let mut acc = [_mm256_setzero_ps(); C];
    let mut acc_min = [_mm256_setzero_ps(); C];
    for first in (0..blocks).step_by(step) {
        let mut isum = [_mm256_setzero_si256(); C];
        let mut msum = [_mm256_setzero_si256(); C];
        for b in first..first + step {
            if C == 1 {
                prefetch_block(codes.add(b * bb), bb);
            }
            let w = load_codes::<EIGHT, NL>(codes.add(b * bb), table, two_bit, planes);
            for h in 0..BLOCK / SUB {
                let s = b * (BLOCK / SUB) + h;
                let qi = (g * subs + s) * GROUP;
                let scv = sub_scales(sc, qi);
                for c in 0..C {
                    let t = t0 + c;
                    let x = a.qs.as_ptr().add(t * cols + s * SUB);
                    let ws = &w[h * SUB / 4..(h + 1) * SUB / 4];
                    let mut dot = if NL {
                        sub_dot::<D, true, SUB>(ws, x, C == 1)
                    } else {
                        sub_dot::<D, EIGHT, SUB>(ws, x, C == 1)
                    };
                    if offset != 0 {
                        dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(offset * a.sub_sum(t, s, SUB)));
                    }
                    isum[c] = _mm256_add_epi32(isum[c], _mm256_mullo_epi32(dot, scv));
                    if MIN {
                        let sum = _mm256_set1_epi32(a.sub_sum(t, s, SUB));
                        msum[c] = _mm256_add_epi32(msum[c], _mm256_mullo_epi32(sub_scales(mn, qi), sum));
                    }
                }
            }
        }
        let sup = first * BLOCK / SUPER;
        let di = (g * (cols / SUPER) + sup) * GROUP;
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(di).cast()));
        let dminw = if MIN { _mm256_cvtph_ps(_mm_loadu_si128(dmin.as_ptr().add(di).cast())) } else { dw };
        for c in 0..C {
            let da = _mm256_set1_ps(a.scale(t0 + c, first));
            if MODE == TILED {
                let mut r = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[c]), dw);
                if MIN {
                    r = _mm256_fnmadd_ps(dminw, _mm256_cvtepi32_ps(msum[c]), r);
                }
                acc[c] = _mm256_fmadd_ps(r, da, acc[c]);
            } else {
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), _mm256_mul_ps(dw, da), acc[c]);
                acc_min[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum[c]), _mm256_mul_ps(dminw, da), acc_min[c]);
            }
        }
    }
    if MODE != TILED {
        for (acc, acc_min) in acc.iter_mut().zip(&acc_min) {
            *acc = _mm256_sub_ps(*acc, *acc_min);
        }
    }
    store_tile(m, g, t0, &acc, out);
}

/// Lane-wise super-block layouts (`Q3_K`, `Q5_K`, `Q6_K`) in llama.cpp's
/// `vec_dot_qN_K_q8_K` order, for batches below
/// [`TILED_MM_MIN_ROWS`](super::reference::TILED_MM_MIN_ROWS) rows (see
/// `reference::k_lane_row_dot`): per super-block, eight integer lanes
/// per row — each `vpdpbusd` result (|Σ| ≤ 4·63·127 fits in i16), started
/// from `−offset·Σa` when the offset is taken per element (`PAIRS` false),
/// times its sub-block's signed scale by `vpdpwssd`/`vpmaddwd`; `Q6_K`
/// (`PAIRS`) subtracts `32·sc·Σa` of sub-blocks `2k`, `2k+1` from lane `k`
/// instead. Then one FMA per lane, and the minimums (`MIN`) on their own
/// accumulator; `hsum_float_8` order at the end.
#[inline(always)]
unsafe fn tile_k_lanes<
    D: Dot4,
    const EIGHT: bool,
    const NL: bool,
    const SUB: usize,
    const MIN: bool,
    const PAIRS: bool,
    const C: usize,
>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    t0: usize,
    out: &SharedOut,
) {
    let Scales::Super { d, q: sc, .. } = &m.scales else { unreachable!("super-block layouts store factors") };
    let (dmin, mn) = match &m.mins {
        Scales::Super { d, q, .. } => (d.as_slice(), q.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let cols = m.cols;
    let (blocks, subs) = (cols / BLOCK, cols / SUB);
    let offset = m.layout.offset;
    let bb = m.layout.block_bytes();
    let codes = m.codes.as_ptr().add(g * blocks * bb);
    let table = grid_table(m);
    let (two_bit, planes) = (m.layout.two_bit, m.layout.planes);
    debug_assert!(!PAIRS || offset == 32);
    // The offset as unsigned bytes (IQ4's 128 too).
    let offsets = _mm256_set1_epi8(offset as u8 as i8);
    let low16 = _mm256_set1_epi32(0xFFFF);
    let sign = _mm256_set1_ps(-0.0);
    let mut lanes = [[_mm256_setzero_ps(); 8]; C];
    let mut summs = [_mm256_setzero_ps(); C];
    for sup in 0..cols / SUPER {
        let mut isum = [[_mm256_setzero_si256(); 8]; C];
        for b in sup * (SUPER / BLOCK)..(sup + 1) * (SUPER / BLOCK) {
            if C == 1 {
                prefetch_block(codes.add(b * bb), bb);
            }
            let w = load_codes::<EIGHT, NL>(codes.add(b * bb), table, two_bit, planes);
            // Lanes 0..4 hold elements 0..16 of the block, lanes 4..8 elements 16..32.
            let (s_lo, s_hi) = (
                sub_scales(sc, (g * subs + b * BLOCK / SUB) * GROUP),
                sub_scales(sc, (g * subs + (b * BLOCK + 16) / SUB) * GROUP),
            );
            let (s_lo16, s_hi16) = (_mm256_and_si256(s_lo, low16), _mm256_and_si256(s_hi, low16));
            for (c, isum) in isum.iter_mut().enumerate() {
                let t = t0 + c;
                let x = a.qs.as_ptr().add(t * cols + b * BLOCK);
                for (k, lane) in isum.iter_mut().enumerate() {
                    let xk = _mm256_set1_epi32(x.add(4 * k).cast::<i32>().read_unaligned());
                    // K-quant codes are at most 6 bits: `vpmaddubsw` cannot saturate.
                    let mut dot = if NL {
                        D::dot4::<true>(_mm256_setzero_si256(), w[k], xk)
                    } else {
                        D::dot4::<false>(_mm256_setzero_si256(), w[k], xk)
                    };
                    if !PAIRS && offset != 0 {
                        // offset·Σa of these four activations, by the same instruction.
                        dot = _mm256_sub_epi32(dot, D::dot4::<false>(_mm256_setzero_si256(), offsets, xk));
                    }
                    *lane = if NL {
                        // IQ4 values times activations leave i16 (4·127·127): a full product.
                        _mm256_add_epi32(*lane, _mm256_mullo_epi32(dot, if k < 4 { s_lo } else { s_hi }))
                    } else {
                        D::mad16(*lane, dot, if k < 4 { s_lo16 } else { s_hi16 })
                    };
                }
            }
        }
        let s0 = sup * (SUPER / SUB);
        let di = (g * (cols / SUPER) + sup) * GROUP;
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(di).cast()));
        let dminw = if MIN { _mm256_cvtph_ps(_mm_loadu_si128(dmin.as_ptr().add(di).cast())) } else { dw };
        // Q6_K: lane k's offset term covers sub-blocks 2k and 2k+1 of the super-block.
        let mut offset_scales = [_mm256_setzero_si256(); 16];
        if PAIRS {
            for (i, v) in offset_scales.iter_mut().enumerate() {
                *v = sub_scales(sc, (g * subs + s0 + i) * GROUP);
            }
        }
        for c in 0..C {
            let t = t0 + c;
            let da = _mm256_set1_ps(a.scale(t, sup * (SUPER / BLOCK)));
            let dd = _mm256_mul_ps(dw, da);
            let mut msum = _mm256_setzero_si256();
            if MIN {
                for s in s0..s0 + SUPER / SUB {
                    let sum = _mm256_set1_epi32(a.sub_sum(t, s, SUB));
                    msum = _mm256_add_epi32(msum, _mm256_mullo_epi32(sub_scales(mn, (g * subs + s) * GROUP), sum));
                }
            }
            for k in 0..8 {
                let mut lane = isum[c][k];
                if PAIRS {
                    let (sa, sb) = (s0 + 2 * k, s0 + 2 * k + 1);
                    let off = _mm256_add_epi32(
                        _mm256_mullo_epi32(offset_scales[2 * k], _mm256_set1_epi32(a.sub_sum(t, sa, SUB))),
                        _mm256_mullo_epi32(offset_scales[2 * k + 1], _mm256_set1_epi32(a.sub_sum(t, sb, SUB))),
                    );
                    // Q6_K's offset is 32.
                    lane = _mm256_sub_epi32(lane, _mm256_slli_epi32::<5>(off));
                }
                lanes[c][k] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lane), lanes[c][k]);
            }
            if MIN {
                let neg = _mm256_xor_ps(_mm256_mul_ps(da, dminw), sign);
                summs[c] = _mm256_fmadd_ps(neg, _mm256_cvtepi32_ps(msum), summs[c]);
            }
        }
    }
    let mut acc = [_mm256_setzero_ps(); C];
    for ((acc, lanes), summs) in acc.iter_mut().zip(&lanes).zip(&summs) {
        *acc = if MIN {
            _mm256_add_ps(hsum8_lanes(lanes), *summs)
        } else {
            hsum8_lanes(lanes)
        };
    }
    store_tile(m, g, t0, &acc, out);
}

/// The signed integer scales of one sub-block for the 8 rows of a group
/// (`q[i..i + 8]`), as i32 lanes.
#[inline(always)]
unsafe fn sub_scales(q: &[i8], i: usize) -> __m256i {
    _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.as_ptr().add(i).cast()))
}

/// ggml's `hsum_float_8` of eight lane vectors, one row per element.
#[inline(always)]
unsafe fn hsum8_lanes(l: &[__m256; 8]) -> __m256 {
    let even = _mm256_add_ps(_mm256_add_ps(l[0], l[4]), _mm256_add_ps(l[2], l[6]));
    let odd = _mm256_add_ps(_mm256_add_ps(l[1], l[5]), _mm256_add_ps(l[3], l[7]));
    _mm256_add_ps(even, odd)
}

/// How far ahead of the codes in use a single-row tile prefetches. A lone
/// activation row leaves the core little work to overlap with DRAM latency,
/// and the hardware prefetcher alone does not run far enough ahead: asking
/// ~3 KiB ahead took a DRAM-bound Q4_K matvec from ~19 to ~25 GB/s on one
/// core and from ~31 to ~47 GB/s on two (`benches/matmul.rs`, 65536 rows).
pub(super) const PREFETCH_AHEAD: usize = 3072;

/// Prefetches the `len` bytes (whole cache lines) [`PREFETCH_AHEAD`] past
/// `p`. A hint, never a fault, so it may point past the end of the codes.
#[inline(always)]
pub(super) unsafe fn prefetch_block(p: *const u8, len: usize) {
    for line in (0..len).step_by(64) {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            p.wrapping_add(PREFETCH_AHEAD + line).cast(),
        );
    }
}

/// Activation rows per register tile.
const TILE: usize = 4;

/// Activation rows per register tile of the lane-wise kernels (8 lane
/// accumulators each).
const TILE_LANES: usize = 2;

/// Group `g` against all activation rows, in tiles of [`TILE`].
#[inline(always)]
unsafe fn group<D: Dot4, const EIGHT: bool, const NL: bool, const SUB: usize, const MIN: bool, const F16S: bool>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    out: &SharedOut,
) {
    row_tiles!(
        a,
        TILE,
        |t| tile::<D, EIGHT, NL, SUB, MIN, F16S, TILE>(m, g, a, t, out),
        tile::<D, EIGHT, NL, SUB, MIN, F16S, 1>(m, g, a, t, out)
    );
}

/// [`group`] for lane-wise layouts.
#[inline(always)]
unsafe fn group_lanes<D: Dot4, const EIGHT: bool, const MIN: bool>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    out: &SharedOut,
) {
    row_tiles!(
        a,
        TILE_LANES,
        |t| tile_lanes::<D, EIGHT, MIN, TILE_LANES>(m, g, a, t, out),
        tile_lanes::<D, EIGHT, MIN, 1>(m, g, a, t, out)
    );
}

/// [`group`] for lane-wise super-block layouts.
#[inline(always)]
unsafe fn group_k_lanes<
    D: Dot4,
    const EIGHT: bool,
    const NL: bool,
    const SUB: usize,
    const MIN: bool,
    const PAIRS: bool,
>(
    m: &PackedMatrix,
    g: usize,
    a: &QuantizedActs,
    out: &SharedOut,
) {
    // ggml's tiled K-quant matmul takes batches of 8 rows or more: whole integer sums.
    if a.n >= super::reference::TILED_MM_MIN_ROWS {
        row_tiles!(
            a,
            TILE,
            |t| tile_super::<D, EIGHT, NL, SUB, MIN, TILE, TILED>(m, g, a, t, out),
            tile_super::<D, EIGHT, NL, SUB, MIN, 1, TILED>(m, g, a, t, out)
        );
        return;
    }
    row_tiles!(
        a,
        TILE_LANES,
        |t| tile_k_lanes::<D, EIGHT, NL, SUB, MIN, PAIRS, TILE_LANES>(m, g, a, t, out),
        tile_k_lanes::<D, EIGHT, NL, SUB, MIN, PAIRS, 1>(m, g, a, t, out)
    );
}

/// [`group`] for super-block layouts: whole tiles of 4 rows are llama.cpp's
/// `gemm` rows, the remaining rows its `gemv` rows (`reference::in_gemm_rows`);
/// for MoE experts (`row_by_row`) all rows take the `gemv` order.
#[inline(always)]
unsafe fn group_super<D: Dot4, const SUB: usize>(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    const { assert!(TILE == 4, "tiles of 4 are llama.cpp's gemm rows") };
    if m.row_by_row {
        row_tiles!(
            a,
            TILE,
            |t| tile_super::<D, false, false, SUB, true, TILE, GEMV>(m, g, a, t, out),
            tile_super::<D, false, false, SUB, true, 1, GEMV>(m, g, a, t, out)
        );
    } else {
        row_tiles!(
            a,
            TILE,
            |t| tile_super::<D, false, false, SUB, true, TILE, GEMM>(m, g, a, t, out),
            tile_super::<D, false, false, SUB, true, 1, GEMV>(m, g, a, t, out)
        );
    }
}

/// Instantiates `group` for the layout of `m` (the combinations the
/// supported types use) with the given `Dot4` implementation.
macro_rules! by_layout {
    ($d:ty, $m:expr, $g:expr, $a:expr, $out:expr) => {{
        let l = $m.layout;
        if l.super_scales {
            if l.lanes {
                return match $m.ty {
                    hearth_core::GgmlType::Q6_K => group_k_lanes::<$d, false, false, 16, false, true>($m, $g, $a, $out),
                    hearth_core::GgmlType::Q5_K => group_k_lanes::<$d, false, false, 32, true, false>($m, $g, $a, $out),
                    hearth_core::GgmlType::Q3_K => group_k_lanes::<$d, false, false, 16, false, false>($m, $g, $a, $out),
                    hearth_core::GgmlType::IQ4_XS => group_k_lanes::<$d, false, true, 32, false, false>($m, $g, $a, $out),
                    ty => unreachable!("no lane-wise super-block kernel for {ty:?}"),
                };
            }
            debug_assert!(!l.eight_bit && l.has_min);
            return match l.sub {
                16 => group_super::<$d, 16>($m, $g, $a, $out),
                _ => group_super::<$d, 32>($m, $g, $a, $out),
            };
        }
        if l.lanes {
            debug_assert!(l.sub == BLOCK && l.f16_scales);
            return match (l.eight_bit, l.has_min) {
                (false, true) => group_lanes::<$d, false, true>($m, $g, $a, $out),
                (true, false) => group_lanes::<$d, true, false>($m, $g, $a, $out),
                (true, true) => group_lanes::<$d, true, true>($m, $g, $a, $out),
                (false, false) => group_lanes::<$d, false, false>($m, $g, $a, $out),
            };
        }
        match (l.eight_bit, l.sub, l.has_min, l.f16_scales) {
            _ if l.grid.is_some() && l.f16_scales => group::<$d, false, true, 32, false, true>($m, $g, $a, $out),
            _ if l.grid.is_some() => group::<$d, false, true, 32, false, false>($m, $g, $a, $out),
            (false, 32, false, true) => group::<$d, false, false, 32, false, true>($m, $g, $a, $out),
            (false, 32, true, true) => group::<$d, false, false, 32, true, true>($m, $g, $a, $out),
            (true, 32, false, true) => group::<$d, true, false, 32, false, true>($m, $g, $a, $out),
            (true, 32, true, true) => group::<$d, true, false, 32, true, true>($m, $g, $a, $out),
            _ => unreachable!("no type uses layout {l:?}"),
        }
    }};
}

/// Computes group `g` of `m` against every row of `a` (AVX-512 VNNI).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX512VNNI and AVX512VL; `a` must
/// match `m`'s columns and `out` hold `a.n × m.rows` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn group_avx512vnni(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    by_layout!(Avx512Vnni, m, g, a, out);
}

/// As [`group_avx512vnni`], with AVX-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVXVNNI; shapes as above.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn group_avxvnni(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    by_layout!(AvxVnni, m, g, a, out);
}

/// As [`group_avx512vnni`], with plain AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; shapes as above.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn group_avx2(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
    by_layout!(Avx2, m, g, a, out);
}

/// The kernels of this file the running CPU supports, safely wrapped.
pub(crate) fn available() -> Vec<(&'static str, crate::dispatch::PackedGroupFn)> {
    // SAFETY (all wrappers): listed only when their features are present.
    fn w512(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avx512vnni(m, g, a, out) }
    }
    fn wvnni(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avxvnni(m, g, a, out) }
    }
    fn w2(m: &PackedMatrix, g: usize, a: &QuantizedActs, out: &SharedOut) {
        unsafe { group_avx2(m, g, a, out) }
    }
    let base = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    let mut v: Vec<(&'static str, crate::dispatch::PackedGroupFn)> = Vec::new();
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
