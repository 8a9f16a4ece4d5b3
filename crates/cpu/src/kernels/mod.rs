//! Kernels: `reference` is the scalar specification; ISA-specific modules are
//! fast paths that must agree with it (see `tests/kernels_vs_reference.rs`).

pub mod reference;
pub mod ternary;
#[cfg(target_arch = "x86_64")]
pub mod x86;
