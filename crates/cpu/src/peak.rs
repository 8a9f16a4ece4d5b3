//! The machine's int8 multiply-accumulate peak, measured: what prefill's
//! integer kernels could reach at best, for `hearth bench`'s prefill line
//! (as the read bandwidth is for decode). Each thread runs independent
//! chains of the dot-product instruction the packed kernels use (`vpdpbusd`
//! on 256-bit registers with AVX-512 VNNI or AVX-VNNI, else AVX2's
//! `vpmaddubsw`), long enough to reach steady clocks.
#![allow(unsafe_code)]
// The chain helper is `inline(always)` so it compiles inside each
// `target_feature` function that calls it (with that function's instructions).
#![allow(clippy::inline_always)]

use std::time::Instant;

/// Rounds of eight instructions per thread: about 50 ms at full speed,
/// long enough for steady clocks.
const ITERS: u64 = 20_000_000;

/// Measured int8 multiply-accumulates per second over `threads` threads,
/// and the instruction measured; `None` on CPUs without AVX2.
#[must_use]
pub fn int8_macs_per_second(threads: usize) -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        let (kernel, name): (fn(u64) -> u64, &'static str) =
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                (|n| unsafe { x86::vnni512(n) }, "vpdpbusd (AVX-512 VNNI, 256-bit)")
            } else if is_x86_feature_detected!("avxvnni") {
                (|n| unsafe { x86::avxvnni(n) }, "vpdpbusd (AVX-VNNI)")
            } else if is_x86_feature_detected!("avx2") {
                (|n| unsafe { x86::avx2(n) }, "vpmaddubsw (AVX2)")
            } else {
                return None;
            };
        let threads = threads.max(1);
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t0 = Instant::now();
            let macs: u64 = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads).map(|_| s.spawn(move || kernel(ITERS))).collect();
                workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
            });
            best = best.max(macs as f64 / t0.elapsed().as_secs_f64());
        }
        Some((best, name))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi16, _mm256_dpbusd_avx_epi32, _mm256_dpbusd_epi32, _mm256_maddubs_epi16, _mm256_set1_epi8,
        _mm256_setzero_si256, _mm256_storeu_si256,
    };

    /// Eight independent accumulator chains of `step`, `n` rounds; returns
    /// the multiply-accumulates done (`macs_per_op` per instruction). The
    /// accumulators are stored at the end so nothing is optimised away.
    #[inline(always)]
    unsafe fn chains(n: u64, macs_per_op: u64, step: impl Fn(__m256i, __m256i, __m256i) -> __m256i) -> u64 {
        let (u, s) = (_mm256_set1_epi8(1), _mm256_set1_epi8(-1));
        let mut acc = [_mm256_setzero_si256(); 8];
        for _ in 0..n {
            for a in &mut acc {
                *a = step(*a, u, s);
            }
        }
        let mut sink = [0u8; 32];
        for a in &acc {
            // SAFETY: `sink` holds 32 bytes.
            unsafe { _mm256_storeu_si256(sink.as_mut_ptr().cast(), *a) };
        }
        std::hint::black_box(sink);
        n * 8 * macs_per_op
    }

    /// # Safety
    /// The CPU must support AVX-512 VNNI and AVX-512 VL.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub unsafe fn vnni512(n: u64) -> u64 {
        unsafe { chains(n, 32, |a, u, s| _mm256_dpbusd_epi32(a, u, s)) }
    }

    /// # Safety
    /// The CPU must support AVX-VNNI.
    #[target_feature(enable = "avx2,avxvnni")]
    pub unsafe fn avxvnni(n: u64) -> u64 {
        unsafe { chains(n, 32, |a, u, s| _mm256_dpbusd_avx_epi32(a, u, s)) }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(n: u64) -> u64 {
        // 32 byte products summed in pairs per instruction (the kernels add
        // the pairs up with `vpmaddwd` too; counted as the products).
        unsafe { chains(n, 32, |a, u, s| _mm256_add_epi16(a, _mm256_maddubs_epi16(u, s))) }
    }
}
