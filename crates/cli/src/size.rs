//! Parsing human sizes: `4096`, `32k`, `1m` tokens.

/// Parses a token count with an optional `k` (×1024) or `m` (×1024²) suffix.
pub fn parse_tokens(s: &str) -> Result<usize, String> {
    hearth_core::parse_token_count(s).ok_or_else(|| format!("{s:?} is not a size like 4096, 32k or 1m"))
}

/// Parses a byte size: `512M`, `24G`, `1.5G`, `2GiB`, `1000000` (binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like 512M or 24G"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{s:?} must be a positive size"));
    }
    Ok((n * mult as f64) as u64)
}

/// Bytes for humans: `1.5 GB` style (powers of 1024, like the inputs).
#[must_use]
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// How long: `30s`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, ""), |i| s.split_at(i));
    let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration (30s, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: the unit is s, m or h")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("24G"), Ok(24 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("-1G").is_err());
        assert!(parse_bytes("big").is_err());
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_tokens("32k"), Ok(32768));
        assert_eq!(parse_tokens("4096"), Ok(4096));
        assert_eq!(parse_tokens("1M"), Ok(1 << 20));
        assert!(parse_tokens("0").is_err());
        assert!(parse_tokens("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(std::time::Duration::from_mins(5)));
        assert_eq!(parse_duration("1.5h"), Ok(std::time::Duration::from_mins(90)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("1e999999h").is_err());
        assert!(parse_duration(&"9".repeat(40)).is_err());
    }
}
