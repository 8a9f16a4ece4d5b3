//! Quantized matrix multiplication on the CPU: weight rows are dequantized a
//! tile at a time into a small f32 buffer (amortized over all activation rows
//! of the batch) and multiplied with a register-blocked SIMD kernel. Tiles of
//! rows are spread over the rayon pool.

use hearth_core::GgmlType;
use rayon::prelude::*;

use crate::dispatch::kernels;
use crate::kernels::quant_dot;
use crate::kernels::reference::{self, Unsupported};

/// Weight rows dequantized together: 16 rows × 2048 cols = 128 KiB, inside L2.
const TILE_ROWS: usize = 16;

/// Batches up to this many rows use the integer dot products, whose results
/// match llama.cpp's to float rounding (decode steps, short prompts, batched
/// decode of many users). Larger batches (long prompts, perplexity) use the
/// f32 GEMM on dequantized tiles with activations rounded the same way, which
/// is ~10× faster today and agrees to ~0.1% in perplexity; the integer GEMM
/// planned for prefill removes this split.
const EXACT_MAX_ROWS: usize = 32;

/// `out[t * rows + r] = W[r] · x[t]` for `t < n`. `w` holds `rows` rows of
/// `cols` elements of type `ty`; `x` is `n × cols`, `out` is `n × rows`.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), Unsupported> {
    if !reference::is_supported(ty) {
        return Err(Unsupported(ty));
    }
    let row_bytes = ty.row_bytes(cols).ok_or(Unsupported(ty))?;
    assert!(w.len() >= rows * row_bytes && x.len() >= n * cols && out.len() >= n * rows);
    let mut by_row = vec![0f32; rows * n];
    if quant_dot::supports(ty) && n <= EXACT_MAX_ROWS {
        quantized_by_row(ty, w, row_bytes, cols, x, n, &mut by_row);
    } else {
        float_by_row(ty, w, row_bytes, cols, x, n, &mut by_row);
    }
    if n == 1 {
        out[..rows].copy_from_slice(&by_row);
    } else {
        for r in 0..rows {
            for t in 0..n {
                out[t * rows + r] = by_row[r * n + t];
            }
        }
    }
    Ok(())
}

/// Quantized weights: activations quantized once per row, then integer dot
/// products per (weight row, activation row), ggml's numerics.
fn quantized_by_row(ty: GgmlType, w: &[u8], row_bytes: usize, cols: usize, x: &[f32], n: usize, by_row: &mut [f32]) {
    let act_ty = reference::vec_dot_type(ty);
    let qdot = kernels().quant_dot;
    let acts: Vec<quant_dot::Q8Row> =
        x[..n * cols].par_chunks(cols).map(|row| quant_dot::quantize_row(act_ty, row)).collect();
    by_row.par_chunks_mut(TILE_ROWS * n).enumerate().for_each(|(tile, dst)| {
        let r0 = tile * TILE_ROWS;
        for (i, out) in dst.chunks_mut(n).enumerate() {
            let wrow = &w[(r0 + i) * row_bytes..(r0 + i + 1) * row_bytes];
            for (o, a) in out.iter_mut().zip(&acts) {
                *o = qdot(ty, wrow, a);
            }
        }
    });
}

/// Float weights: dequantize a tile of rows, multiply with the SIMD GEMM tile.
fn float_by_row(ty: GgmlType, w: &[u8], row_bytes: usize, cols: usize, x: &[f32], n: usize, by_row: &mut [f32]) {
    let k = kernels();
    // Activations as ggml's quantized dot products see them (see `round_trip`).
    let act_ty = reference::vec_dot_type(ty);
    let rounded;
    let x = if act_ty == GgmlType::F32 {
        &x[..n * cols]
    } else {
        let mut r = x[..n * cols].to_vec();
        r.chunks_mut(cols).for_each(|row| reference::round_trip(act_ty, row));
        rounded = r;
        &rounded[..]
    };
    // Row-major by weight row so each task owns a contiguous slice; transposed by the caller.
    by_row.par_chunks_mut(TILE_ROWS * n).enumerate().for_each_init(
        || vec![0f32; TILE_ROWS * cols],
        |buf, (tile, dst)| {
            let r0 = tile * TILE_ROWS;
            let nr = dst.len() / n;
            for i in 0..nr {
                let src = &w[(r0 + i) * row_bytes..(r0 + i + 1) * row_bytes];
                // ok: the type was checked as supported above.
                let _ = reference::dequantize_row(ty, src, &mut buf[i * cols..(i + 1) * cols]);
            }
            (k.gemm_tile)(&buf[..nr * cols], nr, x, n, cols, dst);
        },
    );
}

/// Dequantizes the selected rows (embedding lookup): `out` is `ids.len() × cols`.
pub fn get_rows(ty: GgmlType, w: &[u8], cols: usize, ids: &[u32], out: &mut [f32]) -> Result<(), Unsupported> {
    let row_bytes = ty.row_bytes(cols).ok_or(Unsupported(ty))?;
    for (i, &id) in ids.iter().enumerate() {
        let start = id as usize * row_bytes;
        reference::dequantize_row(ty, &w[start..start + row_bytes], &mut out[i * cols..(i + 1) * cols])?;
    }
    Ok(())
}
