//! The CPU backend's encoder operations against the scalar references.

use hearth_core::{encoder_reference as reference, Backend, PackedQkv};
use hearth_cpu::{CpuBackend, CpuOptions, KernelChoice, TernaryLayout};

fn backend() -> CpuBackend {
    CpuBackend::new(CpuOptions { threads: Some(2), kernels: KernelChoice::Best, ternary: TernaryLayout::MaskedVnni }).expect("backend")
}

#[test]
fn layer_norm_and_gelu_equal_the_references() {
    let dim = 384;
    let x: Vec<f32> = (0..dim * 37).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
    let w: Vec<f32> = (0..dim).map(|i| 1.0 + i as f32 / 1000.0).collect();
    let b: Vec<f32> = (0..dim).map(|i| i as f32 / 500.0).collect();
    let (mut got, mut want) = (x.clone(), x.clone());
    backend().layer_norm(&mut got, dim, &w, &b, 1e-12);
    reference::layer_norm(&mut want, dim, &w, &b, 1e-12);
    assert_eq!(got, want);
    let (mut got, mut want) = (x.clone(), x);
    backend().gelu_erf(&mut got);
    want.iter_mut().for_each(|v| *v = reference::gelu_erf(*v));
    assert_eq!(got, want);
    // Known values of x·Φ(x).
    assert!((reference::gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
    assert!((reference::gelu_erf(-1.0) + 0.158_655_25).abs() < 1e-6);
}

#[test]
fn encoder_attention_keeps_sequences_apart() {
    // Two packed sequences: the second's output must not depend on the first.
    let (heads, hd) = (2, 4);
    let w = heads * hd;
    let q: Vec<f32> = (0..5 * w).map(|i| (i % 7) as f32 * 0.1).collect();
    let k: Vec<f32> = (0..5 * w).map(|i| (i % 5) as f32 * 0.2).collect();
    let v: Vec<f32> = (0..5 * w).map(|i| (i % 3) as f32).collect();
    let mut packed = vec![0.0; 5 * w];
    let both = PackedQkv { q: &q, k: &k, v: &v, n_head: heads, head_dim: hd, seq_lens: &[2, 3] };
    backend().encoder_attention(&both, &mut packed);
    let mut alone = vec![0.0; 3 * w];
    let second = PackedQkv { q: &q[2 * w..], k: &k[2 * w..], v: &v[2 * w..], seq_lens: &[3], ..both };
    backend().encoder_attention(&second, &mut alone);
    assert_eq!(&packed[2 * w..], &alone[..]);
}
