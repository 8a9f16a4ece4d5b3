//! Every fast kernel against the scalar reference, on random inputs with odd sizes.
#![allow(clippy::float_cmp)]

use hearth_core::GgmlType;
use hearth_cpu::kernels::reference;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn assert_close(a: &[f32], b: &[f32], rel: f32) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = rel * (1.0 + x.abs().max(y.abs()));
        assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
    }
}

proptest! {
    #[test]
    fn dot_matches_reference(len in 0usize..300, seed in any::<u64>()) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let fast = (hearth_cpu::selected_kernels().dot)(&a, &b);
        assert_close(&[fast], &[reference::dot(&a, &b)], 1e-4);
    }

    #[test]
    fn gemm_tile_matches_reference(rows in 1usize..11, n in 1usize..11, k in 1usize..70, seed in any::<u64>()) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let w: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut fast = vec![0.0; rows * n];
        let mut slow = vec![0.0; rows * n];
        (hearth_cpu::selected_kernels().gemm_tile)(&w, rows, &x, n, k, &mut fast);
        (hearth_cpu::reference_kernels().gemm_tile)(&w, rows, &x, n, k, &mut slow);
        assert_close(&fast, &slow, 1e-4);
    }
}

/// Random blocks with sane f16 scales (random scale bytes could be inf/NaN).
fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..n_blocks * ty.type_size()).map(|_| rng.gen()).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let f16_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for &o in f16_offsets {
            block[o..o + 2].copy_from_slice(&scale);
        }
    }
    bytes
}

#[test]
fn quantized_matmul_matches_reference_for_every_type() {
    use GgmlType as T;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for ty in [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::Q2_K, T::Q3_K, T::Q4_K, T::Q5_K, T::Q6_K] {
        for (rows, n) in [(1, 1), (37, 1), (19, 5), (33, 9)] {
            let cols = 512;
            let w = random_blocks(ty, rows * cols / ty.block_size(), &mut rng);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut fast = vec![0.0; n * rows];
            let mut slow = vec![0.0; n * rows];
            hearth_cpu::matmul(ty, &w, rows, cols, &x, n, &mut fast).unwrap();
            reference::matmul(ty, &w, rows, cols, &x, n, &mut slow).unwrap();
            assert_close(&fast, &slow, 1e-4);
        }
    }
}

#[test]
fn q8_0_round_trip_is_close() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
    let q = reference::quantize_q8_0(&x);
    let mut y = vec![0.0; 64];
    reference::dequantize_row(GgmlType::Q8_0, &q, &mut y).unwrap();
    assert_close(&x, &y, 0.02);
}

#[test]
fn q4_k_known_block() {
    // d = 1, dmin = 0, all scales 1 (j<4: low 6 bits of bytes 0..4; j>=4 from bytes 8..12), nibbles 0..15.
    let mut b = vec![0u8; 144];
    b[0..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
    for s in &mut b[4..8] {
        *s = 1;
    }
    for s in &mut b[12..16] {
        *s = 0x11;
    }
    for (i, q) in b[16..].iter_mut().enumerate() {
        *q = ((i % 16) as u8) | (((15 - i % 16) as u8) << 4);
    }
    let mut y = vec![0.0; 256];
    reference::dequantize_row(GgmlType::Q4_K, &b, &mut y).unwrap();
    assert_eq!(y[0], 0.0);
    assert_eq!(y[5], 5.0);
    assert_eq!(y[32], 15.0);
    assert_eq!(y[255], 0.0);
}

#[test]
fn gemm_tile_matches_reference_at_model_shapes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (rows, n, k) in [(16, 5, 576), (16, 7, 1536), (3, 9, 2048), (16, 1, 640)] {
        let w: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut fast = vec![0.0; rows * n];
        let mut slow = vec![0.0; rows * n];
        (hearth_cpu::selected_kernels().gemm_tile)(&w, rows, &x, n, k, &mut fast);
        (hearth_cpu::reference_kernels().gemm_tile)(&w, rows, &x, n, k, &mut slow);
        assert_close(&fast, &slow, 1e-4);
    }
}

#[test]
fn batched_matmul_equals_row_by_row() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (rows, cols, n) = (576, 576, 5);
    let ty = GgmlType::Q4_1;
    let w = random_blocks(ty, rows * cols / 32, &mut rng);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut all = vec![0.0; n * rows];
    hearth_cpu::matmul(ty, &w, rows, cols, &x, n, &mut all).unwrap();
    for t in 0..n {
        let mut one = vec![0.0; rows];
        hearth_cpu::matmul(ty, &w, rows, cols, &x[t * cols..(t + 1) * cols], 1, &mut one).unwrap();
        assert_close(&all[t * rows..(t + 1) * rows], &one, 1e-5);
    }
}

/// Integer block dot products equal the float dot of the dequantized weight
/// row with the dequantized activations (they differ only in rounding order).
#[test]
fn quantized_vec_dot_matches_dequantized_dot() {
    use hearth_cpu::kernels::quant_dot;
    use GgmlType as T;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for ty in [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::Q2_K, T::Q3_K, T::Q4_K, T::Q5_K, T::Q6_K] {
        let cols = 512;
        let w = random_blocks(ty, cols / ty.block_size(), &mut rng);
        let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let act_ty = reference::vec_dot_type(ty);
        let a = quant_dot::quantize_row(act_ty, &x);
        let mut wf = vec![0.0; cols];
        reference::dequantize_row(ty, &w, &mut wf).unwrap();
        let mut xr = x.clone();
        reference::round_trip(act_ty, &mut xr);
        let mut expect = reference::dot(&wf, &xr);
        if act_ty == T::Q8_1 {
            // ggml adds m·s with s = f16(d·Σq) rather than d_f16·Σq: replicate.
            let bs = ty.type_size();
            for (i, blk) in w.chunks(bs).enumerate() {
                let m = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                let sum_q: i32 = a.qs[32 * i..32 * i + 32].iter().map(|&q| i32::from(q)).sum();
                expect += m * (a.s[i] - a.d[i] * sum_q as f32);
            }
        }
        let got = quant_dot::vec_dot(ty, &w, &a);
        assert!((got - expect).abs() <= 1e-3 * (1.0 + expect.abs()), "{ty}: {got} vs {expect}");
    }
}

/// The dispatched (SIMD) integer dot products are bit-identical to the
/// scalar reference, including extreme quant values (-128, all-15 nibbles).
#[test]
fn dispatched_quant_dot_is_bit_identical_to_reference() {
    use hearth_cpu::kernels::quant_dot;
    use GgmlType as T;
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let fast = hearth_cpu::selected_kernels().quant_dot;
    for ty in [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::Q2_K, T::Q3_K, T::Q4_K, T::Q5_K, T::Q6_K] {
        for cols in [256, 512, 2048] {
            let mut w = random_blocks(ty, cols / ty.block_size(), &mut rng);
            if ty == T::Q8_0 {
                w[2] = 0x80; // -128 in the first block
            }
            let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-3.0..3.0)).collect();
            let a = quant_dot::quantize_row(reference::vec_dot_type(ty), &x);
            let (got, want) = (fast(ty, &w, &a), quant_dot::vec_dot(ty, &w, &a));
            assert_eq!(got.to_bits(), want.to_bits(), "{ty} cols {cols}: {got} vs {want}");
        }
    }
}
