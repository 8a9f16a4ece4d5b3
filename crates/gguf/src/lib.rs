//! GGUF files: a reader that memory-maps the file and hands out zero-copy
//! tensor views, and a writer used to generate test models.
//!
//! The reader treats every byte as hostile: all counts, lengths, offsets and
//! dimensions are checked against the file size before use, no allocation is
//! sized by an untrusted number alone, and every failure is a typed
//! [`GgufError`] naming what was wrong and where.
#![allow(unsafe_code)] // memory-mapping the file; see the SAFETY note in `reader.rs`.

mod error;
mod metadata;
mod reader;
mod writer;

pub use error::GgufError;
pub use metadata::{MetaValue, MetaValueType};
pub use reader::{GgufFile, TensorInfo};
pub use writer::GgufWriter;

/// "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
