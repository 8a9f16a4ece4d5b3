//! The tokenizer of a Hugging Face encoder folder (`tokenizer.json`, e.g.
//! BERT's WordPiece), run by the `tokenizers` crate as the file describes it:
//! normalizer, pre-tokenizer, model and the `[CLS] … [SEP]` post-processor.
//! Truncation and padding settings in the file are ignored: Hearth packs
//! sequences without padding and decides about length itself.

use std::path::Path;

use hearth_core::TokenId;

use crate::TextError;

/// An encoder's tokenizer.
pub struct EncoderTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for EncoderTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderTokenizer").field("vocab", &self.inner.get_vocab_size(true)).finish()
    }
}

fn err(e: impl std::fmt::Display) -> TextError {
    TextError::Template(format!("tokenizer.json: {e}"))
}

impl EncoderTokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, TextError> {
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(err)?;
        inner.with_truncation(None).map_err(err)?;
        inner.with_padding(None);
        Ok(Self { inner })
    }

    /// The WordPiece tokenizer of a GGUF `bert` file. llama.cpp's converter
    /// writes the vocabulary in "phantom space" form (`▁word` starts a word,
    /// a bare piece continues one, `[X]` is special); this turns it back
    /// into BERT's (`word`, `##piece`) and rebuilds BERT's uncased pipeline.
    pub fn from_gguf(file: &hearth_gguf::GgufFile) -> Result<Self, TextError> {
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::template::TemplateProcessing;

        let model = file.get_str("tokenizer.ggml.model").map_err(err)?;
        if model != "bert" {
            return Err(TextError::UnsupportedModel(format!("{model} (encoders use bert's WordPiece)")));
        }
        let tokens: Vec<String> = file
            .get_array("tokenizer.ggml.tokens")
            .map_err(err)?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| TextError::BadVocab("token is not a string".into())))
            .collect::<Result<_, _>>()?;
        let piece = |t: &str| -> String {
            if t.starts_with('[') && t.ends_with(']') {
                t.to_owned()
            } else if let Some(word) = t.strip_prefix('\u{2581}') {
                word.to_owned()
            } else {
                format!("##{t}")
            }
        };
        let vocab: std::collections::HashMap<String, u32> =
            tokens.iter().enumerate().map(|(i, t)| (piece(t), i as u32)).collect();
        let special = |key: &str, fallback: &str| -> Result<(String, u32), TextError> {
            let id = file
                .get(&format!("tokenizer.ggml.{key}"))
                .and_then(hearth_gguf::MetaValue::as_u64)
                .map(|i| i as u32)
                .or_else(|| vocab.get(fallback).copied())
                .ok_or_else(|| TextError::BadVocab(format!("no {fallback} token")))?;
            let text = tokens.get(id as usize).ok_or_else(|| TextError::BadVocab(format!("{key} {id} is outside the vocabulary")))?;
            Ok((piece(text), id))
        };
        let (cls, cls_id) = special("cls_token_id", "[CLS]")?;
        let (sep, sep_id) = special("seperator_token_id", "[SEP]")?;
        let (unk, _) = special("unknown_token_id", "[UNK]")?;
        let wordpiece = WordPiece::builder()
            .vocab(vocab.into_iter().collect::<ahash::AHashMap<String, u32>>())
            .unk_token(unk)
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(err)?;
        let mut inner = tokenizers::Tokenizer::new(wordpiece);
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        let template = TemplateProcessing::builder()
            .try_single(format!("{cls}:0 $A:0 {sep}:0"))
            .map_err(err)?
            .try_pair(format!("{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"))
            .map_err(err)?
            .special_tokens(vec![(cls, cls_id), (sep, sep_id)])
            .build()
            .map_err(err)?;
        inner.with_post_processor(Some(template));
        Ok(Self { inner })
    }

    /// Token ids of `text` with the model's special tokens (`[CLS] text [SEP]`).
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, TextError> {
        Ok(self.inner.encode_fast(text, true).map_err(err)?.get_ids().to_vec())
    }

    /// Token ids and segment ids of a pair (`[CLS] a [SEP] b [SEP]`), for
    /// cross-encoders.
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<(Vec<TokenId>, Vec<u8>), TextError> {
        let enc = self.inner.encode_fast((a, b), true).map_err(err)?;
        let types = enc.get_type_ids().iter().map(|&t| u8::try_from(t).unwrap_or(1)).collect();
        Ok((enc.get_ids().to_vec(), types))
    }

    /// Vocabulary size, special tokens included.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
