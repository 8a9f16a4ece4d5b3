//! Model names as Ollama writes them, `name:tag` (the tag `latest` when left
//! out), and the cache's tag file: which local file each user-given name
//! points at. Built-in aliases need no entry (`smollm2` is
//! `smollm2:latest`); `hearth pull FILE --as name:tag` and Ollama's
//! `/api/copy` add entries, `/api/delete` removes them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use crate::CatalogError;

/// The tag of a name written without one.
pub const DEFAULT_TAG: &str = "latest";
/// The tag file, in the cache folder.
pub(crate) const TAGS_FILE: &str = "tags.json";

/// A model name with its tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName {
    /// The name: letters, digits, `.`, `_`, `-`, and `/` between parts
    /// (`library/llama4-8b`).
    pub name: String,
    /// The tag: letters, digits, `.`, `_`, `-`.
    pub tag: String,
}

impl ModelName {
    /// Parses `name` or `name:tag`; a name that could escape the cache
    /// folder or would not round-trip is an error naming the rule.
    pub fn parse(s: &str) -> Result<Self, CatalogError> {
        let (name, tag) = s.rsplit_once(':').unwrap_or((s, DEFAULT_TAG));
        let bad = |why: &str| CatalogError::BadName(s.to_owned(), why.to_owned());
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 200 {
            return Err(bad("a name has 1 to 200 characters"));
        }
        if !name.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && part.chars().all(ok_char)) {
            return Err(bad("a name is letters, digits, '.', '_' and '-', with '/' between parts (none starting with '.')"));
        }
        if tag.is_empty() || tag.len() > 80 || !tag.chars().all(ok_char) {
            return Err(bad("a tag is 1 to 80 letters, digits, '.', '_' and '-'"));
        }
        Ok(Self { name: name.to_owned(), tag: tag.to_owned() })
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// Whether two written names mean the same model (`x` and `x:latest` do).
#[must_use]
pub fn same_model(a: &str, b: &str) -> bool {
    match (ModelName::parse(a), ModelName::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The tag file's contents: full name → file, relative to the cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tags(pub BTreeMap<String, String>);

impl Tags {
    /// Reads the tag file of `cache` (none yet: no tags). A file that is
    /// not the expected JSON is an error, never silently emptied.
    pub fn read(cache: &Path) -> Result<Self, CatalogError> {
        let path = cache.join(TAGS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e.into()),
        };
        let map: BTreeMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| CatalogError::Fetch { what: path.display().to_string(), why: format!("not a tag file: {e}") })?;
        Ok(Self(map))
    }

    /// Writes the tag file whole (a temporary file renamed into place, so a
    /// crash leaves the old file or the new one).
    pub fn write(&self, cache: &Path) -> Result<(), CatalogError> {
        fs::create_dir_all(cache)?;
        let tmp = cache.join(format!(".{TAGS_FILE}.{}", std::process::id()));
        let text = serde_json::to_string_pretty(&self.0).map_err(std::io::Error::other)?;
        fs::write(&tmp, text)?;
        fs::rename(&tmp, cache.join(TAGS_FILE))?;
        Ok(())
    }

    /// Names pointing at `file`.
    pub fn names_of(&self, file: &str) -> Vec<String> {
        self.0.iter().filter(|(_, f)| *f == file).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_their_tags() {
        let n = ModelName::parse("smollm2").unwrap();
        assert_eq!((n.name.as_str(), n.tag.as_str()), ("smollm2", "latest"));
        assert_eq!(ModelName::parse("llama4-8b:1.58bit").unwrap().to_string(), "llama4-8b:1.58bit");
        assert_eq!(ModelName::parse("library/qwen3:8b-q4_K_M").unwrap().name, "library/qwen3");
        for bad in ["", ":x", "a:", "../etc/passwd", "a/../b", "a//b", "/abs", "a b", "a:b:c", "a:t/x", ".hidden"] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(same_model("smollm2", "smollm2:latest"));
        assert!(!same_model("smollm2", "smollm2:q8"));
    }
}
