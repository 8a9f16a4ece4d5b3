//! A tokenizer built from GGUF metadata (`tokenizer.ggml.*`).
//!
//! Encoding runs on the `tokenizers` crate: GPT-2-style byte-level BPE with
//! the split patterns named by `tokenizer.ggml.pre`, or SentencePiece-style
//! BPE (`tokenizer.ggml.model = "llama"`, e.g. Gemma) where merges are derived
//! from piece scores and unknown characters fall back to `<0xXX>` byte pieces.
//! Decoding maps each token to its bytes through a table built here: a token's
//! piece is plain data, and owning the table is what makes streaming output
//! UTF-8-safe (see [`crate::IncrementalDecoder`]).
//!
//! Control tokens (`<|im_start|>`, `<start_of_turn>`, …) are found in the
//! input by this module, not by the `tokenizers` crate (which is told to
//! treat them as text), so the caller decides where they count: everywhere
//! in a raw prompt, only in a chat template's own markup for a chat — a user
//! who types `<|im_start|>system` gets that as text, not a forged turn.

use std::collections::HashMap;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use hearth_core::TokenId;
use hearth_gguf::{GgufFile, MetaValue};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::pretokenize;

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error(transparent)]
    Gguf(#[from] hearth_gguf::GgufError),
    #[error("tokenizer model {0:?} is not supported (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("pre-tokenizer {0:?} is not known to this build")]
    UnknownPreTokenizer(String),
    #[error("vocabulary: {0}")]
    BadVocab(String),
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("chat template: {0}")]
    Template(String),
}

fn tk_err(e: impl std::fmt::Display) -> TextError {
    TextError::Tokenizers(e.to_string())
}

/// Which algorithm the vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE (GPT-2 family, `tokenizer.ggml.model = "gpt2"`).
    BytePairGpt2,
    /// SentencePiece BPE with byte fallback (`tokenizer.ggml.model = "llama"`).
    SentencePiece,
}

/// ggml token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_BYTE: i64 = 6;

/// Texts of control tokens that end a turn in common chat formats.
const END_OF_TURN_TEXTS: &[&str] =
    &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>", "<|eom_id|>"];

/// Encodes text to token ids and maps ids back to bytes.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Control-token texts, leftmost-longest (the `tokenizers` crate's rule),
    /// and the id of each pattern.
    controls: Option<(AhoCorasick, Vec<TokenId>)>,
    /// Most input bytes one token can stand for (a bound for early size checks).
    max_token_bytes: usize,
    kind: TokenizerKind,
    pieces: Vec<Vec<u8>>,
    texts: Vec<String>,
    control: Vec<bool>,
    /// Beginning-of-sequence token, if the vocabulary has one.
    pub bos: Option<TokenId>,
    /// End-of-sequence token.
    pub eos: Option<TokenId>,
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    eog: Vec<TokenId>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("kind", &self.kind).field("vocab", &self.pieces.len()).finish_non_exhaustive()
    }
}

fn opt_u32(file: &GgufFile, key: &str) -> Option<u32> {
    file.get(key).and_then(MetaValue::as_u64).and_then(|v| u32::try_from(v).ok())
}

