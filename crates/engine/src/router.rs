//! The triage router's policy: which of two models — a small one that
//! answers easy requests at once, a big one for the rest — answers a
//! request sent to the router's name (`"model": "auto"`).
//!
//! Pure logic, with no model in it: [`RoutePolicy::decide`] reads what a
//! request is ([`RequestTraits`]) and asks for the two things that cost
//! work only when its rules reach them — the prompt's length in the small
//! model's tokens ([`Step::CountTokens`]) and the small model's own verdict
//! ([`Step::Classify`]: a short classification prompt, constrained to a
//! label, answered in one step). The server does that work and asks again.
//!
//! Rules, first match wins: tool use, a JSON/schema request, a long prompt,
//! a "hard" keyword, an "easy" keyword, the classifier's verdict, else the
//! fallback. Each rule is optional in the configuration.

/// Which of the router's two models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The small, fast triage model.
    Small,
    /// The big model.
    Big,
}

impl Target {
    /// `small` or `big`, as the configuration writes it.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Some(Self::Small),
            "big" => Some(Self::Big),
            _ => None,
        }
    }
}

/// The small model's answer to "is this request easy or hard?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Easy: the small model answers.
    Easy,
    /// Hard: the big model answers.
    Hard,
}

impl Verdict {
    /// The labels the small model is asked to choose between, in the
    /// order of [`Verdict::Easy`], [`Verdict::Hard`]. They differ in their
    /// first letter, so the first token the model would write decides.
    pub const LABELS: [&'static str; 2] = ["easy", "hard"];
}

/// What asking the small model gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Judgement {
    /// Its log-probability of "easy" less that of "hard", for the first
    /// token of its answer (one forward step).
    Margin(f32),
    /// It could not be asked (busy, refused, failed).
    Unavailable,
}

/// What the policy reads of a request: no model needed to know these.
#[derive(Clone, Debug, Default)]
pub struct RequestTraits {
    /// The request's text (every message's content, in order), for the
    /// length and the keywords.
    pub text: String,
    /// The text the classifier judges: the last user message (or the
    /// prompt).
    pub question: String,
    /// Tools are offered.
    pub tools: bool,
    /// JSON output (an object or a schema) is asked for.
    pub json: bool,
}

/// Why a request went where it went.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Tools are offered.
    Tools,
    /// JSON or a schema is asked for.
    Json,
    /// The prompt is longer than the limit.
    LongPrompt {
        /// Its tokens (the small model's).
        tokens: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A configured keyword matched.
    Keyword {
        /// The keyword, as configured.
        word: String,
    },
    /// The small model's verdict: its margin against the threshold.
    Classifier {
        /// What it decided.
        verdict: Verdict,
        /// log p(easy) − log p(hard).
        margin: f32,
        /// The margin at and above which a request is easy.
        threshold: f32,
    },
    /// The small model could not be asked: the fallback answers.
    ClassifierUnavailable,
    /// No rule matched.
    Fallback,
}

impl Reason {
    /// A short, bounded name for the reason (the metrics' `reason` label).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Json => "json",
            Self::LongPrompt { .. } => "long_prompt",
            Self::Keyword { .. } => "keyword",
            Self::Classifier { .. } => "classifier",
            Self::ClassifierUnavailable => "classifier_unavailable",
            Self::Fallback => "fallback",
        }
    }

    /// The reason in words, for the response's header.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Tools => "tools offered".into(),
            Self::Json => "JSON output asked for".into(),
            Self::LongPrompt { tokens, limit } => format!("long prompt ({tokens} tokens > {limit})"),
            Self::Keyword { word } => format!("keyword {word:?}"),
            Self::Classifier { verdict, margin, threshold } => {
                let (word, cmp) = if *verdict == Verdict::Easy { ("easy", ">=") } else { ("hard", "<") };
                format!("classifier: {word} (margin {margin:+.2} {cmp} {threshold:+.2})")
            }
            Self::ClassifierUnavailable => "classifier unavailable; fallback".into(),
            Self::Fallback => "no rule matched; fallback".into(),
        }
    }
}

/// What the policy needs next, or its answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Answer with this model, for this reason.
    Answer(Target, Reason),
    /// Count the prompt's tokens with the small model's tokenizer, then ask again.
    CountTokens,
    /// Ask the small model for its verdict on `RequestTraits::question`, then ask again.
    Classify,
}

/// The router's rules (from the configuration file's `[router]` table).
#[derive(Clone, Debug)]
pub struct RoutePolicy {
    /// Prompts longer than this many tokens go to the big model.
    pub long_prompt_tokens: Option<usize>,
    /// Words or phrases that send a request to the big model (whole words,
    /// any case).
    pub hard_keywords: Vec<String>,
    /// Words or phrases that send a request to the small model.
    pub easy_keywords: Vec<String>,
    /// Where requests offering tools go (`None`: this rule is off).
    pub tools: Option<Target>,
    /// Where requests asking for JSON go (`None`: off).
    pub json: Option<Target>,
    /// Ask the small model when no rule before it matched.
    pub classify: bool,
    /// The classifier's margin (log p(easy) − log p(hard)) at and above
    /// which a request is easy. Small models lean to one label whatever the
    /// request: measure theirs on labeled prompts (`scripts/route-eval
    /// --calibrate`) and set it here.
    pub classifier_threshold: f32,
    /// Where a request goes when nothing decided (or the classifier could not answer).
    pub fallback: Target,
}

