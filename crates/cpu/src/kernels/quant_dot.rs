//! Quantized dot products, ggml style: activations are quantized to the
//! weight type's `vec_dot_type` (Q8_0, Q8_1 or Q8_K blocks) and each block
//! pair is multiplied in integers, then scaled. Formulas follow ggml-cpu's
//! `ggml_vec_dot_<w>_<a>` kernels, so results agree with llama.cpp to float
//! rounding. This file is the scalar reference; the compiler vectorizes the
//! integer inner loops when it is built for AVX2 (see `dispatch.rs`).
// `inline(always)` on small helpers is deliberate: callers compiled with
// `#[target_feature(enable = "avx2")]` (see `x86.rs`) must inline them to
// get vectorized code.
#![allow(clippy::inline_always)]

use half::f16;
use hearth_core::GgmlType;

use super::reference::{f16_at, q3_k_scales, q6_k_values, scale_min_k4};

/// One row of activations quantized to 8-bit blocks.
#[derive(Debug, Clone, Default)]
pub struct Q8Row {
    /// Block scale (f16-rounded for Q8_0/Q8_1, f32 for Q8_K).
    pub d: Vec<f32>,
    /// Q8_1 only: `d * Σq` rounded to f16, per block.
    pub s: Vec<f32>,
    /// Quantized values.
    pub qs: Vec<i8>,
    /// Q8_K only: sums of each 16 values.
    pub bsums: Vec<i32>,
}

/// Quantizes `x` (one row) to `ty` ∈ {Q8_0, Q8_1, Q8_K}, as ggml's x86
/// `quantize_row_q8_0/q8_1` and `quantize_row_q8_K_ref` do.
#[must_use]
pub fn quantize_row(ty: GgmlType, x: &[f32]) -> Q8Row {
    let mut r = Q8Row { qs: vec![0; x.len()], ..Q8Row::default() };
    match ty {
        GgmlType::Q8_K => {
            for (xb, qb) in x.chunks(256).zip(r.qs.chunks_mut(256)) {
                r.d.push(quantize_block_q8_k(xb, qb));
                r.bsums.extend(qb.chunks(16).map(|c| c.iter().map(|&q| i32::from(q)).sum::<i32>()));
            }
        }
        _ => {
            for (xb, qb) in x.chunks(32).zip(r.qs.chunks_mut(32)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
                let mut sum = 0i32;
                for (q, &v) in qb.iter_mut().zip(xb) {
                    *q = (v * id).round_ties_even() as i8;
                    sum += i32::from(*q);
                }
                r.d.push(f16::from_f32(d).to_f32());
                if ty == GgmlType::Q8_1 {
                    r.s.push(f16::from_f32(d * sum as f32).to_f32());
                }
            }
        }
    }
    r
}

fn quantize_block_q8_k(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * iscale).round_ties_even() as i32).min(127) as i8;
    }
    1.0 / iscale
}

/// Whether [`vec_dot`] has a kernel for weights of type `ty`.
#[must_use]
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType as T;
    matches!(ty, T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K)
}

/// `W_row · x` for a quantized weight row and its quantized activations.
#[must_use]
#[inline(always)]
pub fn vec_dot(ty: GgmlType, w: &[u8], a: &Q8Row) -> f32 {
    use GgmlType as T;
    let blocks = w.chunks_exact(ty.type_size()).enumerate();
    match ty {
        T::Q4_0 => symmetric_blocks(ty, w, a, dot_q4_0),
        T::Q8_0 => symmetric_blocks(ty, w, a, dot_q8_0),
        T::Q5_0 => symmetric_blocks(ty, w, a, dot_q5_0),
        T::Q4_1 => blocks_with_mins(ty, w, a, dot_q4_1),
        T::Q5_1 => blocks_with_mins(ty, w, a, dot_q5_1),
        T::Q2_K => {
            blocks.map(|(i, b)| dot_q2_k(b, &a.qs[256 * i..256 * i + 256], &a.bsums[16 * i..16 * i + 16], a.d[i])).sum()
        }
        T::Q3_K => blocks.map(|(i, b)| dot_q3_k(b, &a.qs[256 * i..256 * i + 256], a.d[i])).sum(),
        T::Q4_K => {
            blocks.map(|(i, b)| dot_q4_k(b, &a.qs[256 * i..256 * i + 256], &a.bsums[16 * i..16 * i + 16], a.d[i])).sum()
        }
        T::Q5_K => {
            blocks.map(|(i, b)| dot_q5_k(b, &a.qs[256 * i..256 * i + 256], &a.bsums[16 * i..16 * i + 16], a.d[i])).sum()
        }
        T::Q6_K => blocks.map(|(i, b)| dot_q6_k(b, &a.qs[256 * i..256 * i + 256], a.d[i])).sum(),
        _ => 0.0,
    }
}

