//! Scalar reference kernels. These are the specification: every fast path is
//! tested against them. Block layouts and formulas follow ggml's
//! `ggml-quants.c` (`dequantize_row_*`), keeping ggml's block names.
// `inline(always)` on small helpers is deliberate: callers compiled with
// `#[target_feature(enable = "avx2")]` (see `x86.rs`) must inline them to
// get vectorized code.
#![allow(clippy::inline_always)]

use half::{bf16, f16};
use hearth_core::GgmlType;

/// Error for a tensor type that has no dequantization kernel yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported(pub GgmlType);

/// Whether weights of `ty` can be used: [`dequantize_row`] decodes them, or
/// for `I2_S` (its scale sits after the last row) the ternary packer does.
#[must_use]
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType as T;
    matches!(
        ty,
        T::F32
            | T::F16
            | T::BF16
            | T::Q4_0
            | T::Q4_1
            | T::Q5_0
            | T::Q5_1
            | T::Q8_0
            | T::Q2_K
            | T::Q3_K
            | T::Q4_K
            | T::Q5_K
            | T::Q6_K
            | T::Q8_K
            | T::IQ4_NL
            | T::IQ4_XS
            | T::MXFP4
            | T::TQ1_0
            | T::TQ2_0
            | T::I2_S
    )
}

/// Byte offsets of the f16 fields (scales, minimums) inside one block of
/// `ty` (ggml's block structs). Tests and benches put sane values there when
/// they fill blocks with random bytes (random bits can be inf or NaN).
#[must_use]
pub fn f16_field_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType as T;
    match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL | T::IQ4_XS => &[0],
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => &[0, 2],
        T::Q2_K => &[80, 82],
        T::Q3_K => &[108],
        T::Q6_K => &[208],
        T::TQ1_0 => &[52],
        T::TQ2_0 => &[64],
        _ => &[],
    }
}

/// The little-endian f16 at byte `i`, widened.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes one row: `src` holds exactly `dst.len()` elements of type `ty`.
///
/// # Panics
/// When `src` is not the size of `dst.len()` elements (caller bug; sizes are
/// validated when the file is loaded).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), Unsupported> {
    use GgmlType as T;
    let bs = ty.block_size();
    assert_eq!(Some(src.len()), ty.row_bytes(dst.len()), "row size mismatch for {ty}");
    let blocks = src.chunks_exact(ty.type_size()).zip(dst.chunks_exact_mut(bs));
    match ty {
        T::F32 => blocks.for_each(|(s, d)| d[0] = f32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        T::F16 => blocks.for_each(|(s, d)| d[0] = f16_at(s, 0)),
        T::BF16 => blocks.for_each(|(s, d)| d[0] = bf16::from_le_bytes([s[0], s[1]]).to_f32()),
        T::Q4_0 => blocks.for_each(|(s, d)| dequant_q4_0(s, d)),
        T::Q4_1 => blocks.for_each(|(s, d)| dequant_q4_1(s, d)),
        T::Q5_0 => blocks.for_each(|(s, d)| dequant_q5_0(s, d)),
        T::Q5_1 => blocks.for_each(|(s, d)| dequant_q5_1(s, d)),
        T::Q8_0 => blocks.for_each(|(s, d)| dequant_q8_0(s, d)),
        T::Q2_K => blocks.for_each(|(s, d)| dequant_q2_k(s, d)),
        T::Q3_K => blocks.for_each(|(s, d)| dequant_q3_k(s, d)),
        T::Q4_K => blocks.for_each(|(s, d)| dequant_q4_k(s, d)),
        T::Q5_K => blocks.for_each(|(s, d)| dequant_q5_k(s, d)),
        T::Q6_K => blocks.for_each(|(s, d)| dequant_q6_k(s, d)),
        T::Q8_K => blocks.for_each(|(s, d)| dequant_q8_k(s, d)),
        T::IQ4_NL => blocks.for_each(|(s, d)| dequant_iq4_nl(s, d)),
        T::IQ4_XS => blocks.for_each(|(s, d)| dequant_iq4_xs(s, d)),
        T::MXFP4 => blocks.for_each(|(s, d)| dequant_mxfp4(s, d)),
        T::TQ1_0 => blocks.for_each(|(s, d)| super::ternary::dequant(super::ternary::decode_tq1_0, s, d)),
        T::TQ2_0 => blocks.for_each(|(s, d)| super::ternary::dequant(super::ternary::decode_tq2_0, s, d)),
        other => return Err(Unsupported(other)),
    }
    Ok(())
}