impl Default for RoutePolicy {
    /// Tools to the big model, prompts over 1,000 tokens to the big model,
    /// then the classifier; the big model when in doubt.
    fn default() -> Self {
        Self {
            long_prompt_tokens: Some(1000),
            hard_keywords: Vec::new(),
            easy_keywords: Vec::new(),
            tools: Some(Target::Big),
            json: None,
            classify: true,
            classifier_threshold: 0.0,
            fallback: Target::Big,
        }
    }
}

impl RoutePolicy {
    /// The next step for a request with `traits`, given its prompt's token
    /// count and the small model's judgement once they are known.
    #[must_use]
    pub fn decide(&self, traits: &RequestTraits, tokens: Option<usize>, judgement: Option<Judgement>) -> Step {
        if let (true, Some(t)) = (traits.tools, self.tools) {
            return Step::Answer(t, Reason::Tools);
        }
        if let (true, Some(t)) = (traits.json, self.json) {
            return Step::Answer(t, Reason::Json);
        }
        if let Some(limit) = self.long_prompt_tokens {
            match tokens {
                None => return Step::CountTokens,
                Some(n) if n > limit => return Step::Answer(Target::Big, Reason::LongPrompt { tokens: n, limit }),
                Some(_) => {}
            }
        }
        for (words, target) in [(&self.hard_keywords, Target::Big), (&self.easy_keywords, Target::Small)] {
            if let Some(word) = words.iter().find(|w| contains_phrase(&traits.text, w)) {
                return Step::Answer(target, Reason::Keyword { word: word.clone() });
            }
        }
        if self.classify {
            return match judgement {
                None => Step::Classify,
                Some(Judgement::Margin(margin)) => {
                    let threshold = self.classifier_threshold;
                    let (verdict, target) =
                        if margin >= threshold { (Verdict::Easy, Target::Small) } else { (Verdict::Hard, Target::Big) };
                    Step::Answer(target, Reason::Classifier { verdict, margin, threshold })
                }
                Some(Judgement::Unavailable) => Step::Answer(self.fallback, Reason::ClassifierUnavailable),
            };
        }
        Step::Answer(self.fallback, Reason::Fallback)
    }
}

/// Whether `phrase` occurs in `text` as whole words, ignoring case
/// ("prove" is in "Prove that" but not in "improve").
#[must_use]
pub fn contains_phrase(text: &str, phrase: &str) -> bool {
    let phrase = phrase.trim().to_lowercase();
    if phrase.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(&phrase).any(|(at, _)| {
        let before = text[..at].chars().next_back().is_none_or(|c| !word_char(c));
        let after = text[at + phrase.len()..].chars().next().is_none_or(|c| !word_char(c));
        before && after
    })
}

