//! Constrained decoding: a [`Constraint`] (JSON schema, any JSON object, a
//! Lark grammar, a regex) is compiled by `llguidance` into a [`Guide`], which
//! says before each step which tokens may come next and follows the tokens
//! chosen. Masked sampling means the output always parses: a sequence can only
//! end where the grammar allows, and ends at once when the grammar is complete.
//!
//! [`Grammars`] holds what every guide of one model shares (the token trie
//! and llguidance's parser factory); it is built once per model, on the first
//! constrained request.

pub mod gbnf;
mod recursion;

use std::sync::Arc;

use hearth_core::TokenId;
use hearth_text::reasoning::PromptEnd;
use hearth_text::tools::{CALL_CLOSE, CALL_OPEN};
use hearth_text::{ToolChoice, ToolFormat, ToolSpec, Tokenizer};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
pub use recursion::{bound_recursion, RECURSION_DEPTH};

/// What a sequence's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A value valid under this JSON schema (recursive definitions nest at
    /// most [`RECURSION_DEPTH`] levels).
    JsonSchema(serde_json::Value),
    /// A grammar in llguidance's Lark syntax (may embed `%json{…}` schemas).
    Lark(String),
    /// Text matching this regular expression, whole.
    Regex(String),
}

impl Constraint {
    /// A grammar given as text: llguidance's Lark, or llama.cpp's GBNF
    /// (recognised by its `::=` rules and translated to Lark).
    pub fn grammar_text(src: &str) -> Result<Self, String> {
        if gbnf::is_gbnf(src) {
            return Ok(Self::Lark(gbnf::to_lark(src).map_err(|e| format!("GBNF grammar: {e}"))?));
        }
        Ok(Self::Lark(src.to_owned()))
    }

    /// The llguidance grammar for this constraint. JSON is written compactly
    /// with one space after `,` and `:` (as Python's `json.dumps`): no free
    /// whitespace, so a sampled model cannot wander off into blank lines and
    /// a finite schema has a finite longest output. A schema's own
    /// `x-guidance` options take precedence.
    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Self::JsonObject => TopLevelGrammar::from_json_schema(with_layout(serde_json::json!({"type": "object"}))),
            Self::JsonSchema(schema) => TopLevelGrammar::from_json_schema(prepare_schema(schema)),
            Self::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
        }
    }
}

/// `schema` as Hearth compiles it: recursion bounded, Hearth's layout.
#[must_use]
pub fn prepare_schema(schema: &serde_json::Value) -> serde_json::Value {
    with_layout(bound_recursion(schema, RECURSION_DEPTH))
}

/// Most calls one forced reply may hold: a small model, free to go on,
/// repeats its call until `max_tokens`; eight leave room for real fan-out.
pub const MAX_PARALLEL_CALLS: usize = 8;

/// The constraint that makes a model call tools in `format`: `None` unless
/// `choice` requires a call. Each call's arguments follow its function's
/// schema, so they always parse and validate; with `parallel`, one or more
/// calls, else exactly one.
#[must_use]
pub fn tool_call_constraint(tools: &[ToolSpec], choice: &ToolChoice, parallel: bool, format: ToolFormat) -> Option<Constraint> {
    let chosen: Vec<&ToolSpec> = match choice {
        ToolChoice::Auto | ToolChoice::None => return None,
        ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
    };
    let key = format.arguments_key();
    let one_call: Vec<serde_json::Value> = chosen
        .iter()
        .map(|t| {
            serde_json::json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, key: bound_recursion(&t.parameters, RECURSION_DEPTH)},
                "required": ["name", key],
                "additionalProperties": false,
            })
        })
        .collect();
    let call = if one_call.len() == 1 { one_call[0].clone() } else { serde_json::json!({"anyOf": one_call}) };
    let lark = match format {
        ToolFormat::Hermes | ToolFormat::Generic => {
            let call = with_layout(call);
            let more = if parallel { format!(" (\"\\n\" call){{0,{}}}", MAX_PARALLEL_CALLS - 1) } else { String::new() };
            format!("start: call{more}\ncall: \"{CALL_OPEN}\\n\" %json {call} \"\\n{CALL_CLOSE}\"\n")
        }
        ToolFormat::Llama3 => format!("start: %json {}\n", with_layout(call)),
        ToolFormat::Mistral => {
            let max = if parallel { MAX_PARALLEL_CALLS } else { 1 };
            let list = serde_json::json!({"type": "array", "items": call, "minItems": 1, "maxItems": max});
            format!("start: %json {}\n", with_layout(list))
        }
    };
    Some(Constraint::Lark(lark))
}