/// The 16 values a nibble of `IQ4_NL` and `IQ4_XS` stands for (ggml's
/// `kvalues_iq4nl`: a non-uniform grid, denser near zero).
pub const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// `block_iq4_nl`: f16 d, 16 bytes of nibbles (low nibbles are elements
/// 0..16) indexing [`IQ4_VALUES`].
fn dequant_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * f32::from(IQ4_VALUES[usize::from(q & 0xF)]);
        y[j + 16] = d * f32::from(IQ4_VALUES[usize::from(q >> 4)]);
    }
}

/// The 6-bit scale `ls` of sub-block `ib` (0..8) of a `block_iq4_xs`.
#[inline(always)]
pub(crate) fn iq4_xs_scale(b: &[u8], ib: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    let high = ((scales_h >> (2 * ib)) & 3) as u8;
    i32::from(low | (high << 4))
}

/// `block_iq4_xs`: f16 d, u16 `scales_h`, 4 bytes `scales_l` (a 6-bit
/// scale `ls` per 32 values, used as `ls − 32`), then per 32 values 16
/// bytes of nibbles indexing [`IQ4_VALUES`] as in `IQ4_NL`.
fn dequant_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for ib in 0..8 {
        let dl = d * (iq4_xs_scale(b, ib) - 32) as f32;
        let qs = &b[8 + 16 * ib..24 + 16 * ib];
        for (j, &q) in qs.iter().enumerate() {
            y[32 * ib + j] = dl * f32::from(IQ4_VALUES[usize::from(q & 0xF)]);
            y[32 * ib + j + 16] = dl * f32::from(IQ4_VALUES[usize::from(q >> 4)]);
        }
    }
}

/// The 16 values an `MXFP4` nibble stands for: E2M1 floats, doubled to
/// integers (ggml's `kvalues_mxfp4`; the block scale is halved to match).
pub const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// An E8M0 exponent byte as ggml's `GGML_E8M0_TO_FP32_HALF`: `2^(e − 128)`
/// (half the block scale `2^(e − 127)`, since [`MXFP4_VALUES`] are doubled),
/// subnormal for `e < 2`. Exact in f32.
#[inline(always)]
#[must_use]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { u32::from(e - 1) << 23 };
    f32::from_bits(bits)
}

/// `block_mxfp4`: E8M0 exponent byte, 16 bytes of nibbles (low nibbles
/// are elements 0..16) indexing [`MXFP4_VALUES`].
fn dequant_mxfp4(b: &[u8], y: &mut [f32]) {
    let d = e8m0_to_f32_half(b[0]);
    for (j, &q) in b[1..17].iter().enumerate() {
        y[j] = f32::from(MXFP4_VALUES[usize::from(q & 0xF)]) * d;
        y[j + 16] = f32::from(MXFP4_VALUES[usize::from(q >> 4)]) * d;
    }
}

/// `block_q4_0`: f16 d, 16 bytes of nibbles; low nibbles are elements 0..16.
fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = (f32::from(qs[j] & 0xF) - 8.0) * d;
        y[j + 16] = (f32::from(qs[j] >> 4) - 8.0) * d;
    }
}

/// `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles.
fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0xF) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

/// `block_q5_0`: f16 d, u32 of fifth bits, 16 bytes of nibbles.
fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(qs[j] & 0xF) | h0) as f32 - 16.0) * d;
        y[j + 16] = ((u32::from(qs[j] >> 4) | h1) as f32 - 16.0) * d;
    }
}

/// `block_q5_1`: f16 d, f16 m, u32 of fifth bits, 16 bytes of nibbles.
fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(qs[j] & 0xF) | h0) as f32 * d + m;
        y[j + 16] = (u32::from(qs[j] >> 4) | h1) as f32 * d + m;
    }
}