/// The classification the small model answers: its instructions, worked
/// examples (the same tokens every time, so the prefix cache keeps them),
/// then the request. Returned as (role, content) turns for the model's
/// chat template; the reply's first token is read for [`Verdict::LABELS`].
#[must_use]
pub fn classification_turns(question: &str) -> Vec<(&'static str, String)> {
    /// The first characters of the request the classifier reads: enough to
    /// judge, and a bounded cost.
    const READ_CHARS: usize = 1500;
    const INSTRUCTIONS: &str = "You sort requests for an assistant by difficulty. Reply with one word. \
        easy: greetings, small talk, a short fact, a definition, spelling, a one-sentence translation or rewrite. \
        hard: reasoning in several steps, math, proofs, writing or fixing code, analysis, comparisons, \
        long or expert writing, planning.";
    const EXAMPLES: [(&str, &str); 6] = [
        ("Hi! How are you today?", "easy"),
        ("Write a Python function that merges overlapping intervals and explain its complexity.", "hard"),
        ("What is the capital of Italy?", "easy"),
        ("Compare the economic causes of the two world wars in a structured essay.", "hard"),
        ("Translate 'good morning' into Spanish.", "easy"),
        ("A train leaves at 3pm at 80 km/h; another at 4pm at 100 km/h. When does the second catch up?", "hard"),
    ];
    let mut turns = vec![("system", INSTRUCTIONS.to_owned())];
    for (q, label) in EXAMPLES {
        turns.push(("user", format!("Request: {q}\nEasy or hard?")));
        turns.push(("assistant", label.to_owned()));
    }
    let cut = question.char_indices().nth(READ_CHARS).map_or(question.len(), |(i, _)| i);
    turns.push(("user", format!("Request: {}\nEasy or hard?", question[..cut].trim())));
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits(text: &str) -> RequestTraits {
        RequestTraits { text: text.into(), question: text.into(), ..RequestTraits::default() }
    }

    fn policy() -> RoutePolicy {
        RoutePolicy {
            long_prompt_tokens: Some(100),
            hard_keywords: vec!["prove".into(), "step by step".into()],
            easy_keywords: vec!["translate".into()],
            tools: Some(Target::Big),
            json: Some(Target::Small),
            classify: true,
            classifier_threshold: -1.0,
            fallback: Target::Big,
        }
    }

    #[test]
    fn model_free_rules_decide_before_any_work() {
        let p = policy();
        let t = RequestTraits { tools: true, ..traits("hi") };
        assert_eq!(p.decide(&t, None, None), Step::Answer(Target::Big, Reason::Tools));
        let t = RequestTraits { json: true, ..traits("hi") };
        assert_eq!(p.decide(&t, None, None), Step::Answer(Target::Small, Reason::Json));
        // Tools win over JSON: the first rule that matches decides.
        let t = RequestTraits { tools: true, json: true, ..traits("hi") };
        assert_eq!(p.decide(&t, None, None), Step::Answer(Target::Big, Reason::Tools));
    }

    #[test]
    fn length_is_counted_only_when_its_rule_is_reached() {
        let p = policy();
        assert_eq!(p.decide(&traits("translate this"), None, None), Step::CountTokens);
        assert_eq!(
            p.decide(&traits("translate this"), Some(101), None),
            Step::Answer(Target::Big, Reason::LongPrompt { tokens: 101, limit: 100 })
        );
        let no_length = RoutePolicy { long_prompt_tokens: None, ..policy() };
        assert_eq!(
            no_length.decide(&traits("translate this"), None, None),
            Step::Answer(Target::Small, Reason::Keyword { word: "translate".into() })
        );
    }

    #[test]
    fn keywords_match_whole_words_hard_first() {
        let p = policy();
        let route = |text: &str| p.decide(&traits(text), Some(10), None);
        assert_eq!(route("Please PROVE it"), Step::Answer(Target::Big, Reason::Keyword { word: "prove".into() }));
        assert_eq!(
            route("translate and think step by step"),
            Step::Answer(Target::Big, Reason::Keyword { word: "step by step".into() })
        );
        // "improve" holds "prove" but not as a word: on to the classifier.
        assert_eq!(route("improve my essay"), Step::Classify);
        assert!(contains_phrase("Go step by step.", "step by step"));
        assert!(!contains_phrase("stepbystep", "step by step"));
        assert!(contains_phrase("ÜBER alles", "über"));
    }

    #[test]
    fn the_margin_against_the_threshold_decides_and_its_absence_falls_back() {
        let p = policy();
        let t = traits("what is two plus two?");
        assert_eq!(p.decide(&t, Some(8), None), Step::Classify);
        let easy = Reason::Classifier { verdict: Verdict::Easy, margin: -1.0, threshold: -1.0 };
        assert_eq!(p.decide(&t, Some(8), Some(Judgement::Margin(-1.0))), Step::Answer(Target::Small, easy));
        let hard = Reason::Classifier { verdict: Verdict::Hard, margin: -1.5, threshold: -1.0 };
        assert_eq!(p.decide(&t, Some(8), Some(Judgement::Margin(-1.5))), Step::Answer(Target::Big, hard.clone()));
        assert_eq!(hard.describe(), "classifier: hard (margin -1.50 < -1.00)");
        assert_eq!(
            p.decide(&t, Some(8), Some(Judgement::Unavailable)),
            Step::Answer(Target::Big, Reason::ClassifierUnavailable)
        );
        let no_classifier = RoutePolicy { classify: false, fallback: Target::Small, ..policy() };
        assert_eq!(no_classifier.decide(&t, Some(8), None), Step::Answer(Target::Small, Reason::Fallback));
    }

    #[test]
    fn reasons_have_bounded_kinds_and_words() {
        assert_eq!(Reason::Keyword { word: "prove".into() }.kind(), "keyword");
        assert_eq!(Reason::LongPrompt { tokens: 5, limit: 4 }.describe(), "long prompt (5 tokens > 4)");
        assert_eq!(Reason::ClassifierUnavailable.kind(), "classifier_unavailable");
        assert_eq!(Target::parse("BIG"), Some(Target::Big));
    }

    #[test]
    fn classification_reads_a_bounded_question() {
        let long = "é".repeat(5000);
        let turns = classification_turns(&long);
        let last = &turns.last().expect("turns").1;
        assert!(last.chars().count() < 1600, "{}", last.chars().count());
        assert_eq!(turns[0].0, "system");
        assert_eq!(turns.iter().filter(|(r, _)| *r == "assistant").count(), 6);
    }
}
