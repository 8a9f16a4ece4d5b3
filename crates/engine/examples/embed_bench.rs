//! Embedding throughput: sentences/s in batches of 32 (one packed pass
//! each), over the first 512 non-empty lines of a text file. Prints one
//! JSON line. Usage: `embed_bench MODEL_DIR TEXT_FILE [THREADS]`.
//! `scripts/embed_bench.py` runs sentence-transformers on the same lines.

use std::sync::Arc;
use std::time::Instant;

use hearth_cpu::{CpuBackend, CpuOptions, KernelChoice, TernaryLayout};
use hearth_engine::embed::EmbeddingModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, file) = (args.get(1).ok_or("model dir")?, args.get(2).ok_or("text file")?);
    let threads = args.get(3).and_then(|t| t.parse().ok());
    let backend = Arc::new(CpuBackend::new(CpuOptions { threads, kernels: KernelChoice::Best, ternary: TernaryLayout::MaskedVnni })?);
    let model = EmbeddingModel::load(std::path::Path::new(dir), backend)?;
    let text = std::fs::read_to_string(file)?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(512).collect();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        for batch in lines.chunks(32) {
            let seqs: Vec<Vec<u32>> = batch.iter().map(|l| model.truncate(model.tokenize(l).expect("tokenize"))).collect();
            model.embed_tokens(&seqs)?;
        }
        rates.push(lines.len() as f64 / t0.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(r#"{{"engine": "hearth", "sentences": {}, "batch": 32, "sentences_per_s": {:.1}}}"#, lines.len(), rates[2]);
    Ok(())
}
