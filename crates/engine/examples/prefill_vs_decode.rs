//! Diagnostic: the last prompt token's logits via one batched prefill vs.
//! token-by-token decode must agree (up to rounding).
use hearth_core::{ForwardBatch, SeqId};
use hearth_engine::batching::EngineConfig;
use hearth_engine::LoadedModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let s = LoadedModel::load(&hearth_testutil::catalog().resolve(&args[1])?, hearth_testutil::cpu_backend())?;
    let tokens = s.tokenizer.encode(&args[2], true)?;
    let mut kv = s.new_cache(&EngineConfig::single(1024))?;
    let batched = s.prefill(&mut kv, SeqId(0), &tokens, 0)?;
    let mut kv = s.new_cache(&EngineConfig::single(1024))?;
    let mut stepwise = Vec::new();
    for (pos, &t) in tokens.iter().enumerate() {
        stepwise = kv.forward(s.model.as_ref(), ForwardBatch::single(SeqId(0), &[t], pos))?;
    }
    let max_diff = batched.iter().zip(&stepwise).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let top = hearth_sampling::argmax(&batched) as usize;
    println!("max |diff| = {max_diff}; top token {top}: batched {} stepwise {}", batched[top], stepwise[top]);
    Ok(())
}
