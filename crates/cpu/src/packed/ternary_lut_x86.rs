//! The AVX-512BW kernel of the lookup family ([`super::ternary_lut`]): a
//! table is 32 `i16` in one register-sized load, `vpermw` looks up 32 rows'
//! triples at once (its index takes five bits; the table repeats its 16
//! entries so the neighbouring nibble's low bit is harmless), sums stay in
//! `i16` (11 lookups of at most 3·128 each), and the sign masks feed a
//! masked add: `Σ = all − 2·negative`.
#![allow(unsafe_code)]
#![allow(clippy::inline_always)]

use std::arch::x86_64::{
    __m512, __m512i, _mm512_add_epi16, _mm512_add_epi32, _mm512_castsi512_si256, _mm512_cvtepi16_epi32,
    _mm512_cvtepi32_ps, _mm512_extracti64x4_epi64, _mm512_fmadd_ps, _mm512_loadu_si512, _mm512_mask_add_epi16,
    _mm512_mul_ps, _mm512_permutexvar_epi16, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_setzero_si512, _mm512_srli_epi16, _mm512_sub_epi16,
};

use super::acts::QuantizedActs;
use super::ternary::{LANES, SUPER};
use super::ternary_lut::{LutMatrix, LutTables, LOOKUPS, ROWS, TABLE, TRIPLES, WORDS};
use super::ternary_x86::{load_scales16, store_lane_sums512};
use super::x86::{prefetch_block, scale_ptr};
use super::Scales;
use crate::pool::SharedOut;

/// Nibble `n` of every word, in the low bits (higher bits are ignored by `vpermw`).
#[inline(always)]
unsafe fn nibble(w: __m512i, n: usize) -> __m512i {
    match n {
        0 => w,
        1 => _mm512_srli_epi16::<4>(w),
        2 => _mm512_srli_epi16::<8>(w),
        _ => _mm512_srli_epi16::<12>(w),
    }
}

// `lane` indexes the records, the tables and both accumulator halves.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn row<const F16S: bool>(
    m: &LutMatrix,
    g: usize,
    tables: &LutTables,
    a: &QuantizedActs,
    t: usize,
    out: &SharedOut,
) {
    let supers = m.cols / SUPER;
    let scales = scale_ptr(&m.scales);
    let mut acc = [[_mm512_setzero_ps(); LANES]; 2];
    for s in 0..supers {
        let at = (g * supers + s) * ROWS;
        let dw: [__m512; 2] = std::array::from_fn(|h| load_scales16::<F16S>(scales, at + 16 * h));
        let da = _mm512_set1_ps(a.scale(t, s * SUPER / 32));
        let d = [_mm512_mul_ps(dw[0], da), _mm512_mul_ps(dw[1], da)];
        let rec0 = (g * supers + s) * LANES;
        if a.n == 1 {
            prefetch_block(m.idx.as_ptr().add(rec0 * WORDS * ROWS).cast(), LANES * WORDS * ROWS * 2);
        }
        for lane in 0..LANES {
            let rec = rec0 + lane;
            let ip = m.idx.as_ptr().add(rec * WORDS * ROWS);
            let tp = tables.t.as_ptr().add(((t * supers + s) * LANES + lane) * LOOKUPS * TABLE);
            let sp = m.signs.as_ptr().add(rec * TRIPLES);
            let (mut all, mut neg) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for q in 0..WORDS {
                let w = _mm512_loadu_si512(ip.add(q * ROWS).cast());
                for n in 0..4 {
                    let i = 4 * q + n;
                    if i == LOOKUPS {
                        break;
                    }
                    let v = _mm512_permutexvar_epi16(nibble(w, n), _mm512_loadu_si512(tp.add(i * TABLE).cast()));
                    all = _mm512_add_epi16(all, v);
                    if i < TRIPLES {
                        neg = _mm512_mask_add_epi16(neg, sp.add(i).read(), neg, v);
                    }
                }
            }
            let sum = _mm512_sub_epi16(all, _mm512_add_epi16(neg, neg));
            let corr = _mm512_set1_epi32(tables.corr[(t * supers + s) * LANES + lane]);
            let halves = [_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64::<1>(sum)];
            for (h, half) in halves.into_iter().enumerate() {
                let isum = _mm512_add_epi32(_mm512_cvtepi16_epi32(half), corr);
                acc[h][lane] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d[h], acc[h][lane]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        let first = g * ROWS + 16 * h;
        let lanes = m.rows.saturating_sub(first).min(16);
        if lanes > 0 {
            store_lane_sums512(acc, out, t * m.rows + first, lanes);
        }
    }
}

/// Group `g` of `m` against every row of `a`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW, AVX2, FMA and F16C; `tables` must be
/// built from `a`, `a` match `m`'s columns and `out` hold `a.n × m.rows` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
pub(crate) unsafe fn group_avx512(m: &LutMatrix, g: usize, tables: &LutTables, a: &QuantizedActs, out: &SharedOut) {
    let f16s = matches!(m.scales, Scales::F16(_));
    for t in 0..a.n {
        if f16s {
            row::<true>(m, g, tables, a, t, out);
        } else {
            row::<false>(m, g, tables, a, t, out);
        }
    }
}