/// Σ over 32-element blocks of `isum · d_w · d_a` (types coded around zero:
/// Q4_0, Q5_0, Q8_0). The float order is the one the SIMD kernels keep.
#[inline(always)]
fn symmetric_blocks(ty: GgmlType, w: &[u8], a: &Q8Row, isum: fn(&[u8], &[i8]) -> i32) -> f32 {
    let mut sum = 0f32;
    for (i, b) in w.chunks_exact(ty.type_size()).enumerate() {
        sum += isum(b, &a.qs[32 * i..32 * i + 32]) as f32 * f16_at(b, 0) * a.d[i];
    }
    sum
}

/// Like [`symmetric_blocks`] for types with a block minimum (Q4_1, Q5_1):
/// `isum · (d_w · d_a)` plus, summed apart, `m_w · s_a` (ggml's q8_1 trick).
#[inline(always)]
fn blocks_with_mins(ty: GgmlType, w: &[u8], a: &Q8Row, isum: fn(&[u8], &[i8]) -> i32) -> f32 {
    let (mut sum, mut mins) = (0f32, 0f32);
    for (i, b) in w.chunks_exact(ty.type_size()).enumerate() {
        sum += isum(b, &a.qs[32 * i..32 * i + 32]) as f32 * (f16_at(b, 0) * a.d[i]);
        mins += f16_at(b, 2) * a.s[i];
    }
    sum + mins
}

#[inline(always)]
fn dot_q4_0(b: &[u8], y: &[i8]) -> i32 {
    let qs = &b[2..18];
    (0..16)
        .map(|j| (i32::from(qs[j] & 0xF) - 8) * i32::from(y[j]) + (i32::from(qs[j] >> 4) - 8) * i32::from(y[j + 16]))
        .sum()
}

#[inline(always)]
fn dot_q4_1(b: &[u8], y: &[i8]) -> i32 {
    let qs = &b[4..20];
    (0..16).map(|j| i32::from(qs[j] & 0xF) * i32::from(y[j]) + i32::from(qs[j] >> 4) * i32::from(y[j + 16])).sum()
}

#[inline(always)]
fn dot_q8_0(b: &[u8], y: &[i8]) -> i32 {
    b[2..34].iter().zip(y).map(|(&q, &v)| i32::from(q as i8) * i32::from(v)).sum()
}

#[inline(always)]
fn q5_values(qh: u32, qs: &[u8], j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    ((u32::from(qs[j] & 0xF) | h0) as i32, (u32::from(qs[j] >> 4) | h1) as i32)
}

#[inline(always)]
fn dot_q5_0(b: &[u8], y: &[i8]) -> i32 {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    (0..16)
        .map(|j| {
            let (v0, v1) = q5_values(qh, qs, j);
            (v0 - 16) * i32::from(y[j]) + (v1 - 16) * i32::from(y[j + 16])
        })
        .sum()
}

#[inline(always)]
fn dot_q5_1(b: &[u8], y: &[i8]) -> i32 {
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    (0..16)
        .map(|j| {
            let (v0, v1) = q5_values(qh, qs, j);
            v0 * i32::from(y[j]) + v1 * i32::from(y[j + 16])
        })
        .sum()
}

/// Σ over a run of values `q(l)` times activations.
#[inline(always)]
fn idot(n: usize, q: impl Fn(usize) -> i32, y: &[i8]) -> i32 {
    (0..n).map(|l| q(l) * i32::from(y[l])).sum()
}