/// `c` applied after a reasoning model's thoughts: the `<think>…</think>`
/// section is free text (at most `budget` tokens when given, then closed),
/// and only the answer that follows must match. Without this a schema would
/// forbid the thinking a model was trained to do first, and it answers worse
/// or not at all.
#[must_use]
/// `start` is where the prompt left the model; after an empty (closed)
/// `<think></think>` no thoughts follow and `c` stands as it is.
pub fn after_thinking(c: &Constraint, start: PromptEnd, budget: Option<usize>) -> Constraint {
    let body = match c {
        Constraint::JsonObject => format!("%json {}", with_layout(serde_json::json!({"type": "object"}))),
        Constraint::JsonSchema(s) => format!("%json {}", prepare_schema(s)),
        Constraint::Lark(src) => format!("%lark {{\n{src}\n}}"),
        Constraint::Regex(rx) => format!("/{}/", rx.replace('/', "\\/")),
    };
    let limit = budget.map_or(String::new(), |n| format!("[max_tokens={n}]"));
    // The thoughts are any text without `</think>`, which must then follow:
    // when a budget cuts them short, the close is forced. The gap before
    // the answer is bounded, so a sampled model cannot pad it forever.
    let grammar = match start {
        PromptEnd::InThoughts => "start: thoughts \"</think>\" GAP? body\n",
        PromptEnd::Open => "start: (\"<think>\" thoughts \"</think>\" GAP?)? body\n",
        PromptEnd::AfterThoughts => return c.clone(),
    };
    Constraint::Lark(format!(
        "{grammar}thoughts{limit}: THOUGHTS\nTHOUGHTS: /(?s:.*)/ & ~/(?s:.*)<\\/think>(?s:.*)/\n\
         GAP: /[ \\t\\r\\n]{{1,8}}/\nbody: {body}\n"
    ))
}

/// Hearth's JSON layout, unless the schema sets its own (`x-guidance`).
fn with_layout(mut schema: serde_json::Value) -> serde_json::Value {
    if schema.is_object() && schema.get("x-guidance").is_none() {
        json_layout().apply_to(&mut schema);
    }
    schema
}

/// `{"a": 1, "b": [1, 2]}`: one space after separators, no other whitespace.
#[must_use]
pub fn json_layout() -> JsonCompileOptions {
    JsonCompileOptions {
        item_separator: ", ".into(),
        key_separator: ": ".into(),
        whitespace_flexible: false,
        ..JsonCompileOptions::default()
    }
}

/// A constraint that cannot be used, and why (a 400 before any token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConstraintError(pub String);

/// What one model's guides share: its vocabulary as a token trie and the
/// compiled lexer slices.
pub struct Grammars {
    factory: ParserFactory,
    /// Tokens that start with a character that continues a JSON number.
    number_tokens: Arc<SimpleVob>,
    end_of_generation: Arc<[TokenId]>,
    eos: TokenId,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("vocab", &self.factory.tok_env().tok_trie().vocab_size()).finish_non_exhaustive()
    }
}

