//! The ggml tensor types as they appear in GGUF files, with their block
//! geometry. Numbers follow ggml's `ggml.h` / `ggml.c` type traits table.

use std::fmt;

/// A tensor element type as stored in a GGUF file.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    /// bitnet.cpp's 2-bit ternary type: codes only, one f32 scale per tensor
    /// in a 32-byte trailer after the last row (see [`GgmlType::trailer_bytes`]).
    I2_S = 36,
    /// OCP microscaling FP4 (gpt-oss experts): per 32 values one E8M0
    /// exponent byte and 16 bytes of E2M1 nibbles.
    MXFP4 = 39,
}

/// A type id that this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown ggml tensor type id {0}")]
pub struct UnknownGgmlType(pub u32);

impl TryFrom<u32> for GgmlType {
    type Error = UnknownGgmlType;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        use GgmlType as T;
        Ok(match v {
            0 => T::F32,
            1 => T::F16,
            2 => T::Q4_0,
            3 => T::Q4_1,
            6 => T::Q5_0,
            7 => T::Q5_1,
            8 => T::Q8_0,
            9 => T::Q8_1,
            10 => T::Q2_K,
            11 => T::Q3_K,
            12 => T::Q4_K,
            13 => T::Q5_K,
            14 => T::Q6_K,
            15 => T::Q8_K,
            16 => T::IQ2_XXS,
            17 => T::IQ2_XS,
            18 => T::IQ3_XXS,
            19 => T::IQ1_S,
            20 => T::IQ4_NL,
            21 => T::IQ3_S,
            22 => T::IQ2_S,
            23 => T::IQ4_XS,
            24 => T::I8,
            25 => T::I16,
            26 => T::I32,
            27 => T::I64,
            28 => T::F64,
            29 => T::IQ1_M,
            30 => T::BF16,
            34 => T::TQ1_0,
            35 => T::TQ2_0,
            36 => T::I2_S,
            39 => T::MXFP4,
            other => return Err(UnknownGgmlType(other)),
        })
    }
}

impl GgmlType {
    /// Elements per quantization block (1 for plain types).
    #[must_use]
    pub const fn block_size(self) -> usize {
        use GgmlType as T;
        match self {
            T::F32 | T::F16 | T::BF16 | T::I8 | T::I16 | T::I32 | T::I64 | T::F64 => 1,
            T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q8_1 | T::IQ4_NL | T::MXFP4 => 32,
            T::I2_S => 128,
            _ => 256,
        }
    }

    /// Bytes per quantization block.
    #[must_use]
    pub const fn type_size(self) -> usize {
        use GgmlType as T;
        match self {
            T::F32 | T::I32 => 4,
            T::F16 | T::BF16 | T::I16 => 2,
            T::I8 => 1,
            T::I64 | T::F64 => 8,
            T::Q4_0 | T::IQ4_NL => 18,
            T::Q4_1 => 20,
            T::Q5_0 => 22,
            T::Q5_1 => 24,
            T::Q8_0 => 34,
            T::Q8_1 => 36,
            T::Q2_K => 84,
            T::Q3_K | T::IQ3_S => 110,
            T::Q4_K => 144,
            T::Q5_K => 176,
            T::Q6_K => 210,
            T::Q8_K => 292,
            T::IQ2_XXS | T::TQ2_0 => 66,
            T::IQ2_XS => 74,
            T::IQ3_XXS => 98,
            T::IQ1_S => 50,
            T::IQ2_S => 82,
            T::IQ4_XS => 136,
            T::IQ1_M => 56,
            T::TQ1_0 => 54,
            T::I2_S => 32,
            T::MXFP4 => 17,
        }
    }

    /// Bytes needed for a row of `n` elements, or `None` when `n` is not a
    /// multiple of the block size or the size overflows.
    #[must_use]
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Bytes stored after a tensor's last row: `I2_S` keeps its one f32
    /// scale there, padded to 32 bytes (bitnet.cpp's `ggml_nbytes`).
    #[must_use]
    pub const fn trailer_bytes(self) -> usize {
        match self {
            Self::I2_S => 32,
            _ => 0,
        }
    }

    /// Bytes of a tensor of `rows` rows of `row` elements, trailer included,
    /// or `None` when a row is not whole blocks or the size overflows.
    #[must_use]
    pub fn tensor_bytes(self, row: usize, rows: u64) -> Option<u64> {
        let row_bytes = u64::try_from(self.row_bytes(row)?).ok()?;
        row_bytes.checked_mul(rows)?.checked_add(self.trailer_bytes() as u64)
    }

    /// The name ggml uses (`Q4_K`, `F16`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        use GgmlType as T;
        match self {
            T::F32 => "F32",
            T::F16 => "F16",
            T::Q4_0 => "Q4_0",
            T::Q4_1 => "Q4_1",
            T::Q5_0 => "Q5_0",
            T::Q5_1 => "Q5_1",
            T::Q8_0 => "Q8_0",
            T::Q8_1 => "Q8_1",
            T::Q2_K => "Q2_K",
            T::Q3_K => "Q3_K",
            T::Q4_K => "Q4_K",
            T::Q5_K => "Q5_K",
            T::Q6_K => "Q6_K",
            T::Q8_K => "Q8_K",
            T::IQ2_XXS => "IQ2_XXS",
            T::IQ2_XS => "IQ2_XS",
            T::IQ3_XXS => "IQ3_XXS",
            T::IQ1_S => "IQ1_S",
            T::IQ4_NL => "IQ4_NL",
            T::IQ3_S => "IQ3_S",
            T::IQ2_S => "IQ2_S",
            T::IQ4_XS => "IQ4_XS",
            T::I8 => "I8",
            T::I16 => "I16",
            T::I32 => "I32",
            T::I64 => "I64",
            T::F64 => "F64",
            T::IQ1_M => "IQ1_M",
            T::BF16 => "BF16",
            T::TQ1_0 => "TQ1_0",
            T::TQ2_0 => "TQ2_0",
            T::I2_S => "I2_S",
            T::MXFP4 => "MXFP4",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_round_trips() {
        for id in 0..64 {
            if let Ok(t) = GgmlType::try_from(id) {
                assert_eq!(t as u32, id);
                assert!(t.type_size() > 0);
            }
        }
    }

    #[test]
    fn row_bytes_rejects_partial_blocks() {
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(100), None);
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
    }
}
