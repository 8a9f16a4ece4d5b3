//! Reasoning models write their thoughts in `<think>…</think>` before the
//! answer. The thoughts go to clients as `reasoning_content`, apart from the
//! answer, whole or streamed.

/// Opens the thoughts.
pub const THINK_OPEN: &str = "<think>";
/// Closes them.
pub const THINK_CLOSE: &str = "</think>";

/// Where the rendered prompt leaves a thinking model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptEnd {
    /// The prompt opened `<think>`: the reply starts with thoughts.
    InThoughts,
    /// The prompt closed an (empty) `<think></think>`: no thoughts follow
    /// (Qwen 3 with `enable_thinking: false`).
    AfterThoughts,
    /// The model may open `<think>` itself.
    Open,
}

impl PromptEnd {
    /// From the prompt's last characters.
    #[must_use]
    pub fn of(prompt_tail: &str) -> Self {
        let t = prompt_tail.trim_end();
        if t.ends_with(THINK_OPEN) {
            Self::InThoughts
        } else if t.ends_with(THINK_CLOSE) {
            Self::AfterThoughts
        } else {
            Self::Open
        }
    }
}

/// Splits a whole reply into thoughts and answer.
#[must_use]
pub fn split_reasoning(text: &str, start: PromptEnd) -> (Option<String>, String) {
    let mut s = ReasoningSplitter::new(start);
    let (mut r, mut c) = s.push(text);
    let (r2, c2) = s.finish();
    r.push_str(&r2);
    c.push_str(&c2);
    ((!r.is_empty() || s.saw_thoughts).then_some(r), c)
}

/// Splits streamed text into thoughts and answer as it comes, holding back
/// only what may be the start of a tag.
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    phase: Phase,
    held: String,
    saw_thoughts: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing yet: the reply may open `<think>` (leading whitespace allowed).
    Start,
    Thoughts,
    /// Right after `</think>`: whitespace before the answer is dropped.
    Gap,
    Answer,
}

impl ReasoningSplitter {
    /// A splitter for a reply that follows a prompt ending as `start`.
    #[must_use]
    pub fn new(start: PromptEnd) -> Self {
        let phase = match start {
            PromptEnd::InThoughts => Phase::Thoughts,
            PromptEnd::AfterThoughts => Phase::Answer,
            PromptEnd::Open => Phase::Start,
        };
        Self { phase, held: String::new(), saw_thoughts: phase == Phase::Thoughts }
    }

    /// Takes the next piece; returns (thoughts, answer) text that is final.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.held.push_str(text);
        let (mut thoughts, mut answer) = (String::new(), String::new());
        loop {
            match self.phase {
                Phase::Start => {
                    let t = self.held.trim_start();
                    if let Some(rest) = t.strip_prefix(THINK_OPEN) {
                        self.held = rest.to_owned();
                        self.phase = Phase::Thoughts;
                        self.saw_thoughts = true;
                    } else if t.is_empty() || THINK_OPEN.starts_with(t) {
                        return (thoughts, answer);
                    } else {
                        self.phase = Phase::Answer;
                    }
                }
                Phase::Thoughts => {
                    if let Some(i) = self.held.find(THINK_CLOSE) {
                        thoughts.push_str(&self.held[..i]);
                        self.held.drain(..i + THINK_CLOSE.len());
                        self.phase = Phase::Gap;
                    } else {
                        let keep = partial_tag(&self.held, THINK_CLOSE);
                        let cut = self.held.len() - keep;
                        thoughts.extend(self.held.drain(..cut));
                        return (thoughts, answer);
                    }
                }
                Phase::Gap => {
                    let t = self.held.trim_start();
                    if t.is_empty() {
                        self.held.clear();
                        return (thoughts, answer);
                    }
                    self.held = t.to_owned();
                    self.phase = Phase::Answer;
                }
                Phase::Answer => {
                    answer.push_str(&self.held);
                    self.held.clear();
                    return (thoughts, answer);
                }
            }
        }
    }

    /// The end of the reply: whatever was held back, where it belongs.
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        match self.phase {
            Phase::Thoughts => (held, String::new()),
            _ => (String::new(), held),
        }
    }
}

/// Length of the longest tail of `text` that is a proper prefix of `tag`.
fn partial_tag(text: &str, tag: &str) -> usize {
    (1..tag.len()).rev().find(|&k| text.ends_with(&tag[..k])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_replies_split_at_the_close() {
        let (r, c) = split_reasoning("<think>\nLet me see.\n</think>\n\n{\"a\": 1}", PromptEnd::Open);
        assert_eq!((r.as_deref(), c.as_str()), (Some("\nLet me see.\n"), "{\"a\": 1}"));
        let (r, c) = split_reasoning("Hmm.</think>Answer", PromptEnd::InThoughts);
        assert_eq!((r.as_deref(), c.as_str()), (Some("Hmm."), "Answer"));
        let (r, c) = split_reasoning("Just an answer", PromptEnd::Open);
        assert_eq!((r, c.as_str()), (None, "Just an answer"));
        let (r, c) = split_reasoning("<think>cut off by max_tok", PromptEnd::Open);
        assert_eq!((r.as_deref(), c.as_str()), (Some("cut off by max_tok"), ""));
    }

    #[test]
    fn streams_split_the_same_at_any_piece_boundary() {
        let text = "  <think>a < b, so</think>\n\nThe answer.";
        for size in 1..text.len() {
            let mut s = ReasoningSplitter::new(PromptEnd::Open);
            let (mut r, mut c) = (String::new(), String::new());
            let bytes = text.as_bytes();
            for chunk in bytes.chunks(size) {
                let (a, b) = s.push(std::str::from_utf8(chunk).unwrap());
                r.push_str(&a);
                c.push_str(&b);
            }
            let (a, b) = s.finish();
            r.push_str(&a);
            c.push_str(&b);
            assert_eq!((r.as_str(), c.as_str()), ("a < b, so", "The answer."), "pieces of {size}");
        }
    }

    #[test]
    fn prompt_ends_are_recognized() {
        assert_eq!(PromptEnd::of("<|im_start|>assistant\n<think>\n"), PromptEnd::InThoughts);
        assert_eq!(PromptEnd::of("<think>\n\n</think>\n\n"), PromptEnd::AfterThoughts);
        assert_eq!(PromptEnd::of("<|im_start|>assistant\n"), PromptEnd::Open);
    }
}
