//! `hearth show`: what is inside a model file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
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
    Ok(())
}

fn display(v: &MetaValue) -> String {
    match v {
        MetaValue::String(s) => s.clone(),
        MetaValue::Array(_, items) => format!("[{} items]", items.len()),
        other => other.as_f64().map_or_else(|| format!("{other:?}"), |x| format!("{x}")),
    }
}