/// `block_q8_0`: f16 d, 32 signed bytes.
fn dequant_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in y.iter_mut().zip(&b[2..34]) {
        *o = f32::from(q as i8) * d;
    }
}

/// `block_q8_k`: f32 d, 256 signed bytes, 16 i16 block sums (unused here).
fn dequant_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (o, &q) in y.iter_mut().zip(&b[4..260]) {
        *o = f32::from(q as i8) * d;
    }
}

/// `block_q2_K`: scales[16] (low nibble scale, high nibble min), qs[64], f16 d, f16 dmin.
fn dequant_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + 32 * half..16 + 32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * f32::from(sc & 0xF), dmin * f32::from(sc >> 4));
                for l in 0..16 {
                    y[out] = dl * f32::from((q[l + 16 * part] >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// Unpacks the 16 six-bit scales of `block_q3_K` (ggml's kmask1/kmask2 shuffle).
#[inline(always)]
pub(crate) fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for (j, out) in s.iter_mut().enumerate() {
        let low = if j < 8 { packed[j] & 0xF } else { packed[j - 8] >> 4 };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *out = ((low | (high << 4)) as i8) - 32;
    }
    s
}

/// `block_q3_K`: hmask[32], qs[64], scales[12], f16 d.
fn dequant_q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    let mut out = 0;
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &b[32 + 32 * half..32 + 32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * f32::from(scales[is]);
                is += 1;
                for l in 0..16 {
                    let idx = l + 16 * part;
                    let low = i32::from((q[idx] >> shift) & 3);
                    let high = if hmask[idx] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// ggml's `get_scale_min_k4`: the j-th six-bit (scale, min) pair of a K-quant block.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `block_q4_K`: f16 d, f16 dmin, scales[12], qs[128].
fn dequant_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for chunk in 0..4 {
        let q = &b[16 + 32 * chunk..16 + 32 * chunk + 32];
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
        let y = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0xF) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `block_q5_K`: f16 d, f16 dmin, scales[12], qh[32], qs[128].
fn dequant_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for chunk in 0..4 {
        let ql = &b[48 + 32 * chunk..48 + 32 * chunk + 32];
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let y = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16.0 } else { 0.0 };
            let h2 = if qh[l] & u2 != 0 { 16.0 } else { 0.0 };
            y[l] = d1 * (f32::from(ql[l] & 0xF) + h1) - m1;
            y[l + 32] = d2 * (f32::from(ql[l] >> 4) + h2) - m2;
        }
    }
}

/// The four 6-bit values (minus 32) of `block_q6_K` at `l` of a 128-half:
/// elements `l`, `l+32`, `l+64`, `l+96`.
#[inline(always)]
pub(crate) fn q6_k_values(ql: &[u8], qh: &[u8], l: usize) -> [i32; 4] {
    [
        i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32,
        i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32,
        i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32,
        i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32,
    ]
}

/// `block_q6_K`: ql[128], qh[64], scales[16] (i8), f16 d.
fn dequant_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            for (k, q) in q6_k_values(ql, qh, l).into_iter().enumerate() {
                y[l + 32 * k] = d * f32::from(sc[is + 2 * k] as i8) * q as f32;
            }
        }
    }
}

/// Plain dot product, accumulated left to right.
#[must_use]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Reference matmul: `out[t][r] = dot(W[r], x[t])` for `n` rows of `x`,
/// with `x` first rounded through the weight type's `vec_dot_type`.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), Unsupported> {
    let row_bytes = ty.row_bytes(cols).ok_or(Unsupported(ty))?;
    let mut x = x[..n * cols].to_vec();
    x.chunks_mut(cols).for_each(|row| round_trip(vec_dot_type(ty), row));
    let mut buf = vec![0f32; cols];
    for r in 0..rows {
        dequantize_row(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut buf)?;
        for t in 0..n {
            out[t * rows + r] = dot(&buf, &x[t * cols..(t + 1) * cols]);
        }
    }
    Ok(())
}

