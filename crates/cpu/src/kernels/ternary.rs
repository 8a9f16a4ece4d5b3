//! The ternary block types of ggml, `TQ1_0` (1.69 bits per weight) and
//! `TQ2_0` (2.06 bits), as codes in {0, 1, 2} meaning weights {−1, 0, +1}
//! times the block's f16 scale. One decoder per type serves dequantization
//! and repacking; the encoders write files for the generated test models.
//!
//! Layouts (256 weights per block):
//! - `TQ2_0`: 64 bytes of 2-bit codes, then f16 `d`. Byte `32·h + m` holds
//!   weights `128·h + 32·l + m` in bits `2l..2l+2` (`l` = 0..4).
//! - `TQ1_0`: 48 bytes of five base-3 digits, 4 bytes of four digits, then
//!   f16 `d`. A byte stores its digits as a fixed-point fraction,
//!   `byte = ⌈v·256/243⌉` for the base-3 number `v`; digit `n` is recovered as
//!   `((byte·3ⁿ mod 256)·3) >> 8`. Bytes 0..32 hold weights `32n + m`, bytes
//!   32..48 weights `160 + 16n + m`, the last 4 bytes weights `240 + 4n + j`.
//! - `I2_S` (bitnet.cpp, x86 layout): blocks of 128 weights in 32 bytes, byte
//!   `m` holding weights `32k + m` in bits `6 − 2k` (`k` = 0..4); no scales in
//!   the rows: one f32 for the whole tensor follows the last row, padded to
//!   32 bytes.

use super::reference::f16_at;

/// Weights per ternary block.
pub const QK: usize = 256;
const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// Digit `n` (0 = most significant) of a fixed-point base-3 byte.
fn digit(byte: u8, n: usize) -> u8 {
    let q = byte.wrapping_mul(POW3[n]);
    ((u16::from(q) * 3) >> 8) as u8
}

/// Codes (0..=2) of one `TQ2_0` block and its scale.
#[must_use]
pub fn decode_tq2_0(b: &[u8]) -> ([u8; QK], f32) {
    let mut codes = [0; QK];
    // In storage order (no index arithmetic per weight): this loop is most
    // of a ternary model's load time.
    for (h, bytes) in b[..64].chunks_exact(32).enumerate() {
        for l in 0..4 {
            for (c, &byte) in codes[128 * h + 32 * l..][..32].iter_mut().zip(bytes) {
                *c = (byte >> (2 * l)) & 3;
            }
        }
    }
    (codes, f16_at(b, 64))
}

/// Codes (0..=2) of one `TQ1_0` block and its scale.
#[must_use]
pub fn decode_tq1_0(b: &[u8]) -> ([u8; QK], f32) {
    let mut codes = [0; QK];
    for n in 0..5 {
        for m in 0..32 {
            codes[32 * n + m] = digit(b[m], n);
        }
        for m in 0..16 {
            codes[160 + 16 * n + m] = digit(b[32 + m], n);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            codes[240 + 4 * n + j] = digit(b[48 + j], n);
        }
    }
    (codes, f16_at(b, 52))
}

/// Weights per `I2_S` block.
pub const QK_I2_S: usize = 128;

/// Codes (0..=3) of one `I2_S` row (whole blocks).
#[must_use]
pub fn decode_i2_s_row(src: &[u8]) -> Vec<u8> {
    let mut codes = vec![0; src.len() * 4];
    decode_i2_s_into(src, &mut codes);
    codes
}

/// Codes of whole `I2_S` blocks into `codes` (4 per source byte).
pub fn decode_i2_s_into(src: &[u8], codes: &mut [u8]) {
    for (block, out) in src.chunks_exact(QK_I2_S / 4).zip(codes.chunks_exact_mut(QK_I2_S)) {
        for (e, c) in out.iter_mut().enumerate() {
            *c = (block[e % 32] >> (6 - 2 * (e / 32))) & 3;
        }
    }
}

