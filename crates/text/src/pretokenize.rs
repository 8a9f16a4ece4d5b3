//! Pre-tokenizer split patterns by `tokenizer.ggml.pre` name. The regexes are
//! the published ones of each model family (as llama.cpp lists them in
//! `llama-vocab.cpp`); this table maps GGUF names to them.

/// GPT-2's pattern (also the tail of several others).
pub const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// OpenAI's o200k pattern (gpt-oss, `gpt-4o`), as its `tokenizer.json` has it.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken pattern (Mistral NeMo, Small 3, Ministral), as its `tokenizer.json` has it.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
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
        "gpt-4o" | "minimax-m2" => vec![GPT4O],
        "tekken" => vec![TEKKEN],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::patterns;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior};

    fn split(pre: &str, text: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(text);
        for p in patterns(pre).expect("known") {
            let split = Split::new(SplitPattern::Regex(p.to_owned()), SplitDelimiterBehavior::Isolated, false)
                .expect("pattern compiles");
            split.pre_tokenize(&mut s).expect("splits");
        }
        s.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(t, _, _)| t.to_owned()).collect()
    }

    /// o200k keeps case runs apart, attaches contractions case-insensitively
    /// and groups digits by three; Tekken splits digits one by one.
    #[test]
    fn gpt4o_and_tekken_split_as_their_tokenizers() {
        assert_eq!(
            split("gpt-4o", "HelloWORLD DON'T 12345 x/\n"),
            ["Hello", "WORLD", " DON'T", " ", "123", "45", " x", "/\n"]
        );
        assert_eq!(split("tekken", "Hello 123"), ["Hello", " ", "1", "2", "3"]);
    }
}