#[inline(always)]
fn dot_q2_k(b: &[u8], y: &[i8], bsums: &[i32], dy: f32) -> f32 {
    let scales = &b[0..16];
    let (d, dmin) = (f16_at(b, 80) * dy, f16_at(b, 82) * dy);
    let mins: i32 = (0..16).map(|j| i32::from(scales[j] >> 4) * bsums[j]).sum();
    let mut sumi = 0i32;
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + 32 * half..48 + 32 * half];
        for (si, shift) in [0u32, 2, 4, 6].into_iter().enumerate() {
            for part in 0..2 {
                let off = 128 * half + 32 * si + 16 * part;
                let s = i32::from(scales[is] & 0xF);
                sumi += s * idot(16, |l| i32::from((q[l + 16 * part] >> shift) & 3), &y[off..off + 16]);
                is += 1;
            }
        }
    }
    d * sumi as f32 - dmin * mins as f32
}

#[inline(always)]
fn dot_q3_k(b: &[u8], y: &[i8], dy: f32) -> f32 {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108) * dy;
    let mut sumi = 0i32;
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &b[32 + 32 * half..64 + 32 * half];
        for (si, shift) in [0u32, 2, 4, 6].into_iter().enumerate() {
            for part in 0..2 {
                let off = 128 * half + 32 * si + 16 * part;
                let v = |l: usize| {
                    let idx = l + 16 * part;
                    i32::from((q[idx] >> shift) & 3) - if hmask[idx] & m != 0 { 0 } else { 4 }
                };
                sumi += i32::from(scales[is]) * idot(16, v, &y[off..off + 16]);
                is += 1;
            }
            m <<= 1;
        }
    }
    d * sumi as f32
}

#[inline(always)]
fn widen((s, m): (u8, u8)) -> (i32, i32) {
    (i32::from(s), i32::from(m))
}

#[inline(always)]
fn dot_q4_k(b: &[u8], y: &[i8], bsums: &[i32], dy: f32) -> f32 {
    let (d, dmin) = (f16_at(b, 0) * dy, f16_at(b, 2) * dy);
    let scales = &b[4..16];
    let (mut sumi, mut mins) = (0i32, 0i32);
    for chunk in 0..4 {
        let q = &b[16 + 32 * chunk..48 + 32 * chunk];
        let (s1, m1) = widen(scale_min_k4(2 * chunk, scales));
        let (s2, m2) = widen(scale_min_k4(2 * chunk + 1, scales));
        let y = &y[64 * chunk..64 * chunk + 64];
        sumi += s1 * idot(32, |l| i32::from(q[l] & 0xF), &y[..32]);
        sumi += s2 * idot(32, |l| i32::from(q[l] >> 4), &y[32..]);
        mins += m1 * (bsums[4 * chunk] + bsums[4 * chunk + 1]) + m2 * (bsums[4 * chunk + 2] + bsums[4 * chunk + 3]);
    }
    d * sumi as f32 - dmin * mins as f32
}

#[inline(always)]
fn dot_q5_k(b: &[u8], y: &[i8], bsums: &[i32], dy: f32) -> f32 {
    let (d, dmin) = (f16_at(b, 0) * dy, f16_at(b, 2) * dy);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let (mut sumi, mut mins) = (0i32, 0i32);
    for chunk in 0..4 {
        let ql = &b[48 + 32 * chunk..80 + 32 * chunk];
        let (s1, m1) = widen(scale_min_k4(2 * chunk, scales));
        let (s2, m2) = widen(scale_min_k4(2 * chunk + 1, scales));
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let y = &y[64 * chunk..64 * chunk + 64];
        sumi += s1 * idot(32, |l| i32::from(ql[l] & 0xF) + if qh[l] & u1 != 0 { 16 } else { 0 }, &y[..32]);
        sumi += s2 * idot(32, |l| i32::from(ql[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 }, &y[32..]);
        mins += m1 * (bsums[4 * chunk] + bsums[4 * chunk + 1]) + m2 * (bsums[4 * chunk + 2] + bsums[4 * chunk + 3]);
    }
    d * sumi as f32 - dmin * mins as f32
}

#[inline(always)]
fn dot_q6_k(b: &[u8], y: &[i8], dy: f32) -> f32 {
    let d = f16_at(b, 208) * dy;
    let mut sumi = 0i32;
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..160 + 32 * half];
        let sc = &b[192 + 8 * half..200 + 8 * half];
        let y = &y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            for (k, q) in q6_k_values(ql, qh, l).into_iter().enumerate() {
                sumi += i32::from(sc[is + 2 * k] as i8) * q * i32::from(y[l + 32 * k]);
            }
        }
    }
    d * sumi as f32
}
