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
