//! Every fast kernel against the scalar reference, on random inputs with odd sizes.
#![allow(clippy::float_cmp)]

use hearth_core::GgmlType;
use hearth_cpu::kernels::reference;
use hearth_cpu::packed::acts::{ActRule, QuantizedActs};
use hearth_cpu::packed::ternary::TernaryMatrix;
use hearth_cpu::packed::PackedMatrix;
use hearth_cpu::pool::SharedOut;
use hearth_cpu::{CpuWeight, TernaryLayout, ThreadPool};

/// The pool the kernels run on here: four threads, so row ranges are packed
/// and multiplied in parallel even on a one-core machine.
fn pool() -> &'static ThreadPool {
    static POOL: std::sync::OnceLock<ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(4))
}
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
        check_gemm_tile(rows, n, k, &mut rand::rngs::StdRng::seed_from_u64(seed));
    }
}

/// The dispatched f32 tile GEMM against the reference on random `rows × k`
/// weights and `n × k` activations.
fn check_gemm_tile(rows: usize, n: usize, k: usize, rng: &mut impl Rng) {
    let w: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut fast = vec![0.0; rows * n];
    let mut slow = vec![0.0; rows * n];
    (hearth_cpu::selected_kernels().gemm_tile)(&w, rows, &x, n, k, &mut fast);
    (hearth_cpu::reference_kernels().gemm_tile)(&w, rows, &x, n, k, &mut slow);
    assert_close(&fast, &slow, 1e-4);
}

/// Random blocks with sane f16 scales (random scale bytes could be inf/NaN).
fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..n_blocks * ty.type_size()).map(|_| rng.gen()).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for &o in reference::f16_field_offsets(ty) {
            block[o..o + 2].copy_from_slice(&scale);
        }
        if ty == GgmlType::MXFP4 {
            // An E8M0 exponent byte: 2^-8..2^-1 halves.
            block[0] = 120 + block[0] % 8;
        }
    }
    bytes
}

const PACKED_TYPES: [GgmlType; 13] = {
    use GgmlType as T;
    [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::Q2_K, T::Q3_K, T::Q4_K, T::Q5_K, T::Q6_K, T::IQ4_NL, T::IQ4_XS, T::MXFP4]
};

const TERNARY_TYPES: [GgmlType; 3] = [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S];

/// Random ternary codes (0..=2) encoded as `ty`, with one scale per block
/// (or per tensor for `I2_S`).
fn random_ternary(ty: GgmlType, rows: usize, cols: usize, rng: &mut impl Rng) -> Vec<u8> {
    use hearth_cpu::kernels::ternary::{encode_i2_s, encode_tq1_0, encode_tq2_0, QK};
    let codes: Vec<u8> = (0..rows * cols).map(|_| rng.gen_range(0..3u8)).collect();
    match ty {
        GgmlType::I2_S => encode_i2_s(&codes, rng.gen_range(0.01..0.1)),
        GgmlType::TQ1_0 => codes.chunks_exact(QK).flat_map(|c| encode_tq1_0(c, rng.gen_range(0.01..0.1))).collect(),
        _ => codes.chunks_exact(QK).flat_map(|c| encode_tq2_0(c, rng.gen_range(0.01..0.1))).collect(),
    }
}

fn dequantize_ternary(ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    if ty == GgmlType::I2_S {
        return hearth_cpu::kernels::ternary::dequantize_i2_s(w, rows * cols);
    }
    let mut out = vec![0.0; rows * cols];
    reference::dequantize_row(ty, &w[..ty.row_bytes(cols).unwrap() * rows], &mut out).unwrap();
    out
}

fn q8k_acts(n: usize, cols: usize, rng: &mut impl Rng) -> QuantizedActs {
    let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let mut a = QuantizedActs::default();
    a.quantize_with(pool(), ActRule::Q8K, &x, n, cols);
    a
}

/// 2-bit packing is lossless for all three ternary types.
#[test]
fn ternary_matrices_dequantize_exactly_like_their_files() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for ty in TERNARY_TYPES {
        let (rows, cols) = (11, 512);
        let w = random_ternary(ty, rows, cols, &mut rng);
        let t = TernaryMatrix::pack(pool(), ty, &w, rows, cols).expect("ternary");
        let want = dequantize_ternary(ty, &w, rows, cols);
        for r in 0..rows {
            let got = t.dequantize_row(r);
            let want = &want[r * cols..(r + 1) * cols];
            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty} row {r}");
        }
    }
}