/// The per-tensor scale of an `I2_S` tensor of `n` weights (`data` includes the trailer).
///
/// # Panics
/// When `data` is shorter than `n / 4 + 4` bytes (sizes are validated at load).
#[must_use]
pub fn i2_s_scale(data: &[u8], n: usize) -> f32 {
    let at = n / 4;
    f32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Encodes a whole tensor's codes (0..=2, a multiple of 128) and its scale as `I2_S`.
#[must_use]
pub fn encode_i2_s(codes: &[u8], scale: f32) -> Vec<u8> {
    let mut out = vec![0u8; codes.len() / 4 + 32];
    for (block, chunk) in codes.chunks_exact(QK_I2_S).enumerate() {
        for (e, &c) in chunk.iter().enumerate() {
            out[block * 32 + e % 32] |= (c & 3) << (6 - 2 * (e / 32));
        }
    }
    let at = codes.len() / 4;
    out[at..at + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// Dequantizes a whole `I2_S` tensor of `n` weights.
#[must_use]
pub fn dequantize_i2_s(data: &[u8], n: usize) -> Vec<f32> {
    let d = i2_s_scale(data, n);
    decode_i2_s_row(&data[..n / 4]).iter().map(|&c| (f32::from(c) - 1.0) * d).collect()
}

/// Encodes 256 codes (0..=2) and a scale as a `TQ2_0` block.
#[must_use]
pub fn encode_tq2_0(codes: &[u8], d: f32) -> Vec<u8> {
    let mut b = vec![0u8; 66];
    for (e, &c) in codes.iter().enumerate().take(QK) {
        let (h, l, m) = (e / 128, (e % 128) / 32, e % 32);
        b[32 * h + m] |= (c & 3) << (2 * l);
    }
    b[64..66].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    b
}

/// The fixed-point byte of base-3 `digits` (most significant first), padded
/// to five digits.
fn pack_digits(digits: impl Iterator<Item = u8>) -> u8 {
    let mut digits = digits.chain(std::iter::repeat(0));
    let v = (0..5).fold(0u32, |v, _| v * 3 + u32::from(digits.next().unwrap_or(0)));
    ((v * 256).div_ceil(243)) as u8
}

/// Encodes 256 codes (0..=2) and a scale as a `TQ1_0` block.
#[must_use]
pub fn encode_tq1_0(codes: &[u8], d: f32) -> Vec<u8> {
    let mut b = vec![0u8; 54];
    for m in 0..32 {
        b[m] = pack_digits((0..5).map(|n| codes[32 * n + m]));
    }
    for m in 0..16 {
        b[32 + m] = pack_digits((0..5).map(|n| codes[160 + 16 * n + m]));
    }
    for j in 0..4 {
        b[48 + j] = pack_digits((0..4).map(|n| codes[240 + 4 * n + j]));
    }
    b[52..54].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    b
}

/// Dequantizes one ternary block (`decode` is one of the decoders above).
pub(crate) fn dequant(decode: fn(&[u8]) -> ([u8; QK], f32), b: &[u8], y: &mut [f32]) {
    let (codes, d) = decode(b);
    for (y, &c) in y.iter_mut().zip(&codes) {
        *y = (f32::from(c) - 1.0) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(seed: u32) -> Vec<u8> {
        (0..QK as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) >> 7) as u8 % 3).collect()
    }

    #[test]
    fn encoders_round_trip_through_the_decoders() {
        for seed in [0, 1, 77, 12345] {
            let c = codes(seed);
            let (got, d) = decode_tq2_0(&encode_tq2_0(&c, 0.5));
            assert_eq!((&got[..], d.to_bits()), (&c[..], 0.5f32.to_bits()));
            let (got, d) = decode_tq1_0(&encode_tq1_0(&c, -0.25));
            assert_eq!((&got[..], d.to_bits()), (&c[..], (-0.25f32).to_bits()));
            let i2 = encode_i2_s(&c, 0.75);
            assert_eq!((decode_i2_s_row(&i2[..QK / 4]), i2_s_scale(&i2, QK)), (c.clone(), 0.75));
        }
    }

    #[test]
    fn i2_s_layout_is_bitnet_cpp_s() {
        // Weight 32k + m sits in byte m at bits 6 − 2k: weight 0 is the top pair of byte 0.
        let mut c = vec![1u8; 128];
        c[0] = 2;
        c[33] = 0;
        c[127] = 2;
        let b = encode_i2_s(&c, 1.0);
        assert_eq!((b[0] >> 6, (b[1] >> 4) & 3, b[31] & 3), (2, 0, 2));
        assert_eq!(dequantize_i2_s(&b, 128)[..2], [1.0, 0.0]);
    }

    #[test]
    fn every_digit_pattern_survives_the_fixed_point_byte() {
        for v in 0..243u32 {
            let digits: Vec<u8> = (0..5).rev().map(|k| (v / 3u32.pow(k) % 3) as u8).collect();
            let byte = pack_digits(digits.iter().copied());
            assert_eq!((0..5).map(|n| digit(byte, n)).collect::<Vec<_>>(), digits, "v = {v}");
        }
    }
}
