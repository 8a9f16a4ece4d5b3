//! Reading and writing rows of the paged KV pools in their element type.
//!
//! Quantized caches use ggml's reference encoders (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`), so a cache written here reads back as ggml's
//! would.

use half::f16;
use half::slice::HalfFloatSliceExt;
use hearth_core::{GgmlType, KvData, KvDataMut};

use crate::kernels::reference::dequantize_row;

/// Writes `x` (`rows.len() × dim`) into pool rows `rows`.
pub fn write_rows(pool: &mut KvDataMut<'_>, dim: usize, rows: &[usize], x: &[f32]) {
    for (&row, src) in rows.iter().zip(x.chunks_exact(dim)) {
        match pool {
            KvDataMut::F16(data) => data[row * dim..(row + 1) * dim].convert_from_f32_slice(src),
            KvDataMut::Quantized(ty, data) => {
                let rb = ty.row_bytes(dim).expect("pool rows are whole blocks"); // ok: the store checked `dim` at creation
                encode_row(*ty, src, &mut data[row * rb..(row + 1) * rb]);
            }
        }
    }
}

/// Widens elements `offset..offset + out.len()` of pool row `row` into
/// `out`. For quantized pools `offset` and `out.len()` are whole blocks.
pub fn read_row(pool: &KvData<'_>, dim: usize, row: usize, offset: usize, out: &mut [f32]) {
    match pool {
        KvData::F16(data) => {
            let start = row * dim + offset;
            data[start..start + out.len()].convert_to_f32_slice(out);
        }
        KvData::Quantized(ty, data) => {
            let (bs, ts) = (ty.block_size(), ty.type_size());
            let rb = dim / bs * ts;
            let start = row * rb + offset / bs * ts;
            let src = &data[start..start + out.len() / bs * ts];
            dequantize_row(*ty, src, out).expect("KV types have dequantizers"); // ok: KvType only names Q8_0/Q4_0
        }
    }
}

/// One row to `ty`'s blocks.
fn encode_row(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    let ts = ty.type_size();
    for (block, dst) in x.chunks_exact(32).zip(out.chunks_exact_mut(ts)) {
        match ty {
            GgmlType::Q8_0 => encode_q8_0(block, dst),
            GgmlType::Q4_0 => encode_q4_0(block, dst),
            _ => unreachable!("KV pools are f16, q8_0 or q4_0"),
        }
    }
}

/// ggml `quantize_row_q8_0_ref`: scale `amax/127`, values rounded half away from zero.
fn encode_q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, v) in out[2..].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

/// ggml `quantize_row_q4_0_ref`: the value of largest magnitude maps to -8,
/// codes `x/d + 8.5` truncated and clamped to 15; low nibbles hold elements
/// 0..16, high nibbles 16..32.
fn encode_q4_0(x: &[f32], out: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..16 {
        let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = ((x[16 + j] * id + 8.5) as i8).min(15) as u8;
        out[2 + j] = lo | (hi << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
        let dim = x.len();
        let mut data = vec![0u8; 3 * ty.row_bytes(dim).unwrap()];
        write_rows(&mut KvDataMut::Quantized(ty, &mut data), dim, &[2], x);
        let mut out = vec![0.0; 32];
        read_row(&KvData::Quantized(ty, &data), dim, 2, 32, &mut out);
        out
    }

    #[test]
    fn quantized_rows_read_back_close() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.25).collect();
        for (ty, tol) in [(GgmlType::Q8_0, 0.02), (GgmlType::Q4_0, 0.32)] {
            let y = round_trip(ty, &x);
            for (a, b) in x[32..].iter().zip(&y) {
                assert!((a - b).abs() <= tol, "{ty}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn f16_rows_read_back_exact_halves() {
        let x = [0.5f32, -1.25, 3.0, 7.75];
        let mut data = vec![f16::ZERO; 8];
        write_rows(&mut KvDataMut::F16(&mut data), 4, &[1], &x);
        let mut out = [0.0; 2];
        read_row(&KvData::F16(&data), 4, 1, 2, &mut out);
        assert!(out.iter().zip([3.0f32, 7.75]).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