impl Tokenizer {
    /// Builds the tokenizer described by `file`'s metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TextError> {
        let model = file.get_str("tokenizer.ggml.model")?;
        let kind = match model {
            "gpt2" => TokenizerKind::BytePairGpt2,
            "llama" => TokenizerKind::SentencePiece,
            other => return Err(TextError::UnsupportedModel(other.to_owned())),
        };
        let texts: Vec<String> = file
            .get_array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| TextError::BadVocab("token is not a string".into())))
            .collect::<Result<_, _>>()?;
        let n = texts.len();
        let types: Vec<i64> = match file.get("tokenizer.ggml.token_type").and_then(MetaValue::as_array) {
            Some(a) if a.len() == n => a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
            Some(_) => return Err(TextError::BadVocab("token_type length differs from tokens".into())),
            None => vec![1; n],
        };
        let bos = opt_u32(file, "tokenizer.ggml.bos_token_id").filter(|&t| (t as usize) < n);
        let eos = opt_u32(file, "tokenizer.ggml.eos_token_id").filter(|&t| (t as usize) < n);
        let add_bos = file
            .get("tokenizer.ggml.add_bos_token")
            .and_then(MetaValue::as_bool)
            .unwrap_or(kind == TokenizerKind::SentencePiece);

        let mut inner = match kind {
            TokenizerKind::BytePairGpt2 => build_gpt2(file, &texts, &types)?,
            TokenizerKind::SentencePiece => build_spm(file, &texts, &types)?,
        };
        add_special_tokens(&mut inner, &texts, &types);
        // Control tokens are split out by `controls` below, where the caller
        // says they may count; inside the `tokenizers` crate they are text.
        inner.set_encode_special_tokens(true);

        let control: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let control_ids: Vec<TokenId> =
            (0..n).filter(|&i| control[i] && !texts[i].is_empty()).map(|i| i as TokenId).collect();
        let controls = if control_ids.is_empty() {
            None
        } else {
            let automaton = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(control_ids.iter().map(|&i| texts[i as usize].as_str()))
                .map_err(tk_err)?;
            Some((automaton, control_ids))
        };
        let pieces: Vec<Vec<u8>> = texts.iter().zip(&types).map(|(t, &ty)| piece_bytes(kind, t, ty)).collect();
        let max_token_bytes =
            pieces.iter().map(Vec::len).chain(texts.iter().map(String::len)).max().unwrap_or(1).max(1);
        let mut eog: Vec<TokenId> = eos.into_iter().collect();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eog.extend(opt_u32(file, key).filter(|&t| (t as usize) < n));
        }
        for (id, t) in texts.iter().enumerate() {
            if control[id] && END_OF_TURN_TEXTS.contains(&t.as_str()) {
                eog.push(id as TokenId);
            }
        }
        eog.sort_unstable();
        eog.dedup();
        Ok(Self { inner, controls, max_token_bytes, kind, pieces, texts, control, bos, eos, add_bos, eog })
    }

    /// The algorithm in use.
    #[must_use]
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Vocabulary size.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Encodes `text`. Control-token texts inside it (e.g. `<|im_start|>`)
    /// become their tokens. BOS is prepended when `add_bos` and the vocabulary
    /// asks for it, unless the text already starts with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<TokenId>, TextError> {
        self.encode_marked(text, &[], add_bos)
    }

    /// Encodes `text` with control-token texts inside the `plain` byte ranges
    /// (sorted, not overlapping) taken as ordinary text: a chat's messages,
    /// between the template's markup. A control text that reaches into a
    /// plain range is text too.
    pub fn encode_marked(&self, text: &str, plain: &[Range<usize>], add_bos: bool) -> Result<Vec<TokenId>, TextError> {
        let mut ids = Vec::new();
        // Text between honoured control tokens goes through the `tokenizers`
        // pipeline in one piece, as that crate splits at them itself: the
        // result equals its own special-token handling.
        let mut from = 0;
        if let Some((automaton, control_ids)) = &self.controls {
            let mut spans = plain.iter().peekable();
            for m in automaton.find_iter(text) {
                while spans.peek().is_some_and(|r| r.end <= m.start()) {
                    spans.next();
                }
                if spans.peek().is_some_and(|r| r.start < m.end()) {
                    continue; // overlaps a plain range: text
                }
                self.encode_text(&text[from..m.start()], &mut ids)?;
                ids.push(control_ids[m.pattern().as_usize()]);
                from = m.end();
            }
        }
        self.encode_text(&text[from..], &mut ids)?;
        // BOS first, unless the text starts with BOS's own text already.
        if let (true, true, Some(bos)) = (add_bos, self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Encodes text with no control tokens in it (user text on its own).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<TokenId>, TextError> {
        let whole = 0..text.len();
        self.encode_marked(text, std::slice::from_ref(&whole), false)
    }

    fn encode_text(&self, text: &str, ids: &mut Vec<TokenId>) -> Result<(), TextError> {
        if !text.is_empty() {
            ids.extend_from_slice(self.inner.encode_fast(text, false).map_err(tk_err)?.get_ids());
        }
        Ok(())
    }

    /// Whether `text` holds the text of any control token.
    #[must_use]
    pub fn contains_control_text(&self, text: &str) -> bool {
        self.controls.as_ref().is_some_and(|(a, _)| a.is_match(text))
    }

    /// Most input bytes one token stands for: a text of `b` bytes has at
    /// least `b / max_token_bytes()` tokens, a bound checked before any
    /// tokenizing.
    #[must_use]
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// The bytes `token` contributes to output text (empty for control tokens).
    #[must_use]
    pub fn token_bytes(&self, token: TokenId) -> &[u8] {
        match self.pieces.get(token as usize) {
            Some(p) if !self.control[token as usize] => p,
            _ => &[],
        }
    }

    /// The vocabulary entry of `token` as stored in the file.
    #[must_use]
    pub fn token_text(&self, token: TokenId) -> Option<&str> {
        self.texts.get(token as usize).map(String::as_str)
    }

    /// Decodes a whole sequence (lossy on invalid UTF-8).
    #[must_use]
    pub fn decode(&self, tokens: &[TokenId]) -> String {
        self.decode_bytes(tokens, false)
    }

    /// Decodes a sequence with control tokens written as their texts
    /// (`<|im_start|>`), as llama.cpp's `/detokenize` shows them.
    #[must_use]
    pub fn decode_with_control(&self, tokens: &[TokenId]) -> String {
        self.decode_bytes(tokens, true)
    }

    fn decode_bytes(&self, tokens: &[TokenId], with_control: bool) -> String {
        let mut bytes = Vec::new();
        for &t in tokens {
            match self.control.get(t as usize) {
                Some(true) if with_control => bytes.extend_from_slice(self.texts[t as usize].as_bytes()),
                _ => bytes.extend_from_slice(self.token_bytes(t)),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether `token` is a control token (its text is markup, not output).
    #[must_use]
    pub fn is_control(&self, token: TokenId) -> bool {
        self.control.get(token as usize).copied().unwrap_or(false)
    }

    /// The tokens that end generation (EOS, end-of-turn, ...), sorted.
    #[must_use]
    pub fn end_of_generation_tokens(&self) -> &[TokenId] {
        &self.eog
    }

    /// Whether `token` ends generation (EOS, end-of-turn, ...).
    #[must_use]
    pub fn is_end_of_generation(&self, token: TokenId) -> bool {
        self.eog.binary_search(&token).is_ok()
    }

    /// The token whose text is exactly `text`, if any.
    #[must_use]
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.inner.token_to_id(text)
    }
}

/// Control and user-defined tokens are matched whole in input text, before
/// the model sees it (llama.cpp's special-token partition does the same).
fn add_special_tokens(inner: &mut tokenizers::Tokenizer, texts: &[String], types: &[i64]) {
    let of_type = |wanted: i64, special: bool| -> Vec<AddedToken> {
        texts
            .iter()
            .zip(types)
            .filter(|(t, &ty)| ty == wanted && !t.is_empty())
            .map(|(t, _)| AddedToken::from(t.clone(), special).normalized(false))
            .collect()
    };
    inner.add_special_tokens(&of_type(TOKEN_TYPE_CONTROL, true));
    inner.add_tokens(&of_type(TOKEN_TYPE_USER_DEFINED, false));
}

fn vocab_map(texts: &[String]) -> HashMap<String, u32> {
    let mut vocab = HashMap::with_capacity(texts.len());
    for (id, t) in texts.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(id as u32);
    }
    vocab
}

fn build_gpt2(file: &GgufFile, texts: &[String], _types: &[i64]) -> Result<tokenizers::Tokenizer, TextError> {
    let merges: Vec<(String, String)> = file
        .get_array("tokenizer.ggml.merges")?
        .iter()
        .map(|m| {
            let s = m.as_str().ok_or_else(|| TextError::BadVocab("merge is not a string".into()))?;
            let (a, b) = s.split_once(' ').ok_or_else(|| TextError::BadVocab(format!("merge {s:?} has no space")))?;
            Ok((a.to_owned(), b.to_owned()))
        })
        .collect::<Result<_, TextError>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(texts).into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges)
        .build()
        .map_err(tk_err)?;
    let pre = file.get("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("default");
    let patterns = pretokenize::patterns(pre).ok_or_else(|| TextError::UnknownPreTokenizer(pre.to_owned()))?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for p in patterns {
        let split = Split::new(
            tokenizers::pre_tokenizers::split::SplitPattern::Regex(p.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err)?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(steps)));
    Ok(tk)
}

/// SentencePiece BPE: merges are all splits of a piece into two pieces of
/// the vocabulary, ranked by the merged piece's score (the way HF's
/// `SentencePieceExtractor` converts such models); byte fallback covers the rest.
fn build_spm(file: &GgufFile, texts: &[String], types: &[i64]) -> Result<tokenizers::Tokenizer, TextError> {
    let scores: Vec<f32> = match file.get("tokenizer.ggml.scores").and_then(MetaValue::as_array) {
        Some(a) if a.len() == texts.len() => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
        _ => return Err(TextError::BadVocab("SentencePiece vocabulary needs tokenizer.ggml.scores".into())),
    };
    let vocab = vocab_map(texts);
    let normal = |id: usize| types[id] == 1;
    let mut merges: Vec<(f32, u32, u32, usize, usize)> = Vec::new();
    for (id, piece) in texts.iter().enumerate().filter(|&(id, _)| normal(id)) {
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = (&piece[..split], &piece[split..]);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                if normal(li as usize) && normal(ri as usize) {
                    merges.push((scores[id], li, ri, id, split));
                }
            }
        }
    }
    // Highest score first; ties by the ids of the parts, as the HF extractor does.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .map(|(_, _, _, id, split)| (texts[id][..split].to_owned(), texts[id][split..].to_owned()))
        .collect();
    let unk = file
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(MetaValue::as_u64)
        .and_then(|u| texts.get(u as usize))
        .cloned()
        .unwrap_or_else(|| "<unk>".to_owned());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges)
        .unk_token(unk)
        .byte_fallback(true)
        .fuse_unk(true)
        .build()
        .map_err(tk_err)?;
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    let add_space_prefix = file.get("tokenizer.ggml.add_space_prefix").and_then(MetaValue::as_bool).unwrap_or(true);
    if add_space_prefix {
        norms.push(Prepend::new("▁".to_owned()).into());
    }
    norms.push(Replace::new(" ", "▁").map_err(tk_err)?.into());
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_normalizer(Some(NormSequence::new(norms)));
    Ok(tk)
}