/// Every ternary SIMD variant equals the lane-wise specification bit for bit.
#[test]
fn ternary_kernels_are_bit_identical_to_the_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let variants = hearth_cpu::packed::ternary_kernel_variants();
    for ty in TERNARY_TYPES {
        for (rows, cols, n) in [(8, 256, 1), (13, 512, 5), (37, 256, 4), (3, 1024, 9)] {
            let t = TernaryMatrix::pack(pool(), ty, &random_ternary(ty, rows, cols, &mut rng), rows, cols).unwrap();
            let a = q8k_acts(n, cols, &mut rng);
            let mut want = vec![0.0; n * rows];
            hearth_cpu::packed::ternary::gemm(&t, &a, &mut want);
            for &(name, kernel) in &variants {
                let mut got = vec![0.0; n * rows];
                let shared = SharedOut::new(&mut got);
                (0..t.groups()).for_each(|g| kernel(&t, g, &a, &shared));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{name} {ty} {rows}x{cols} n={n} at {i}: {g} vs {w}");
                }
            }
        }
    }
}

/// The ternary matmul is the float product of the dequantized weights with
/// the `Q8_K`-rounded activations, up to summation order; and `I2_S` equals
/// `TQ2_0` exactly when both hold the same codes and scale.
#[test]
fn ternary_matmul_matches_dequantized_math_and_i2_s_equals_tq2_0() {
    use hearth_cpu::kernels::ternary::{encode_i2_s, encode_tq2_0, QK};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for ty in TERNARY_TYPES {
        for (rows, n) in [(1, 1), (37, 1), (19, 5), (33, 9)] {
            let cols = 512;
            let w = random_ternary(ty, rows, cols, &mut rng);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut fast = vec![0.0; n * rows];
            hearth_cpu::matmul(
                pool(),
                &CpuWeight::new(pool(), ty, &w, rows, cols, TernaryLayout::MaskedVnni).unwrap(),
                &x,
                n,
                &mut fast,
            );
            let (wf, mut xr) = (dequantize_ternary(ty, &w, rows, cols), x.clone());
            xr.chunks_mut(cols).for_each(|row| reference::round_trip(GgmlType::Q8_K, row));
            let slow: Vec<f32> = (0..n * rows)
                .map(|i| reference::dot(&wf[(i % rows) * cols..][..cols], &xr[(i / rows) * cols..][..cols]))
                .collect();
            assert_close(&fast, &slow, 1e-4);
        }
    }
    let (rows, cols, n) = (24, 768, 3);
    let codes: Vec<u8> = (0..rows * cols).map(|_| rng.gen_range(0..3u8)).collect();
    let d = half::f16::from_f32(0.037).to_f32();
    let tq2: Vec<u8> = codes.chunks_exact(QK).flat_map(|c| encode_tq2_0(c, d)).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let run = |ty, w: &[u8]| {
        let mut out = vec![0.0; n * rows];
        hearth_cpu::matmul(
            pool(),
            &CpuWeight::new(pool(), ty, w, rows, cols, TernaryLayout::MaskedVnni).unwrap(),
            &x,
            n,
            &mut out,
        );
        out
    };
    assert_eq!(run(GgmlType::I2_S, &encode_i2_s(&codes, d)), run(GgmlType::TQ2_0, &tq2));
}

fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut w = random_blocks(ty, rows * cols / ty.block_size(), rng);
    if ty == GgmlType::Q8_0 {
        w[2] = 0x80; // -128: the widest code
    }
    w
}

/// Packing is lossless: every packed row dequantizes to exactly ggml's values
/// (83 rows: several row ranges packed in parallel, and a ragged last group).
#[test]
fn packed_matrices_dequantize_exactly_like_ggml() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for ty in PACKED_TYPES {
        let (rows, cols) = (83, 512);
        let w = random_matrix(ty, rows, cols, &mut rng);
        let p = PackedMatrix::pack(pool(), ty, &w, rows, cols).expect("packable");
        let row_bytes = ty.row_bytes(cols).unwrap();
        for r in 0..rows {
            let mut want = vec![0.0; cols];
            reference::dequantize_row(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut want).unwrap();
            let got = p.dequantize_row(r);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty} row {r}");
        }
    }
}

fn run_group_kernel(kernel: hearth_cpu::packed::GroupKernel, p: &PackedMatrix, a: &QuantizedActs) -> Vec<f32> {
    let mut out = vec![0.0; a.n * p.rows];
    let shared = SharedOut::new(&mut out);
    for g in 0..p.groups() {
        kernel(p, g, a, &shared);
    }
    out
}

