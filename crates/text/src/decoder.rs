//! Streaming detokenization that never splits a UTF-8 character.

/// Accumulates token bytes and releases only complete UTF-8 text.
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    pending: Vec<u8>,
}

impl IncrementalDecoder {
    /// An empty decoder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete. Invalid
    /// sequences become U+FFFD; an incomplete trailing character is held back.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // ok: `valid_up_to` marks a valid UTF-8 prefix.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    if let Some(bad) = e.error_len() {
                        out.push('\u{FFFD}');
                        self.pending.drain(..valid + bad);
                    } else {
                        self.pending.drain(..valid);
                        return out;
                    }
                }
            }
        }
    }

    /// Flushes whatever is held back (as U+FFFD if incomplete).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_characters() {
        let mut d = IncrementalDecoder::new();
        let euro = "€".as_bytes();
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&euro[2..]), "€");
        assert_eq!(d.push(b"ab"), "ab");
    }

    #[test]
    fn replaces_invalid_bytes() {
        let mut d = IncrementalDecoder::new();
        assert_eq!(d.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(d.push(&[0xe2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