/// Quantizes `x` to `block_q8_0` (used by tests and model generation).
#[must_use]
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for block in x.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// The type activations are rounded through before they meet weights of
/// type `ty`, as in ggml: 8-bit blocks for quantized weights (`Q8_0`'s
/// 32-wide blocks for the legacy types, 256-wide `Q8_K` for K-quants and
/// ternary types), the weight's own type for F16/BF16.
#[must_use]
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType as T;
    match ty {
        T::F32 => T::F32,
        T::F16 => T::F16,
        T::BF16 => T::BF16,
        T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K | T::IQ4_XS | T::TQ1_0 | T::TQ2_0 | T::I2_S => T::Q8_K,
        _ => T::Q8_0,
    }
}

/// Rounds `x` in place to what it becomes after quantizing to `ty` (ggml's
/// `quantize_row_*_ref`) and back. Applying this to activations reproduces
/// the numerics of ggml's quantized dot products.
pub fn round_trip(ty: GgmlType, x: &mut [f32]) {
    use GgmlType as T;
    match ty {
        T::Q8_0 => x.chunks_mut(32).for_each(round_trip_q8_0),
        T::Q8_K => x.chunks_mut(256).for_each(round_trip_q8_k),
        T::F16 => x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        T::BF16 => x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        _ => {}
    }
}

/// ggml's x86 `quantize_row_q8_0`: scale
/// amax/127 stored as f16, values `x * 127/amax` rounded to nearest even.
fn round_trip_q8_0(block: &mut [f32]) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    let dh = f16::from_f32(amax / 127.0).to_f32();
    block.iter_mut().for_each(|v| *v = (*v * id).round_ties_even() * dh);
}

/// ggml's `quantize_row_q8_K_ref`: `iscale = −127/max` with `max` the
/// value of largest magnitude (sign kept), `q = min(127, round(iscale·x))`,
/// `d = 1/iscale` in f32.
fn round_trip_q8_k(block: &mut [f32]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in block.iter() {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        block.fill(0.0);
        return;
    }
    let iscale = -127.0 / max;
    let d = 1.0 / iscale;
    block.iter_mut().for_each(|v| *v = ((iscale * *v).round_ties_even()).min(127.0) * d);
}

/// Constants of ggml's vector `expf` (`ggml_v_expf`, adapted from Arm's
/// optimized routines): round-to-integer shifter, log2(e), ln 2 split in a
/// high and a low part, and the polynomial for `e^b − 1` on |b| ≤ ln2/2.
pub(crate) mod expf_consts {
    pub const SHIFTER: f32 = 12_582_912.0; // 0x1.8p23
    pub const LOG2E: f32 = f32::from_bits(0x3FB8_AA3B); // 0x1.715476p+0
    pub const LN2_HI: f32 = f32::from_bits(0x3F31_7200); // 0x1.62e4p-1
    pub const LN2_LO: f32 = f32::from_bits(0x35BF_BE8E); // 0x1.7f7d1cp-20
    pub const P1: f32 = f32::from_bits(0x3F7F_FFF6); // 0x1.ffffecp-1
    pub const P2: f32 = f32::from_bits(0x3EFF_FEDB); // 0x1.fffdb6p-2
    pub const P3: f32 = f32::from_bits(0x3E2A_AF33); // 0x1.555e66p-3
    pub const P4: f32 = f32::from_bits(0x3D2B_9F17); // 0x1.573e2ep-5
    pub const P5: f32 = f32::from_bits(0x3C07_2010); // 0x1.0e4020p-7
}

/// `e^x` exactly as llama.cpp's CPU backend computes it in vectors on
/// AVX-512 machines (`ggml_v_expf` with `vscalefps`): `x = n·ln2 + b`,
/// `e^x = 2^n · p(b)`. Its SiLU (hence every SwiGLU FFN) goes through this,
/// and matching it bit for bit keeps logits equal to llama.cpp's.
#[inline(always)]
#[must_use]
pub fn expf_ggml(x: f32) -> f32 {
    use expf_consts::{LN2_HI, LN2_LO, LOG2E, P1, P2, P3, P4, P5, SHIFTER};
    let z = x.mul_add(LOG2E, SHIFTER);
    let n = z - SHIFTER;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let u = b * b;
    let j = P5.mul_add(b, P4).mul_add(u, P3.mul_add(b, P2)).mul_add(u, P1.mul_add(b, 1.0));
    scale_by_pow2(j, n)
}

