//! Writing GGUF v3 files: used to generate random-weight test models.

use std::io::Write;

use hearth_core::GgmlType;

use crate::{MetaValue, MetaValueType, DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// Builds a GGUF v3 image: add metadata and tensors, then [`GgufWriter::to_bytes`].
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty writer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a metadata value.
    pub fn set(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor with dims in ggml order and already-encoded `data`.
    ///
    /// # Panics
    /// When `data` does not match the size implied by `dims` and `ty` (a bug in the caller).
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        let n: u64 = dims.iter().product();
        let rows = n / dims[0];
        let size = ty.tensor_bytes(dims[0] as usize, rows).expect("row is a whole number of blocks"); // ok: caller-built tensors, documented panic
        assert_eq!(data.len() as u64, size, "tensor {name}: data size mismatch");
        self.tensors.push((name.to_owned(), dims.to_vec(), ty, data));
        self
    }

    /// Serializes the file.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend_from_slice(&(value_type(v) as u32).to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            write_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&(*ty as u32).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(DEFAULT_ALIGNMENT as u64) * DEFAULT_ALIGNMENT as u64;
        }
        pad(&mut out);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            pad(&mut out);
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(&self.to_bytes())
    }
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(DEFAULT_ALIGNMENT) {
        out.push(0);
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> MetaValueType {
    match v {
        MetaValue::U8(_) => MetaValueType::U8,
        MetaValue::I8(_) => MetaValueType::I8,
        MetaValue::U16(_) => MetaValueType::U16,
        MetaValue::I16(_) => MetaValueType::I16,
        MetaValue::U32(_) => MetaValueType::U32,
        MetaValue::I32(_) => MetaValueType::I32,
        MetaValue::F32(_) => MetaValueType::F32,
        MetaValue::Bool(_) => MetaValueType::Bool,
        MetaValue::String(_) => MetaValueType::String,
        MetaValue::Array(..) => MetaValueType::Array,
        MetaValue::U64(_) => MetaValueType::U64,
        MetaValue::I64(_) => MetaValueType::I64,
        MetaValue::F64(_) => MetaValueType::F64,
    }
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => write_str(out, s),
        MetaValue::Array(elem, items) => {
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
