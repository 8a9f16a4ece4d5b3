//! Grammars walked at random: at each step a random token among those the
//! mask allows (SmolLM2's real vocabulary, no model), until the guide says
//! the output is complete. Whatever path is taken, the output must match.

use std::sync::Arc;

use hearth_constrain::{Constraint, Grammars, Progress};
use hearth_text::Tokenizer;

fn grammars() -> (Grammars, Arc<Tokenizer>) {
    let file = hearth_gguf::GgufFile::open(hearth_testutil::real_model("smollm2")).expect("gguf");
    let tok = Arc::new(Tokenizer::from_gguf(&file).expect("tokenizer"));
    (Grammars::new(Arc::clone(&tok)).expect("grammars"), tok)
}

/// Walks `c` with a xorshift RNG from `seed`; returns the text, or None when
/// it did not end within `limit` tokens.
fn walk(g: &Grammars, tok: &Tokenizer, c: &Constraint, seed: u64, limit: usize) -> Option<String> {
    let mut guide = g.compile(c).expect("compiles");
    let n = tok.vocab_size();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut text = Vec::new();
    for _ in 0..limit {
        let mut logits = vec![0.0f32; n];
        guide.apply(&mut logits).expect("mask");
        let allowed: Vec<u32> = (0..n as u32).filter(|&t| logits[t as usize].is_finite()).collect();
        assert!(!allowed.is_empty(), "a mask allowed nothing after {:?}", String::from_utf8_lossy(&text));
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Prefer short tokens a little less often than uniform: uniform over a 49k vocabulary.
        let t = allowed[(state % allowed.len() as u64) as usize];
        if tok.is_end_of_generation(t) {
            return Some(String::from_utf8_lossy(&text).into_owned());
        }
        text.extend_from_slice(tok.token_bytes(t));
        if guide.accept(t).expect("accepted") == Progress::Complete {
            return Some(String::from_utf8_lossy(&text).into_owned());
        }
    }
    None
}

#[test]
fn random_walks_through_json_schemas_always_validate() {
    let (g, tok) = grammars();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "n": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            "tree": {"$ref": "#/$defs/node"}
        },
        "required": ["n", "tags", "tree"],
        "additionalProperties": false,
        "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["kids"], "additionalProperties": false}}
    });
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    for seed in 0..20 {
        let text = walk(&g, &tok, &Constraint::JsonSchema(schema.clone()), seed, 3000).expect("ends");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(validator.is_valid(&v), "{text}");
    }
}

#[test]
fn after_thinking_the_answer_still_validates() {
    use hearth_constrain::after_thinking;
    use hearth_text::reasoning::PromptEnd;
    let (g, tok) = grammars();
    let schema = serde_json::json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false});
    for (start, seed) in [(PromptEnd::Open, 1), (PromptEnd::Open, 2), (PromptEnd::InThoughts, 3), (PromptEnd::InThoughts, 4)] {
        let c = after_thinking(&Constraint::JsonSchema(schema.clone()), start, Some(12));
        let text = walk(&g, &tok, &c, seed, 400).unwrap_or_else(|| panic!("{start:?} {seed}: no end"));
        if start == PromptEnd::InThoughts || text.starts_with("<think>") {
            assert!(text.contains("</think>"), "the budget must close the thoughts: {text:?}");
        }
        let answer = text.rsplit_once("</think>").map_or(text.as_str(), |(_, a)| a).trim_start();
        let v: serde_json::Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v["ok"].is_boolean(), "{text:?}");
    }
}
