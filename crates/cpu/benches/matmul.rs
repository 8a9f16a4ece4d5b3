//! Matmul kernel throughput per weight type, at a decode shape (n = 1) and a
//! prefill shape (n = 512), on a worker pool of `HEARTH_THREADS` threads (default: all cores). Prints one JSON object
//! per line: type, n, rows, cols, threads, median seconds, GB/s of weights
//! read and GMAC/s.
//!
//! `cargo bench -p hearth-cpu --bench matmul [-- FILTER]` (FILTER matches the
//! type name, e.g. `Q4_0`); `HEARTH_THREADS` sets the pool size.

use std::time::Instant;

use hearth_core::GgmlType;
use hearth_cpu::{CpuWeight, TernaryLayout};
use rand::{Rng, SeedableRng};

fn random_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut impl Rng) -> Vec<u8> {
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let q8 = hearth_cpu::kernels::reference::quantize_q8_0(&x);
    if ty == GgmlType::Q8_0 {
        return q8;
    }
    if ty == GgmlType::TQ2_0 {
        // Valid codes only (0..=2), so the lookup layout accepts them too.
        use hearth_cpu::kernels::ternary::{encode_tq2_0, QK};
        let codes: Vec<u8> = (0..rows * cols).map(|_| rng.gen_range(0..3)).collect();
        return codes.chunks_exact(QK).flat_map(|c| encode_tq2_0(c, 0.01)).collect();
    }
    // Other types: random bytes with sane f16 scales where each type keeps them.
    let mut bytes: Vec<u8> = (0..rows * ty.row_bytes(cols).unwrap_or(0)).map(|_| rng.gen()).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    for b in bytes.chunks_exact_mut(ty.type_size()) {
        for &o in hearth_cpu::kernels::reference::f16_field_offsets(ty) {
            b[o..o + 2].copy_from_slice(&scale);
        }
        if ty == GgmlType::MXFP4 {
            b[0] = 120 + b[0] % 8; // E8M0 exponent byte
        }
    }
    bytes
}

fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// One JSON line: the shape, the kernel set, and the throughput.
fn report(ty: &str, isa: &str, (rows, cols, n, threads): (usize, usize, usize, usize), bytes: usize, secs: f64) {
    println!(
        "{{\"type\":\"{ty}\",\"n\":{n},\"rows\":{rows},\"cols\":{cols},\"threads\":{threads},\"isa\":\"{isa}\",\"secs\":{secs:.6},\"weight_gbs\":{:.2},\"gmacs\":{:.2}}}",
        bytes as f64 / secs / 1e9,
        (rows * cols * n) as f64 / secs / 1e9
    );
}

fn main() {
    use GgmlType as T;
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let threads = std::env::var("HEARTH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let pool = &hearth_cpu::ThreadPool::new(threads);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for ty in
        [
        T::Q4_0,
        T::Q4_1,
        T::Q5_0,
        T::Q8_0,
        T::Q2_K,
        T::Q3_K,
        T::Q4_K,
        T::Q5_K,
        T::Q6_K,
        T::IQ4_NL,
        T::IQ4_XS,
        T::MXFP4,
        T::TQ1_0,
        T::TQ2_0,
        T::F16,
    ]
    {
        if filter.as_deref().is_some_and(|f| !ty.to_string().contains(f)) {
            continue;
        }
        // A decode-bound LM-head-like shape (cache-resident on large-L3
        // parts), one four times larger that must stream from DRAM, and an
        // FFN-like prefill shape.
        for (rows, cols, n, reps) in [(16384, 2048, 1, 30), (65536, 2048, 1, 20), (2048, 2048, 512, 5)] {
            let weights = random_weights(ty, rows, cols, &mut rng);
            let w = CpuWeight::new(pool, ty, &weights, rows, cols, TernaryLayout::MaskedVnni).expect("supported");
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut out = vec![0f32; n * rows];
            let secs = median_secs(reps, || hearth_cpu::matmul(pool, &w, &x, n, &mut out));
            let isa = hearth_cpu::selected_kernels().isa;
            report(&ty.to_string(), isa, (rows, cols, n, threads), w.bytes(), secs);
            // The lookup-table family on the same ternary weights (tables built per call).
            if let (T::TQ2_0, CpuWeight::Ternary(t)) = (ty, &w) {
                use hearth_cpu::packed::ternary_lut::{self, LutMatrix};
                let lut = CpuWeight::TernaryLut(LutMatrix::from_ternary(pool, t).expect("valid codes"));
                let isa = ternary_lut::kernel_variants().last().map_or("scalar", |v| v.0);
                let secs = median_secs(reps, || hearth_cpu::matmul(pool, &lut, &x, n, &mut out));
                report("TQ2_0-lut", isa, (rows, cols, n, threads), lut.bytes(), secs);
            }
        }
    }
}