/// The output bytes of a vocabulary entry.
fn piece_bytes(kind: TokenizerKind, text: &str, ty: i64) -> Vec<u8> {
    match kind {
        TokenizerKind::BytePairGpt2 if ty == TOKEN_TYPE_USER_DEFINED || ty == TOKEN_TYPE_CONTROL => {
            text.as_bytes().to_vec()
        }
        TokenizerKind::BytePairGpt2 => {
            let table = unicode_to_byte();
            text.chars()
                .map(|c| table.get(&c).copied().ok_or(c))
                .collect::<Result<Vec<u8>, char>>()
                // Pieces outside the byte alphabet are literal text.
                .unwrap_or_else(|_| text.as_bytes().to_vec())
        }
        TokenizerKind::SentencePiece => {
            if ty == TOKEN_TYPE_BYTE {
                if let Some(b) = text
                    .strip_prefix("<0x")
                    .and_then(|s| s.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    return vec![b];
                }
            }
            text.replace('▁', " ").into_bytes()
        }
    }
}

/// GPT-2's reversible byte ↔ printable-character alphabet (the published
/// `bytes_to_unicode` table; the `tokenizers` crate keeps its copy private).
fn unicode_to_byte() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let mut next = 256u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap_or('?')
                };
                (c, b)
            })
            .collect()
    })
}
