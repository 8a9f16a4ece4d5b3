//! Parsing human sizes: `4096`, `32k`, `1m` tokens.

/// Parses a token count with an optional `k` (×1024) or `m` (×1024²) suffix.
pub fn parse_tokens(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 1024 * 1024),
            None => (t.as_str(), 1),
        },
    };
    let n: usize = num.parse().map_err(|_| format!("{s:?} is not a size like 4096, 32k or 1m"))?;
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_tokens("32k"), Ok(32768));
        assert_eq!(parse_tokens("4096"), Ok(4096));
        assert_eq!(parse_tokens("1M"), Ok(1 << 20));
        assert!(parse_tokens("0").is_err());
        assert!(parse_tokens("lots").is_err());
    }
}
