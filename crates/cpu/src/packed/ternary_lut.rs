//! The lookup-table kernel family for ternary weights (T-MAC / bitnet.cpp
//! `TL` style), kept beside the masked-`vpdpbusd` family of [`super::ternary`]
//! so the two can be measured on the same shapes (`benches/matmul.rs`,
//! `TQ2_0-lut` rows). Not dispatched by the engine: at decode it reads 12%
//! fewer bytes but the lookups cost more than masked `vpdpbusd` at prefill,
//! and one matrix can hold only one layout (measurements in
//! `docs/ARCHITECTURE.md`, "Ternary kernels").
//!
//! Weights are grouped in triples inside each lane of ggml's lane order (see
//! [`super::ternary`]): lane `L`'s 32 elements of a super-block, taken in
//! the order `E[m] = 32·(m div 4) + 4L + (m mod 4)`, form ten triples
//! `E[3i..3i+3]` and one pair `E[30..32]`. A triple of weights `w ∈ {−1,0,1}³`
//! is the balanced-ternary number `v = 9w₀ + 3w₁ + w₂ ∈ [−13, 13]`, stored as
//! a 4-bit magnitude `|v|` and a sign bit; a pair as its 4-bit index
//! `3c₀ + c₁` (codes). Per activation row, each triple gets a table of the 14
//! values `Σ dᵢ(m)·aᵢ` (`d(m)` the digits of `m`) and each pair one of its 9
//! sums, so a lane's exact `Σ (code − 1)·a` is 11 table lookups. Adding
//! `Σ_lane a − Σ_block a` gives ggml's lane integer, and from there the
//! float steps are [`super::ternary::row_dot`]'s: this family is bit-identical
//! to the other.
//!
//! Layout per (group of 32 rows, super-block, lane): three vectors of 32
//! `u16` (row `r`'s lookups `4q..4q+4` in the nibbles of word `q`; lookup 10
//! is the pair) and ten `u32` sign masks (bit `r`: triple `i` of row `r` is
//! negative): 232 bytes per 1024 weights, 1.81 bits per weight with the
//! scales, against 2.06 for the masked layout.

use super::acts::QuantizedActs;
use super::ternary::{TernaryMatrix, LANES, SUPER};
use super::Scales;
use crate::pool::ThreadPool;

/// Rows per group (one vector of 32 `i16` lookups).
pub const ROWS: usize = 32;
/// Triples per (super-block, lane).
pub const TRIPLES: usize = 10;
/// Lookups per (super-block, lane): the triples and one pair.
pub const LOOKUPS: usize = TRIPLES + 1;
/// Index words per row and (super-block, lane).
pub const WORDS: usize = 3;
/// `i16` entries per table: 16 values, repeated so that a 5-bit permute
/// index with a stray fifth bit still finds its value.
pub const TABLE: usize = 32;

/// Balanced-ternary digits `(d₀, d₁, d₂)` of `m = 9d₀ + 3d₁ + d₂`, `m` in 0..14.
const DIGITS: [[i32; 3]; 14] = {
    let mut t = [[0i32; 3]; 14];
    let mut m = 0;
    while m < 14 {
        // m = 9d0 + 3d1 + d2 with digits in {-1, 0, 1}: round to nearest.
        let d0 = (m + 4) / 9;
        let r = m - 9 * d0;
        let d1 = if r >= 2 {
            1
        } else if r <= -2 {
            -1
        } else {
            0
        };
        t[m as usize] = [d0, d1, r - 3 * d1];
        m += 1;
    }
    t
};

/// `TRIPLE_DIGITS[k][m]`: digit `k` of magnitude `m` (0 past 13).
const TRIPLE_DIGITS: [[i16; 16]; 3] = {
    let mut t = [[0i16; 16]; 3];
    let mut m = 0;
    while m < 14 {
        let mut k = 0;
        while k < 3 {
            t[k][m] = DIGITS[m][k] as i16;
            k += 1;
        }
        m += 1;
    }
    t
};

/// `PAIR_DIGITS[k][m]`: weight `k` of pair index `m = 3c₀ + c₁` (0 past 8).
const PAIR_DIGITS: [[i16; 16]; 3] = {
    let mut t = [[0i16; 16]; 3];
    let mut m = 0;
    while m < 9 {
        t[0][m] = (m / 3) as i16 - 1;
        t[1][m] = (m % 3) as i16 - 1;
        m += 1;
    }
    t
};

/// Element (within its super-block) of position `m` of lane `lane`.
fn lane_element(lane: usize, m: usize) -> usize {
    32 * (m / 4) + 4 * lane + m % 4
}

/// A ternary matrix in the lookup layout.
#[derive(Debug, Clone)]
pub struct LutMatrix {
    /// Output features (unpadded).
    pub rows: usize,
    /// Input features (a multiple of 256).
    pub cols: usize,
    /// `[group][super][lane][word][row]`.
    pub idx: Vec<u16>,
    /// `[group][super][lane][triple]`.
    pub signs: Vec<u32>,
    /// `[group][super][32]`, as in the source matrix (f16 or f32).
    pub scales: Scales,
}

