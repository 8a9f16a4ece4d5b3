use hearth_core::UnknownGgmlType;

/// Everything that can be wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read GGUF file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file: bad magic {found:#010x} (expected \"GGUF\")")]
    BadMagic { found: u32 },
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated: needed {needed} bytes at offset {offset} while reading {what}, file has {len}")]
    Truncated { what: String, offset: usize, needed: usize, len: usize },
    #[error("{what} count {count} is impossible for a file of {len} bytes")]
    AbsurdCount { what: &'static str, count: u64, len: usize },
    #[error("metadata key {key:?}: invalid value type id {type_id}")]
    BadValueType { key: String, type_id: u32 },
    #[error("metadata key {key:?}: arrays nested deeper than {max}")]
    NestingTooDeep { key: String, max: usize },
    #[error("string at offset {offset} is not valid UTF-8")]
    BadUtf8 { offset: usize },
    #[error("tensor {name:?}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("tensor {name:?}: {source}")]
    UnknownType { name: String, source: UnknownGgmlType },
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("invalid general.alignment {0} (must be a power of two, 1..=65536)")]
    BadAlignment(u64),
    #[error("metadata key {key:?} missing")]
    MissingKey { key: String },
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType { key: String, found: &'static str, expected: &'static str },
    #[error("tensor {0:?} not found")]
    MissingTensor(String),
}
