//! `hearth serve --config FILE`: the models to serve, each with its own
//! settings, and the triage router, in one TOML file.
//!
//! ```toml
//! memory = "2G"          # the budget models load under (--memory wins)
//! keep_alive = "10m"     # default for every model (--keep-alive wins)
//!
//! [[model]]
//! name = "small"         # the name requests use
//! model = "smollm2"      # an alias, name:tag or path
//! context = "8k"         # per user (default: --ctx-size)
//! parallel = 8           # users at once (default: --parallel)
//! keep_alive = "1h"
//! aliases = ["gpt-4o-mini"]
//!
//! [[model]]
//! name = "big"
//! model = "gemma3-270m"
//! chat_template = "gemma"          # or chat_template_file = "x.jinja"
//! lora = { legal = "legal.gguf" }   # adapters: requests ask for "big:legal"
//!
//! [router]
//! name = "auto"          # the model name that routes (default auto)
//! small = "small"
//! big = "big"
//! long_prompt_tokens = 1000        # 0: off
//! hard_keywords = ["prove", "step by step"]
//! easy_keywords = ["translate"]
//! tools = "big"                     # where tool requests go ("" : rule off)
//! json = "small"                    # where JSON/schema requests go
//! classify = true                   # ask the small model when no rule decides
//! classifier_threshold = -3.5       # its margin log p(easy) − log p(hard) at and above
//!                                   # which a request is easy (scripts/route-eval --calibrate)
//! fallback = "big"
//! ```
//!
//! Every key is checked: an unknown one is an error naming it (a typo must
//! not silently become a default).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hearth_engine::router::{RoutePolicy, Target};
use serde::Deserialize;

use crate::size::{parse_bytes, parse_duration, parse_tokens};

/// The file as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    memory: Option<Size>,
    keep_alive: Option<String>,
    #[serde(default)]
    model: Vec<ModelEntry>,
    router: Option<RouterEntry>,
}

/// A number, or a number with a unit as the command line writes it (`8k`, `2G`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Size {
    Number(u64),
    Text(String),
}

impl Size {
    fn text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    name: Option<String>,
    model: String,
    context: Option<Size>,
    parallel: Option<usize>,
    keep_alive: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    chat_template: Option<String>,
    chat_template_file: Option<PathBuf>,
    /// LoRA adapters: name → file (relative: beside the config file).
    #[serde(default)]
    lora: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RouterEntry {
    name: Option<String>,
    small: String,
    big: String,
    long_prompt_tokens: Option<usize>,
    #[serde(default)]
    hard_keywords: Vec<String>,
    #[serde(default)]
    easy_keywords: Vec<String>,
    tools: Option<String>,
    json: Option<String>,
    classify: Option<bool>,
    classifier_threshold: Option<f32>,
    fallback: Option<String>,
}

/// One model of the file, checked, its reference not yet resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredModel {
    /// The name it is served under (default: the model as written).
    pub name: Option<String>,
    /// An alias, a name or a path (relative paths from the file's folder).
    pub model: String,
    pub context: Option<usize>,
    pub parallel: Option<usize>,
    pub keep_alive: Option<Duration>,
    pub aliases: Vec<String>,
    /// A built-in template's name.
    pub chat_template: Option<String>,
    pub chat_template_file: Option<PathBuf>,
    /// LoRA adapters loaded with it: (name, file).
    pub lora: Vec<(String, PathBuf)>,
}

/// What a configuration file says, checked.
#[derive(Debug, Default)]
pub struct ServeConfig {
    pub memory: Option<u64>,
    pub keep_alive: Option<Duration>,
    pub models: Vec<ConfiguredModel>,
    pub router: Option<hearth_server::TriageRouter>,
}

impl ServeConfig {
    /// Reads and checks the file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or_else(|| Path::new(".")))
            .with_context(|| format!("in {}", path.display()))
    }

    /// Checks the text of a file that lives in `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let file: File = toml::from_str(text)?;
        let duration = |what: &str, v: &Option<String>| -> Result<Option<Duration>> {
            v.as_deref().map(parse_duration).transpose().map_err(|e| anyhow::anyhow!("{what}: {e}"))
        };
        let mut models = Vec::with_capacity(file.model.len());
        for (i, m) in file.model.into_iter().enumerate() {
            let label = m.name.clone().unwrap_or_else(|| format!("[[model]] {}", i + 1));
            if m.model.trim().is_empty() {
                bail!("{label}: `model` is empty");
            }
            if m.chat_template.is_some() && m.chat_template_file.is_some() {
                bail!("{label}: give chat_template or chat_template_file, not both");
            }
            // A path relative to the file is read from beside it.
            let beside = dir.join(&m.model);
            let model = if Path::new(&m.model).is_relative() && beside.exists() {
                beside.display().to_string()
            } else {
                m.model
            };
            models.push(ConfiguredModel {
                name: m.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
                model,
                context: m
                    .context
                    .map(|c| parse_tokens(&c.text()))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{label}: context: {e}"))?,
                parallel: match m.parallel {
                    Some(0) => bail!("{label}: parallel must be at least 1"),
                    p => p,
                },
                keep_alive: duration(&format!("{label}: keep_alive"), &m.keep_alive)?,
                aliases: m.aliases,
                chat_template: m.chat_template,
                chat_template_file: m.chat_template_file.map(|p| dir.join(p)),
                lora: m.lora.into_iter().map(|(name, file)| (name, dir.join(file))).collect(),
            });
        }
        let router = file.router.map(router_of).transpose().context("[router]")?;
        Ok(Self {
            memory: file.memory.map(|m| parse_bytes(&m.text())).transpose().map_err(|e| anyhow::anyhow!("memory: {e}"))?,
            keep_alive: duration("keep_alive", &file.keep_alive)?,
            models,
            router,
        })
    }
}