impl LutMatrix {
    /// The lookup layout of `m`; `None` when a code is 3 (only a corrupt
    /// `I2_S` file holds one; the masked layout multiplies it as 3).
    /// Groups are converted in parallel on the worker pool.
    #[must_use]
    pub fn from_ternary(pool: &ThreadPool, m: &TernaryMatrix) -> Option<Self> {
        let (supers, groups) = (m.cols / SUPER, m.rows.div_ceil(ROWS));
        let invalid = std::sync::atomic::AtomicBool::new(false);
        // Runs `f(row, s, lane, record)` over every real row of group `g`.
        let each_record = |g: usize, f: &mut dyn FnMut(usize, usize, usize, &Record)| {
            for row in 0..(m.rows - g * ROWS).min(ROWS) {
                for s in 0..supers {
                    let codes = m.super_codes(g * ROWS + row, s);
                    if codes.iter().any(|&c| c > 2) {
                        invalid.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    for lane in 0..LANES {
                        f(row, s, lane, &Record::of(&codes, lane));
                    }
                }
            }
        };
        let per_group = supers * LANES * WORDS * ROWS;
        // Padding rows: magnitude 0 and pair (1, 1), i.e. zero weights, scale 0.
        let mut idx = vec![0u16; groups * per_group];
        for (i, w) in idx.iter_mut().enumerate() {
            if i % (WORDS * ROWS) / ROWS == 2 {
                *w = 4 << 8;
            }
        }
        pool.for_each_chunk_mut(&mut idx, per_group, &|g, idx| {
            each_record(g, &mut |row, s, lane, rec| {
                for (q, &word) in rec.words.iter().enumerate() {
                    idx[((s * LANES + lane) * WORDS + q) * ROWS + row] = word;
                }
            });
        });
        let mut signs = vec![0u32; groups * supers * LANES * TRIPLES];
        pool.for_each_chunk_mut(&mut signs, supers * LANES * TRIPLES, &|g, signs| {
            each_record(g, &mut |row, s, lane, rec| {
                for i in 0..TRIPLES {
                    signs[(s * LANES + lane) * TRIPLES + i] |= u32::from(rec.signs >> i & 1) << row;
                }
            });
        });
        if invalid.into_inner() {
            return None;
        }
        let mut scales = Scales::flat(matches!(m.scales, Scales::F16(_)), groups * supers * ROWS);
        for r in 0..m.rows {
            for s in 0..supers {
                scales.set(((r / ROWS) * supers + s) * ROWS + r % ROWS, m.scales.get(m.scale_index(r, s)));
            }
        }
        Some(Self { rows: m.rows, cols: m.cols, idx, signs, scales })
    }

    /// Row groups.
    #[must_use]
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(ROWS)
    }

    /// Bytes held (what a decode step reads).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.idx.len() * 2 + self.signs.len() * 4 + self.scales.bytes()
    }
}

/// One row's lookups in one (super-block, lane).
struct Record {
    /// The index words (nibble `i % 4` of word `i / 4` is lookup `i`).
    words: [u16; WORDS],
    /// Bit `i`: triple `i` is negative.
    signs: u16,
}

impl Record {
    fn of(codes: &[u8; SUPER], lane: usize) -> Self {
        let code = |k: usize| codes[lane_element(lane, k)];
        let mut rec = Self { words: [0; WORDS], signs: 0 };
        for i in 0..LOOKUPS {
            let nibble = if i < TRIPLES {
                let w = |k: usize| i32::from(code(3 * i + k)) - 1;
                let v = 9 * w(0) + 3 * w(1) + w(2);
                rec.signs |= u16::from(v < 0) << i;
                v.unsigned_abs() as u16
            } else {
                u16::from(3 * code(30) + code(31))
            };
            rec.words[i / 4] |= (nibble & 15) << (4 * (i % 4));
        }
        rec
    }
}

/// The tables of every activation row: built once per matmul, read by every group.
#[derive(Debug, Clone, Default)]
pub struct LutTables {
    /// `[row][super][lane][lookup][TABLE]`.
    pub t: Vec<i16>,
    /// `[row][super][lane]`: `Σ_lane a − Σ_block a` (ggml's lane offset).
    pub corr: Vec<i32>,
}