/// Every SIMD variant this CPU has is bit-identical to the scalar
/// specification, for every type, ragged row counts and batch sizes.
#[test]
fn packed_kernels_are_bit_identical_to_the_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let variants = hearth_cpu::packed::kernel_variants();
    let scalar = variants[0].1;
    for ty in PACKED_TYPES {
        for (rows, cols, n) in [(8, 256, 1), (13, 512, 5), (37, 256, 4), (3, 1024, 9)] {
            let w = random_matrix(ty, rows, cols, &mut rng);
            let mut p = PackedMatrix::pack(pool(), ty, &w, rows, cols).unwrap();
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-3.0..3.0)).collect();
            let mut a = QuantizedActs::default();
            // The rule matmul uses (Q8_K for K-quants, whose super-block kernels rely on it).
            a.quantize_with(pool(), hearth_cpu::packed::acts::ActRule::for_weights(ty), &x, n, cols);
            // Both row orders (MoE experts sum every row in the one-row order).
            for row_by_row in [false, true] {
                p.row_by_row = row_by_row;
                let want = run_group_kernel(scalar, &p, &a);
                for &(name, kernel) in &variants[1..] {
                    let got = run_group_kernel(kernel, &p, &a);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), w.to_bits(), "{name} {ty} {rows}x{cols} n={n} at {i}: {g} vs {w}");
                    }
                }
            }
        }
    }
}

/// The integer kernels compute the float product of the dequantized weights
/// with the 8-bit-rounded activations, up to summation order.
#[test]
fn packed_matmul_matches_dequantized_math() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for ty in PACKED_TYPES {
        for (rows, n) in [(1, 1), (37, 1), (19, 5), (33, 9)] {
            let cols = 512;
            let w = random_matrix(ty, rows, cols, &mut rng);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut fast = vec![0.0; n * rows];
            let mut slow = vec![0.0; n * rows];
            hearth_cpu::matmul(
                pool(),
                &CpuWeight::new(pool(), ty, &w, rows, cols, TernaryLayout::MaskedVnni).unwrap(),
                &x,
                n,
                &mut fast,
            );
            reference::matmul(ty, &w, rows, cols, &x, n, &mut slow).unwrap();
            assert_close(&fast, &slow, 1e-4);
        }
    }
}

/// Activation quantization, the flash-attention accumulator updates, the
/// tiled attention's GEMM: the
/// dispatched kernels equal the scalar ones bit for bit.
#[test]
fn small_dispatched_kernels_are_bit_identical() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let (fast, slow) = (hearth_cpu::selected_kernels(), hearth_cpu::reference_kernels());
    for len in [32, 64, 67, 256] {
        let x: Vec<f32> = (0..len).map(|_| rng.gen_range(-40.0..40.0)).collect();
        let v: Vec<f32> = (0..len).map(|_| rng.gen_range(-4.0..4.0)).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        (fast.mad_round_f16)(&mut a, &v, 0.37);
        (slow.mad_round_f16)(&mut b, &v, 0.37);
        assert_eq!(a, b);
        (fast.scale_round_f16)(&mut a, 0.71);
        (slow.scale_round_f16)(&mut b, 0.71);
        assert_eq!(a, b);
        for (m, k, n) in [(64, 64, 64), (3, len / 8, 64), (5, 7, len / 4 + 3)] {
            let av: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let (mut ca, mut cb) = (c0.clone(), c0);
            (fast.gemm_acc)(&mut ca, &av, &bv, m, k, n);
            (slow.gemm_acc)(&mut cb, &av, &bv, m, k, n);
            assert_eq!(ca, cb, "gemm_acc {m}×{k}×{n}");
        }
        let y: Vec<f32> = (0..len).map(|_| rng.gen_range(-4.0..4.0)).collect();
        assert_eq!((fast.dot_f16_ggml)(&x, &y).to_bits(), (slow.dot_f16_ggml)(&x, &y).to_bits());
        assert_eq!((fast.dot_f32_ggml)(&x, &y).to_bits(), (slow.dot_f32_ggml)(&x, &y).to_bits());
        // F16 weights kept as stored: widening is exact, so the fused dot is
        // dot_f16_ggml over the widened row, bit for bit.
        let bits: Vec<u16> = x.iter().map(|v| half::f16::from_f32(*v).to_bits()).collect();
        let widened: Vec<f32> = bits.iter().map(|b| half::f16::from_bits(*b).to_f32()).collect();
        let mut fast_widened = vec![0.0; bits.len()];
        (fast.f16_to_f32)(&bits, &mut fast_widened);
        assert_eq!(fast_widened, widened);
        let want = (slow.dot_f16_ggml)(&widened, &y).to_bits();
        assert_eq!((slow.dot_f16w_ggml)(&bits, &y).to_bits(), want);
        assert_eq!((fast.dot_f16w_ggml)(&bits, &y).to_bits(), want);
        assert_eq!((fast.dot_lanes16)(&x, &y).to_bits(), (slow.dot_lanes16)(&x, &y).to_bits());
        let (mut ea, mut eb) = (x.clone(), x.clone());
        ea[1] = f32::NEG_INFINITY;
        eb[1] = f32::NEG_INFINITY;
        let (sa, sb) = ((fast.soft_max)(&mut ea, 40.0), (slow.soft_max)(&mut eb, 40.0));
        assert_eq!((sa.to_bits(), ea[1]), (sb.to_bits(), 0.0));
        assert_eq!(ea, eb);
        let (mut qa, mut qb) = (vec![0i8; 32], vec![0i8; 32]);
        let da = (fast.quantize_block_q8)(&x, &mut qa);
        let db = (slow.quantize_block_q8)(&x, &mut qb);
        assert_eq!((da.to_bits(), qa), (db.to_bits(), qb));
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
        check_gemm_tile(rows, n, k, &mut rng);
    }
}

