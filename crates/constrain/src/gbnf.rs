//! llama.cpp's GBNF grammars, read by translating them into llguidance's
//! Lark (the syntax Hearth compiles): `name ::= …` rules, `"strings"`,
//! `[character classes]`, `.`, `( … )`, `|`, `*`, `+`, `?` and `{m,n}`
//! repeats, `#` comments. `root` is the start rule.
//!
//! Hand-written because no crate reads GBNF into llguidance (llguidance
//! ships a Python script for it); the translation is token by token, so a
//! grammar keeps its shape and llguidance's own errors still point at it.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Whether `src` is written in GBNF (it defines a rule with `::=`) rather
/// than Lark.
#[must_use]
pub fn is_gbnf(src: &str) -> bool {
    src.lines().any(|l| {
        let l = l.trim_start();
        let name_end = l.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(l.len());
        name_end > 0 && l[name_end..].trim_start().starts_with("::=")
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Define,
    /// A string's text, escapes decoded.
    Literal(String),
    /// A character class as a regex (`[^a-z\n]`).
    Class(String),
    Any,
    /// `|`, `(`, `)`, `*`, `+`, `?`.
    Op(char),
    /// `{m}`, `{m,}`, `{m,n}` as written.
    Repeat(String),
}

/// The Lark grammar for the GBNF grammar `src`, or what is wrong with it
/// (with its line).
pub fn to_lark(src: &str) -> Result<String, String> {
    let toks = lex(src)?;
    // Rules: a name followed by `::=`, to the next such pair.
    let mut rules: Vec<(String, Vec<Tok>)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let (Tok::Name(name), Some(Tok::Define)) = (&toks[i].0, toks.get(i + 1).map(|t| &t.0)) else {
            return Err(format!("line {}: expected a rule (`name ::= …`)", toks[i].1));
        };
        let mut j = i + 2;
        while j < toks.len() && !(matches!(toks[j].0, Tok::Name(_)) && toks.get(j + 1).is_some_and(|t| t.0 == Tok::Define)) {
            j += 1;
        }
        if j == i + 2 {
            return Err(format!("line {}: rule {name:?} is empty", toks[i].1));
        }
        rules.push((name.clone(), toks[i + 2..j].iter().map(|t| t.0.clone()).collect()));
        i = j;
    }
    if !rules.iter().any(|(n, _)| n == "root") {
        return Err("a GBNF grammar needs a `root` rule".into());
    }
    // Lark rule names are lowercase; each GBNF name gets its own.
    let mut names: HashMap<String, String> = HashMap::new();
    for (name, _) in &rules {
        if names.contains_key(name) {
            return Err(format!("rule {name:?} is defined twice"));
        }
        let mut lark = format!("g_{}", name.to_ascii_lowercase().replace('-', "_"));
        while names.values().any(|v| *v == lark) {
            lark.push('_');
        }
        names.insert(name.clone(), lark);
    }
    let mut out = format!("start: {}\n", names["root"]);
    for (name, body) in &rules {
        let _ = write!(out, "{}:", names[name]);
        for t in body {
            out.push(' ');
            match t {
                Tok::Name(n) => out.push_str(names.get(n).ok_or_else(|| format!("rule {n:?} is used but not defined"))?),
                Tok::Literal(s) => out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?),
                Tok::Class(c) => {
                    let _ = write!(out, "/{}/", c.replace('/', "\\/"));
                }
                Tok::Any => out.push_str("/(?s:.)/"),
                Tok::Op(c) => out.push(*c),
                Tok::Repeat(r) => {
                    out.pop(); // binds to what precedes it
                    out.push_str(r);
                }
                Tok::Define => return Err(format!("`::=` inside rule {name:?}")),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// GBNF's tokens, each with its line.
fn lex(src: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = src.chars().collect();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ':' if chars.get(i + 1) == Some(&':') && chars.get(i + 2) == Some(&'=') => {
                out.push((Tok::Define, line));
                i += 3;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None | Some('\n') => return Err(format!("line {line}: unterminated string")),
                        Some('"') => break,
                        Some('\\') => {
                            let (ch, used) = escape(&chars[i + 1..]).ok_or_else(|| format!("line {line}: bad escape in a string"))?;
                            text.push(ch);
                            i += 1 + used;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push((Tok::Literal(text), line));
            }
            '[' => {
                // Kept as a regex class; GBNF's escapes are regex escapes
                // (`\xHH`, `\uHHHH`, `\n`, `\]`, `\\`).
                let start = i;
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                loop {
                    match chars.get(i) {
                        None | Some('\n') => return Err(format!("line {line}: unterminated character class")),
                        Some('\\') => i += 2,
                        Some(']') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                let class: String = chars[start..i].iter().collect();
                if class == "[]" || class == "[^]" {
                    return Err(format!("line {line}: empty character class"));
                }
                out.push((Tok::Class(class), line));
            }
            '{' => {
                let start = i;
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                let rep: String = chars[start..(i + 1).min(chars.len())].iter().collect();
                let inner = rep.trim_start_matches('{').trim_end_matches('}');
                let ok = !inner.is_empty()
                    && inner.split(',').count() <= 2
                    && inner.split(',').enumerate().all(|(k, p)| p.trim().parse::<u32>().is_ok() || (k == 1 && p.trim().is_empty()));
                if !ok || !rep.ends_with('}') {
                    return Err(format!("line {line}: a repeat is {{m}}, {{m,}} or {{m,n}}"));
                }
                out.push((Tok::Repeat(rep.replace(' ', "")), line));
                i += 1;
            }
            '.' => {
                out.push((Tok::Any, line));
                i += 1;
            }
            '|' | '(' | ')' | '*' | '+' | '?' => {
                out.push((Tok::Op(c), line));
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '-' || chars[i] == '_') {
                    i += 1;
                }
                out.push((Tok::Name(chars[start..i].iter().collect()), line));
            }
            other => return Err(format!("line {line}: unexpected {other:?}")),
        }
    }
    Ok(out)
}

/// The character an escape stands for (after its backslash) and how many
/// characters it used.
fn escape(rest: &[char]) -> Option<(char, usize)> {
    let hex = |n: usize| -> Option<(char, usize)> {
        let digits: String = rest.get(1..=n)?.iter().collect();
        char::from_u32(u32::from_str_radix(&digits, 16).ok()?).map(|c| (c, n + 1))
    };
    match rest.first()? {
        'n' => Some(('\n', 1)),
        't' => Some(('\t', 1)),
        'r' => Some(('\r', 1)),
        'x' => hex(2),
        'u' => hex(4),
        'U' => hex(8),
        c @ ('\\' | '"' | '[' | ']' | '/') => Some((*c, 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_lark_rules() {
        let lark = to_lark("root ::= \"a\"{5,5}").unwrap();
        assert_eq!(lark, "start: g_root\ng_root: \"a\"{5,5}\n");
        let src = "# a list\nroot ::= item (\",\" item)*\nitem ::= [a-z]+ | \"\\x41\\n\" | num-ber\nnum-ber ::= [0-9]{1,3} .\n";
        let lark = to_lark(src).unwrap();
        assert!(lark.contains("g_root: g_item ( \",\" g_item ) *"), "{lark}");
        assert!(lark.contains("g_item: /[a-z]/ + | \"A\\n\" | g_num_ber"), "{lark}");
        assert!(lark.contains("g_num_ber: /[0-9]/{1,3} /(?s:.)/"), "{lark}");
        assert!(is_gbnf(src) && !is_gbnf("start: \"a\"") && !is_gbnf("x: \"::=\""));
    }

    #[test]
    fn bad_grammars_are_named() {
        for (src, needle) in [
            ("item ::= \"a\"", "root"),
            ("root ::= item", "not defined"),
            ("root ::= \"a", "unterminated"),
            ("root ::= [a-z", "unterminated"),
            ("root ::= \"a\"{x}", "repeat"),
            ("root ::= \"a\"\nroot ::= \"b\"", "twice"),
            ("root ::= @", "unexpected"),
            ("root ::=", "empty"),
        ] {
            let err = to_lark(src).unwrap_err();
            assert!(err.contains(needle), "{src:?}: {err}");
        }
    }
}