/// `j · 2^n` rounded once, as `vscalefps` (`n` integral): exact powers of two
/// in the normal range; beyond it through f64 (still one rounding), and ggml's
/// saturation past |n| = 192.
#[inline(always)]
#[must_use]
pub fn scale_by_pow2(j: f32, n: f32) -> f32 {
    if n.abs() <= 126.0 {
        j * f32::from_bits(((n as i32 + 127) as u32) << 23)
    } else if n.abs() > 192.0 {
        if n <= 0.0 {
            0.0
        } else {
            f32::INFINITY
        }
    } else if n.is_nan() {
        n
    } else {
        (f64::from(j) * 2f64.powi(n as i32)) as f32
    }
}

/// `gate = silu(gate) · up` element-wise, with ggml's `expf`:
/// `silu(x) = x / (1 + e^(0 − x))`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + expf_ggml(0.0 - *g)) * u;
    }
}

/// Dot product of two rows of f16 values (held as f32) in the order of
/// ggml's `ggml_vec_dot_f16` on AVX-512 (its flash attention's `q·k`):
/// 64 lane sums over whole chunks of 64, folded as four 16-lane vectors
/// `(v0+v2) + (v1+v3)`, then `_mm512_reduce_add_ps`; the tail is added in
/// f64 (for f16 values the products are exact, so FMA or not is the same).
#[must_use]
#[inline(always)]
pub fn dot_f16_ggml(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let whole = n & !63;
    let mut sum = f64::from(lanes64_ggml(&x[..whole], &y[..whole]));
    for (p, q) in x[whole..n].iter().zip(&y[whole..n]) {
        sum += f64::from(p * q);
    }
    sum as f32
}

/// [`dot_f16_ggml`] with the weights `w` still in f16 (widened 64 at a time
/// as they are used: exact, so the same bits), for a decode step over F16
/// weights that reads half the bytes.
#[must_use]
#[inline(always)]
pub fn dot_f16w_ggml(w: &[u16], x: &[f32]) -> f32 {
    dot_f16w_with(w, x, f16_to_f32)
}

/// [`dot_f16w_ggml`] with the widening given (the x86 twin passes F16C's).
#[inline(always)]
pub fn dot_f16w_with(w: &[u16], x: &[f32], widen: impl Fn(&[u16], &mut [f32])) -> f32 {
    let n = w.len().min(x.len());
    let whole = n & !63;
    let mut acc = [0f32; 64];
    let mut wf = [0f32; 64];
    for (wc, xc) in w[..whole].chunks_exact(64).zip(x[..whole].chunks_exact(64)) {
        widen(wc, &mut wf);
        for ((a, &p), &q) in acc.iter_mut().zip(&wf).zip(xc) {
            *a = p.mul_add(q, *a);
        }
    }
    let mut sum = f64::from(fold64(&acc));
    let mut tail = [0f32; 64];
    widen(&w[whole..n], &mut tail[..n - whole]);
    for (p, q) in tail[..n - whole].iter().zip(&x[whole..n]) {
        sum += f64::from(p * q);
    }
    sum as f32
}

/// `dst[i] = f16 src[i]` widened (exact).
pub fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_bits(s).to_f32();
    }
}

/// Dot product of two f32 rows in the order of ggml's `ggml_vec_dot_f32`
/// on AVX-512 (float weights multiplied one activation row at a time: a
/// decode step, or shapes tinyBLAS refuses, such as a rank-8 LoRA's `B`):
/// the same 64 lanes and folding as [`dot_f16_ggml`], but summed into an
/// f32 and the tail added one rounded product at a time (ggml keeps `sumf`
/// a `float` here; no FMA: measured against llama.cpp's outputs with a
/// rank-8 LoRA, whose `B` products are all tail).
#[must_use]
#[inline(always)]
pub fn dot_f32_ggml(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let whole = n & !63;
    // No whole chunk: the lanes sum to +0.0, so skipping them is the same bits
    // (and a short row — a rank-8 `B` — costs its 8 products, not 64 lanes).
    let mut sum = if whole == 0 { 0.0 } else { lanes64_ggml(&x[..whole], &y[..whole]) };
    for (&p, &q) in x[whole..n].iter().zip(&y[whole..n]) {
        sum += p * q;
    }
    sum
}