impl LutTables {
    /// Builds the tables of `a`: per table three multiply-adds of 16
    /// `i16` lanes with constant digit vectors, which the compiler
    /// vectorizes (about 1 µs per 2048 activations).
    #[must_use]
    pub fn build(a: &QuantizedActs) -> Self {
        let supers = a.cols / SUPER;
        let mut out = Self { t: vec![0; a.n * supers * LANES * LOOKUPS * TABLE], corr: vec![0; a.n * supers * LANES] };
        for t in 0..a.n {
            let x = a.row(t);
            for s in 0..supers {
                for lane in 0..LANES {
                    let rec = (t * supers + s) * LANES + lane;
                    let xa: [i16; 32] = std::array::from_fn(|k| i16::from(x[s * SUPER + lane_element(lane, k)]));
                    let lane_sum: i32 = xa.iter().map(|&v| i32::from(v)).sum();
                    out.corr[rec] = lane_sum - a.sub_sum(t, s * (SUPER / 32) + lane, 32);
                    let tables = &mut out.t[rec * LOOKUPS * TABLE..][..LOOKUPS * TABLE];
                    for (i, table) in tables.chunks_exact_mut(TABLE).enumerate() {
                        let (digits, x3) = if i < TRIPLES {
                            (&TRIPLE_DIGITS, [xa[3 * i], xa[3 * i + 1], xa[3 * i + 2]])
                        } else {
                            (&PAIR_DIGITS, [xa[30], xa[31], 0])
                        };
                        let mut v = [0i16; 16];
                        for (e, v) in v.iter_mut().enumerate() {
                            *v = digits[0][e] * x3[0] + digits[1][e] * x3[1] + digits[2][e] * x3[2];
                        }
                        table[..16].copy_from_slice(&v);
                        table[16..].copy_from_slice(&v);
                    }
                }
            }
        }
        out
    }

    fn table(&self, supers: usize, t: usize, s: usize, lane: usize, i: usize) -> &[i16] {
        &self.t[(((t * supers + s) * LANES + lane) * LOOKUPS + i) * TABLE..][..TABLE]
    }
}

/// The family's specification: row `r` of `m` against activation row `t`
/// by lookups; equals `ternary::row_dot` on the source matrix bit for bit.
#[must_use]
pub fn row_dot(m: &LutMatrix, r: usize, tables: &LutTables, a: &QuantizedActs, t: usize) -> f32 {
    let supers = m.cols / SUPER;
    let (g, row) = (r / ROWS, r % ROWS);
    let mut lanes = [0f32; LANES];
    for s in 0..supers {
        let d = m.scales.get((g * supers + s) * ROWS + row) * a.scale(t, s * SUPER / 32);
        for (lane, acc) in lanes.iter_mut().enumerate() {
            let rec = (g * supers + s) * LANES + lane;
            let mut isum = tables.corr[(t * supers + s) * LANES + lane];
            for i in 0..LOOKUPS {
                let nibble = (m.idx[(rec * WORDS + i / 4) * ROWS + row] >> (4 * (i % 4))) & 15;
                let v = i32::from(tables.table(supers, t, s, lane, i)[usize::from(nibble)]);
                let negative = i < TRIPLES && m.signs[rec * TRIPLES + i] >> row & 1 == 1;
                isum += if negative { -v } else { v };
            }
            *acc = (isum as f32).mul_add(d, *acc);
        }
    }
    super::ternary::sum_lanes(&lanes)
}

/// `out[t * m.rows + r]` for every row, by [`row_dot`].
///
/// # Panics
/// When shapes disagree.
pub fn gemm_reference(m: &LutMatrix, tables: &LutTables, a: &QuantizedActs, out: &mut [f32]) {
    assert!(a.cols == m.cols && out.len() >= a.n * m.rows);
    for t in 0..a.n {
        for r in 0..m.rows {
            out[t * m.rows + r] = row_dot(m, r, tables, a, t);
        }
    }
}

/// `kernel(m, g, tables, a, out)`: group `g` of `m` against every row of `a`.
pub type LutGroupFn = fn(&LutMatrix, usize, &LutTables, &QuantizedActs, &crate::pool::SharedOut);

pub(crate) fn group_reference(
    m: &LutMatrix,
    g: usize,
    tables: &LutTables,
    a: &QuantizedActs,
    out: &crate::pool::SharedOut,
) {
    for r in g * ROWS..((g + 1) * ROWS).min(m.rows) {
        for t in 0..a.n {
            // SAFETY: one output element, owned by this group's task.
            #[allow(unsafe_code)]
            let dst = unsafe { out.slice(t * m.rows + r, 1) };
            dst[0] = row_dot(m, r, tables, a, t);
        }
    }
}

/// Every kernel of the family this CPU runs, by name, the fastest last.
#[must_use]
pub fn kernel_variants() -> Vec<(&'static str, LutGroupFn)> {
    let mut v: Vec<(&'static str, LutGroupFn)> = vec![("scalar", group_reference)];
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        #[allow(unsafe_code)]
        fn avx512(m: &LutMatrix, g: usize, tables: &LutTables, a: &QuantizedActs, out: &crate::pool::SharedOut) {
            // SAFETY: listed only when the features are present.
            unsafe { super::ternary_lut_x86::group_avx512(m, g, tables, a, out) }
        }
        v.push(("avx512bw", avx512));
    }
    v
}