/// The vocabulary as llguidance sees it. Built from Hearth's own tokenizer
/// (the GGUF vocabulary, with byte tokens already decoded) rather than through
/// `toktrie_hf_tokenizers`, which would need a second copy of the `tokenizers`
/// crate at another version and a `tokenizer.json` that GGUF files lack.
struct Vocabulary {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // llguidance asks for this only for forced text; bytes that are not
        // UTF-8 (a split character) fall back to the trie's greedy split.
        match std::str::from_utf8(s) {
            Ok(text) => self.tokenizer.encode_plain(text).unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

impl Grammars {
    /// Builds the trie of `tokenizer`'s vocabulary (tens of milliseconds for
    /// a 262k-token vocabulary).
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, ConstraintError> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as TokenId)
            .map(|t| {
                if tokenizer.is_control(t) {
                    // llguidance's marker for special tokens: never text.
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tokenizer.token_text(t).unwrap_or("").as_bytes());
                    w
                } else {
                    tokenizer.token_bytes(t).to_vec()
                }
            })
            .collect();
        let end_of_generation: Arc<[TokenId]> = tokenizer.end_of_generation_tokens().into();
        let eos = tokenizer.eos.or_else(|| end_of_generation.first().copied()).ok_or_else(|| {
            ConstraintError("this model's vocabulary has no end-of-sequence token to end constrained output".into())
        })?;
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tokenizer.bos;
        let trie = TokTrie::from(&info, &words);
        let mut number_tokens = trie.alloc_token_set();
        for t in 0..n as TokenId {
            if trie.token(t).first().is_some_and(|b| NUMBER_BYTES.contains(b)) {
                number_tokens.allow_token(t);
            }
        }
        let env: TokEnv = Arc::new(Vocabulary { tokenizer, trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory, number_tokens: Arc::new(number_tokens), end_of_generation, eos })
    }

    /// Compiles `constraint` into a fresh guide. Errors (an invalid schema,
    /// a grammar that does not parse, an unsupported keyword) name the
    /// problem as llguidance reports it.
    pub fn compile(&self, constraint: &Constraint) -> Result<Guide, ConstraintError> {
        let parser = self.factory.create_parser(constraint.grammar()).map_err(|e| ConstraintError(clean(&e.to_string())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError(clean(&e)));
        }
        let json = matches!(constraint, Constraint::JsonObject | Constraint::JsonSchema(_));
        Ok(Guide {
            matcher,
            mask: None,
            end_of_generation: Arc::clone(&self.end_of_generation),
            eos: self.eos,
            numbers: json.then(|| NumberBound { tokens: Arc::clone(&self.number_tokens), scan: JsonScan::default() }),
            env: self.factory.tok_env().clone(),
        })
    }
}

/// llguidance's messages sometimes carry a trailing newline or a context
/// chain on several lines; one line reads better in an API error.
fn clean(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One sequence's constraint in progress.
pub struct Guide {
    matcher: Matcher,
    /// The mask for the next token, computed ahead (while the forward pass runs).
    mask: Option<Result<SimpleVob, String>>,
    end_of_generation: Arc<[TokenId]>,
    /// The one end token llguidance knows (its mask bit stands for all of them).
    eos: TokenId,
    /// For JSON output: where numbers are, to bound their length.
    numbers: Option<NumberBound>,
    env: TokEnv,
}

/// Bytes that continue a JSON number.
const NUMBER_BYTES: &[u8] = b"0123456789.eE+-";

/// Longest JSON number Hearth lets a model write where the grammar would let
/// it go on. A JSON schema bounds a number's value, not its digits, so
/// `{"type": "number", "maximum": 1}` still allows `0.2500000000…` forever,
/// and a sampled small model does write that. 24 characters hold any `f64`
/// in its shortest round-trip form (`-2.2250738585072014e-308`); past them a
/// number may only go on if the grammar allows nothing else (a bound such as
/// `minimum: 1e30` on an integer), so no valid output becomes impossible.
pub const MAX_NUMBER_CHARS: usize = 24;

#[derive(Clone)]
struct NumberBound {
    tokens: Arc<SimpleVob>,
    scan: JsonScan,
}

/// Where the JSON written so far stands: inside a string, or how many
/// characters of a number (or literal) run at its end.
#[derive(Debug, Clone, Copy, Default)]
struct JsonScan {
    in_string: bool,
    escaped: bool,
    number_chars: usize,
}

impl JsonScan {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else if b == b'"' {
                self.in_string = true;
                self.number_chars = 0;
            } else if NUMBER_BYTES.contains(&b) {
                self.number_chars += 1;
            } else {
                self.number_chars = 0;
            }
        }
    }
}