/// ggml's AVX-512 lane sums over whole chunks of 64, folded and reduced.
#[inline(always)]
fn lanes64_ggml(x: &[f32], y: &[f32]) -> f32 {
    let whole = x.len().min(y.len()) & !63;
    let mut acc = [0f32; 64];
    for (xc, yc) in x[..whole].chunks_exact(64).zip(y[..whole].chunks_exact(64)) {
        for ((a, &p), &q) in acc.iter_mut().zip(xc).zip(yc) {
            *a = p.mul_add(q, *a);
        }
    }
    fold64(&acc)
}

/// ggml's AVX-512 fold of 64 lane sums: four 16-lane vectors
/// `(v0+v2) + (v1+v3)`, then `_mm512_reduce_add_ps`.
#[inline(always)]
fn fold64(acc: &[f32; 64]) -> f32 {
    let v: [f32; 16] = std::array::from_fn(|l| (acc[l] + acc[32 + l]) + (acc[16 + l] + acc[48 + l]));
    let h: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
    let q: [f32; 4] = std::array::from_fn(|i| h[i] + h[i + 4]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// `acc = round_f16(fma(v, s, acc))` element-wise (see `x86::mad_round_f16`).
pub fn mad_round_f16(acc: &mut [f32], v: &[f32], s: f32) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = f16::from_f32(x.mul_add(s, *a)).to_f32();
    }
}

/// `acc = round_f16(acc · s)` element-wise.
pub fn scale_round_f16(acc: &mut [f32], s: f32) {
    for a in acc.iter_mut() {
        *a = f16::from_f32(*a * s).to_f32();
    }
}

/// One block of 32 activations to 8 bits (`packed::acts`): returns the
/// scale `amax/127` (unrounded); `q = round_ties_even(x · 127/amax)`.
pub fn quantize_block_q8(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x[..32].iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    for (q, &v) in q[..32].iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    amax / 127.0
}

/// `c[m×n] += a[m×k] · b[k×n]` (row-major), each element one FMA chain over
/// `k` in order, starting from its value in `c`: the float order of ggml's
/// `simd_gemm` (its tiled flash attention), whatever the vector width.
pub fn gemm_acc(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = c[i * n + j];
            for kk in 0..k {
                acc = a[i * k + kk].mul_add(b[kk * n + j], acc);
            }
            c[i * n + j] = acc;
        }
    }
}

/// Sum of 16 values in the order GCC's `_mm512_reduce_add_ps` adds them
/// (halves, then quarters, then pairs).
#[inline(always)]
#[must_use]
pub fn reduce_add_16(v: &[f32]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| v[i + 8] + v[i]);
    let q: [f32; 4] = std::array::from_fn(|i| h[i + 4] + h[i]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Dot product in tinyBLAS's AVX-512 order (llama.cpp's float-weight
/// matmuls): 16 lanes, lane `l` an FMA chain over elements `≡ l (mod 16)`,
/// then [`reduce_add_16`]. `x.len()` is a multiple of 16.
#[inline(always)]
#[must_use]
pub fn dot_lanes16(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (xc, yc) in x.chunks_exact(16).zip(y.chunks_exact(16)) {
        for ((a, &p), &q) in acc.iter_mut().zip(xc).zip(yc) {
            *a = p.mul_add(q, *a);
        }
    }
    reduce_add_16(&acc)
}

/// ggml's `ggml_vec_soft_max_f32` on AVX-512: `x = expf(x − max)` with
/// ggml's vector `expf` ([`expf_ggml`]) 16 at a time, each 16 summed in
/// [`reduce_add_16`] order, libm's `expf` for a tail under 16; the sums
/// gathered in f64, which is returned. `−∞` gives 0.
#[inline(always)]
pub fn soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    let whole = x.len() - x.len() % 16;
    let mut sum = 0f64;
    for chunk in x[..whole].chunks_exact_mut(16) {
        chunk.iter_mut().for_each(|v| *v = expf_ggml(*v - max));
        sum += f64::from(reduce_add_16(chunk));
    }
    for v in &mut x[whole..] {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    sum
}