#[test]
fn batched_matmul_equals_row_by_row() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (rows, cols, n) = (576, 576, 5);
    let ty = GgmlType::Q4_1;
    let w = CpuWeight::new(
        pool(),
        ty,
        &random_blocks(ty, rows * cols / 32, &mut rng),
        rows,
        cols,
        TernaryLayout::MaskedVnni,
    )
    .unwrap();
    let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut all = vec![0.0; n * rows];
    hearth_cpu::matmul(pool(), &w, &x, n, &mut all);
    for t in 0..n {
        let mut one = vec![0.0; rows];
        hearth_cpu::matmul(pool(), &w, &x[t * cols..(t + 1) * cols], 1, &mut one);
        assert_eq!(&all[t * rows..(t + 1) * rows], &one[..]);
    }
}

/// The lookup-table family equals the masked family's specification bit
/// for bit, on every kernel, including partial groups and f32 (`I2_S`) scales.
#[test]
fn ternary_lut_kernels_are_bit_identical_to_the_masked_specification() {
    use hearth_cpu::packed::ternary_lut::{kernel_variants, LutMatrix, LutTables};
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    for ty in TERNARY_TYPES {
        for (rows, cols, n) in [(8, 256, 1), (45, 512, 3), (64, 256, 2), (3, 1024, 1)] {
            let t = TernaryMatrix::pack(pool(), ty, &random_ternary(ty, rows, cols, &mut rng), rows, cols).unwrap();
            let lut = LutMatrix::from_ternary(pool(), &t).expect("valid codes");
            let a = q8k_acts(n, cols, &mut rng);
            let mut want = vec![0.0; n * rows];
            hearth_cpu::packed::ternary::gemm(&t, &a, &mut want);
            let tables = LutTables::build(&a);
            for (name, kernel) in kernel_variants() {
                let mut got = vec![0.0; n * rows];
                let shared = SharedOut::new(&mut got);
                (0..lut.groups()).for_each(|g| kernel(&lut, g, &tables, &a, &shared));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "lut {name} {ty} {rows}x{cols} n={n} at {i}: {g} vs {w}");
                }
            }
        }
    }
}

/// A super-block's codes read at once equal the codes read one at a time.
#[test]
fn ternary_super_codes_equal_single_codes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    let (rows, cols) = (21, 512);
    let t = TernaryMatrix::pack(
        pool(),
        GgmlType::TQ2_0,
        &random_ternary(GgmlType::TQ2_0, rows, cols, &mut rng),
        rows,
        cols,
    )
    .expect("ternary");
    for r in 0..rows {
        for s in 0..cols / 256 {
            let want: Vec<u8> = (0..256).map(|e| t.code(r, 256 * s + e)).collect();
            assert_eq!(t.super_codes(r, s).to_vec(), want, "row {r} super {s}");
        }
    }
}

/// `ggml_vec_dot_f32`'s tail (the columns past the last multiple of 64, all
/// of a short row) is summed in f32, one rounded product at a time, after
/// the lanes: not in f64 as `ggml_vec_dot_f16`'s.
#[test]
fn f32_dot_sums_its_tail_in_f32() {
    use hearth_cpu::kernels::reference::{dot_f16_ggml, dot_f32_ggml};
    let x = [1.0e8f32, 1.0, -1.0e8, 1.0, 0.5, 0.25, 3.0, 1.0];
    let y = [1.0f32; 8];
    let sequential = x.iter().zip(&y).fold(0f32, |s, (a, b)| s + a * b);
    assert_eq!(dot_f32_ggml(&x, &y).to_bits(), sequential.to_bits());
    assert_ne!(dot_f32_ggml(&x, &y), dot_f16_ggml(&x, &y), "f64 keeps the 1.0 that f32 loses beside 1e8");
}