impl Clone for Guide {
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            mask: self.mask.clone(),
            end_of_generation: Arc::clone(&self.end_of_generation),
            eos: self.eos,
            numbers: self.numbers.clone(),
            env: self.env.clone(),
        }
    }
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guide").field("stopped", &self.matcher.is_stopped()).finish_non_exhaustive()
    }
}

/// What accepting a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More tokens may (or must) follow.
    More,
    /// The grammar is complete: nothing may follow, the sequence ends here.
    Complete,
}

impl Guide {
    /// Computes the mask for the next token now, so [`Guide::apply`] finds
    /// it ready. Call it off the critical path (Hearth's engine calls it on
    /// a second thread while the forward pass runs).
    pub fn prepare(&mut self) {
        if self.mask.is_none() {
            self.mask = Some(self.matcher.compute_mask_or_eos().map_err(|e| clean(&e.to_string())));
        }
    }

    /// Sets every logit the grammar forbids to −∞. Where the grammar may end,
    /// every end-of-generation token of the model is allowed (llguidance
    /// knows one EOS; chat models end turns with others).
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        self.prepare();
        let mut mask = match self.mask.take() {
            Some(Ok(mask)) => mask,
            Some(Err(e)) => return Err(ConstraintError(e)),
            None => unreachable!("prepare() always leaves a mask"),
        };
        if let Some(n) = &self.numbers {
            if n.scan.number_chars >= MAX_NUMBER_CHARS {
                let mut ended = mask.clone();
                ended.sub(&n.tokens);
                if !ended.is_zero() {
                    mask = ended;
                }
            }
        }
        let may_end = mask.is_allowed(self.eos);
        // End tokens keep their logits where the grammar may end, and only there.
        let ends: Vec<(usize, f32)> = self
            .end_of_generation
            .iter()
            .filter_map(|&t| logits.get(t as usize).map(|&l| (t as usize, if may_end { l } else { f32::NEG_INFINITY })))
            .collect();
        let known = mask.len().min(logits.len());
        for (t, logit) in logits[..known].iter_mut().enumerate() {
            if !mask.is_allowed(t as TokenId) {
                *logit = f32::NEG_INFINITY;
            }
        }
        // Rows past the vocabulary (padding in some files) are never text.
        logits[known..].fill(f32::NEG_INFINITY);
        for (t, l) in ends {
            logits[t] = l;
        }
        Ok(())
    }

    /// Follows the chosen `token`. An end-of-generation token is the end
    /// (allowed only where the grammar may end), so it is not fed on.
    pub fn accept(&mut self, token: TokenId) -> Result<Progress, ConstraintError> {
        self.mask = None;
        if self.end_of_generation.binary_search(&token).is_ok() {
            return Ok(Progress::Complete);
        }
        self.matcher.consume_token(token).map_err(|e| ConstraintError(clean(&e.to_string())))?;
        if let Some(n) = &mut self.numbers {
            n.scan.push(self.env.tok_trie().token(token));
        }
        Ok(if self.matcher.is_stopped() { Progress::Complete } else { Progress::More })
    }

    /// Whether the output so far is a complete match.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::JsonScan;

    #[test]
    fn the_scan_counts_number_runs_outside_strings_only() {
        let mut s = JsonScan::default();
        s.push(br#"{"a": "12345\"678", "b": 0.12"#);
        assert_eq!(s.number_chars, 4);
        s.push(b"5");
        assert_eq!(s.number_chars, 5);
        s.push(br#", "c": "9"#);
        assert!(s.in_string);
        assert_eq!(s.number_chars, 0);
    }
}
