//! Pre-tokenizer split patterns by `tokenizer.ggml.pre` name. The regexes are
//! the published ones of each model family (as llama.cpp lists them in
//! `llama-vocab.cpp`); this table maps GGUF names to them.

/// GPT-2's pattern (also the tail of several others).
pub const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Each digit on its own, before the GPT-2 pattern.
const SINGLE_DIGITS: &str = r"\p{N}";

/// The split patterns applied in order for `pre`, or `None` if unknown.
#[must_use]
pub fn patterns(pre: &str) -> Option<Vec<&'static str>> {
    Some(match pre {
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => vec![GPT2],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![SINGLE_DIGITS, GPT2]
        }
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "dbrx" => vec![LLAMA3],
        "qwen2" | "deepseek-r1-qwen" | "qwen35" | "stablelm2" | "hunyuan" => vec![QWEN2],
        _ => return None,
    })
}
