//! Stop strings over streamed text: text that could still become a stop
//! string is held back, so a stop string never reaches the client.

/// Tracks generated text against the stop strings of one request.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    matched: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    #[must_use]
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), held: String::new(), matched: None }
    }

    /// The stop string that ended the text, once one has.
    #[must_use]
    pub fn matched(&self) -> Option<&str> {
        self.matched.map(|i| self.stops[i].as_str())
    }

    /// Adds new text. Returns the text safe to emit and whether a stop string was hit
    /// (in which case the text before it is returned and the rest discarded).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        // The earliest match wins (the longest stop string at that place).
        let hit = self.stops.iter().enumerate().filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, usize::MAX - s.len(), i))).min();
        if let Some((at, _, i)) = hit {
            let out = self.held[..at].to_owned();
            self.held.clear();
            self.matched = Some(i);
            return (out, true);
        }
        let keep = self.longest_partial_suffix();
        let emit_to = self.held.len() - keep;
        let out = self.held[..emit_to].to_owned();
        self.held.drain(..emit_to);
        (out, false)
    }

    /// Releases held-back text at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a stop string.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if suffix.len() > best && stop.starts_with(suffix) {
                    best = suffix.len();
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_stop_then_releases() {
        let mut m = StopMatcher::new(&["END".into()]);
        assert_eq!(m.push("abcE"), ("abc".into(), false));
        assert_eq!(m.push("x"), ("Ex".into(), false));
        assert_eq!(m.push("yEN"), ("y".into(), false));
        assert_eq!(m.push("D tail"), (String::new(), true));
        assert_eq!(m.matched(), Some("END"));
    }

    #[test]
    fn the_earliest_and_then_longest_stop_string_is_the_one_matched() {
        let mut m = StopMatcher::new(&["b".into(), "ab".into(), "abc".into()]);
        assert_eq!(m.push("xabcd"), ("x".into(), true));
        assert_eq!(m.matched(), Some("abc"));
        assert_eq!(StopMatcher::new(&["z".into()]).matched(), None);
    }

    #[test]
    fn no_stops_passes_through() {
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("héllo"), ("héllo".into(), false));
    }
}
