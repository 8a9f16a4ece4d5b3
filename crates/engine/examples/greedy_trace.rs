//! Prints, for each greedy step, the chosen token and the top-3 logits:
//! a diagnostic for numeric divergence from a reference engine.
//! Usage: cargo run --release -p hearth-engine --example greedy_trace -- MODEL "PROMPT" [N]

use hearth_core::{ForwardBatch, SeqId};
use hearth_engine::batching::EngineConfig;
use hearth_engine::LoadedModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, prompt) = (args.get(1).ok_or("MODEL")?, args.get(2).ok_or("PROMPT")?);
    let n: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let s = LoadedModel::load(&hearth_testutil::catalog().resolve(model)?, hearth_testutil::cpu_backend())?;
    let tokens = s.tokenizer.encode(prompt, true)?;
    println!("prompt ids: {tokens:?}");
    let mut kv = s.new_cache(&EngineConfig::single(1024))?;
    let mut logits = s.prefill(&mut kv, SeqId(0), &tokens, 0)?;
    for pos in tokens.len()..tokens.len() + n {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<String> =
            idx[..3].iter().map(|&i| format!("{i}:{:?}={:.4}", s.tokenizer.decode(&[i as u32]), logits[i])).collect();
        println!("{pos}: {}", top.join("  "));
        logits = kv.forward(s.model.as_ref(), ForwardBatch::single(SeqId(0), &[idx[0] as u32], pos))?;
    }
    Ok(())
}