/// The router's table, checked (its model names are checked against the
/// served models when the server starts).
fn router_of(r: RouterEntry) -> Result<hearth_server::TriageRouter> {
    /// `small`, `big`, or empty for "this rule is off".
    fn target(key: &str, v: Option<&str>, default: Option<Target>) -> Result<Option<Target>> {
        match v.map(str::trim) {
            None => Ok(default),
            Some("") => Ok(None),
            Some(t) => Target::parse(t).map(Some).ok_or_else(|| anyhow::anyhow!("{key} is \"small\", \"big\" or \"\", not {t:?}")),
        }
    }
    let d = RoutePolicy::default();
    let fallback = target("fallback", r.fallback.as_deref(), Some(d.fallback))?
        .ok_or_else(|| anyhow::anyhow!("fallback must be \"small\" or \"big\""))?;
    if hearth_catalog::same_model(&r.small, &r.big) {
        bail!("small and big are the same model ({:?})", r.small);
    }
    Ok(hearth_server::TriageRouter {
        name: r.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| "auto".into()),
        small: r.small,
        big: r.big,
        policy: RoutePolicy {
            long_prompt_tokens: match r.long_prompt_tokens {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.long_prompt_tokens,
            },
            hard_keywords: r.hard_keywords,
            easy_keywords: r.easy_keywords,
            tools: target("tools", r.tools.as_deref(), d.tools)?,
            json: target("json", r.json.as_deref(), d.json)?,
            classify: r.classify.unwrap_or(d.classify),
            classifier_threshold: match r.classifier_threshold {
                Some(t) if !t.is_finite() => bail!("classifier_threshold must be a finite number"),
                t => t.unwrap_or(d.classifier_threshold),
            },
            fallback,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
memory = "2G"
keep_alive = "10m"

[[model]]
name = "small"
model = "smollm2"
context = "8k"
parallel = 8
keep_alive = "1h"
aliases = ["gpt-4o-mini"]

[[model]]
name = "big"
model = "gemma3-270m"
chat_template = "gemma"
lora = { legal = "adapters/legal.gguf" }

[router]
small = "small"
big = "big"
long_prompt_tokens = 500
hard_keywords = ["prove"]
json = "small"
tools = ""
"#;

    #[test]
    fn the_documented_example_reads() {
        let c = ServeConfig::parse(EXAMPLE, Path::new("/nowhere")).expect("parses");
        assert_eq!(c.memory, Some(2 << 30));
        assert_eq!(c.keep_alive, Some(Duration::from_mins(10)));
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[0].context, Some(8192));
        assert_eq!(c.models[0].parallel, Some(8));
        assert_eq!(c.models[0].keep_alive, Some(Duration::from_hours(1)));
        assert_eq!(c.models[0].aliases, ["gpt-4o-mini"]);
        assert_eq!(c.models[1].chat_template.as_deref(), Some("gemma"));
        assert_eq!(c.models[1].lora, [("legal".to_owned(), PathBuf::from("/nowhere/adapters/legal.gguf"))]);
        let r = c.router.expect("router");
        assert_eq!((r.name.as_str(), r.small.as_str(), r.big.as_str()), ("auto", "small", "big"));
        assert_eq!(r.policy.long_prompt_tokens, Some(500));
        assert_eq!(r.policy.json, Some(Target::Small));
        assert_eq!(r.policy.tools, None, "an empty target turns the rule off");
        assert!(r.policy.classify);
        assert_eq!(r.policy.fallback, Target::Big);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| format!("{:#}", ServeConfig::parse(text, Path::new(".")).expect_err("refused"));
        assert!(err("memroy = \"2G\"").contains("memroy"), "{}", err("memroy = \"2G\""));
        assert!(err("[[model]]\nmodel = \"x\"\ncontxt = 5").contains("contxt"));
        assert!(err("[[model]]\nmodel = \"x\"\ncontext = \"lots\"").contains("context"));
        assert!(err("[[model]]\nmodel = \"x\"\nparallel = 0").contains("parallel"));
        assert!(err("keep_alive = \"5 days\"").contains("keep_alive"));
        assert!(err("[router]\nsmall = \"a\"\nbig = \"a\"").contains("same model"));
        assert!(err("[router]\nsmall = \"a\"\nbig = \"b\"\ntools = \"huge\"").contains("tools"));
        assert!(err("[router]\nsmall = \"a\"").contains("big"));
        assert!(err("memory = [1]").contains("memory"));
    }
}
