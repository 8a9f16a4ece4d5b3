//! `hearth show`: what is inside a model file, and whether this build can
//! run it — said from the metadata and the tensor table, before any weight
//! is read.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hearth_gguf::{GgufFile, MetaValue};

/// Prints a summary of the model at `path`.
pub fn show(path: &Path) -> Result<()> {
    let f = GgufFile::open(path).with_context(|| path.display().to_string())?;
    let arch = f.get_str("general.architecture").unwrap_or("?").to_owned();
    let meta_str = |k: &str| f.get(k).map_or_else(|| "-".to_owned(), display);
    outln!("file          {}", path.display());
    outln!("name          {}", meta_str("general.name"));
    outln!("architecture  {arch}");
    let params: u64 = f.tensors().iter().map(hearth_gguf::TensorInfo::n_elements).sum();
    outln!("parameters    {:.1} M", params as f64 / 1e6);
    outln!("context       {}", meta_str(&format!("{arch}.context_length")));
    outln!("embedding     {}", meta_str(&format!("{arch}.embedding_length")));
    outln!("layers        {}", meta_str(&format!("{arch}.block_count")));
    outln!(
        "heads         {} (kv {})",
        meta_str(&format!("{arch}.attention.head_count")),
        meta_str(&format!("{arch}.attention.head_count_kv"))
    );
    outln!("tokenizer     {} (pre {})", meta_str("tokenizer.ggml.model"), meta_str("tokenizer.ggml.pre"));
    let mut types: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in f.tensors() {
        let e = types.entry(t.ty.name().to_owned()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let summary: Vec<String> =
        types.iter().map(|(k, (n, b))| format!("{k} ×{n} ({:.1} MB)", *b as f64 / 1e6)).collect();
    outln!("tensor types  {}", summary.join(", "));
    let template = f.get("tokenizer.chat_template").and_then(MetaValue::as_str);
    let template = template
        .map_or_else(|| "none in file (built-in used)".to_owned(), |t| format!("from file ({} chars)", t.len()));
    outln!("template      {template}");
    let missing = unsupported(&f, &arch, &types);
    if missing.is_empty() {
        outln!("supported     yes");
        return Ok(());
    }
    outln!("supported     no: {}", missing.join("; "));
    bail!("{} cannot be run by this build: {}", path.display(), missing.join("; "))
}

/// What in `f` this build cannot run: the architecture, tensor types, the
/// tokenizer model. Empty when everything is supported.
fn unsupported(f: &GgufFile, arch: &str, types: &BTreeMap<String, (usize, usize)>) -> Vec<String> {
    let mut missing = Vec::new();
    // An encoder: `hearth embed` and `serve --embedding-model` run it.
    let encoder = hearth_models::bert::ENCODER_ARCHITECTURES.contains(&arch);
    if !encoder && !hearth_models::SUPPORTED_ARCHITECTURES.contains(&arch) {
        missing
            .push(format!("architecture {arch:?} (supported: {})", hearth_models::SUPPORTED_ARCHITECTURES.join(", ")));
    }
    let mut bad_types: Vec<String> = Vec::new();
    for t in f.tensors() {
        if !hearth_cpu::kernels::reference::is_supported(t.ty) && !bad_types.iter().any(|b| b == t.ty.name()) {
            bad_types.push(t.ty.name().to_owned());
        }
    }
    if !bad_types.is_empty() {
        let described: Vec<String> =
            bad_types.iter().map(|n| format!("{n} (×{})", types.get(n).map_or(0, |(count, _)| *count))).collect();
        missing.push(format!("tensor types {}", described.join(", ")));
    }
    let tokenizer = f.get("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or("none");
    let known = matches!(tokenizer, "gpt2" | "llama") || (encoder && tokenizer == "bert");
    if !known {
        missing.push(format!("tokenizer model {tokenizer:?} (supported: gpt2, llama; bert for encoders)"));
    }
    missing
}

fn display(v: &MetaValue) -> String {
    match v {
        MetaValue::String(s) => s.clone(),
        MetaValue::Array(_, items) => format!("[{} items]", items.len()),
        other => other.as_f64().map_or_else(|| format!("{other:?}"), |x| format!("{x}")),
    }
}
