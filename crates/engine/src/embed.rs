//! Embedding and reranking models: a BERT encoder from a Hugging Face folder
//! with its tokenizer and sentence-transformers pooling, and the worker that
//! batches inputs across requests.
//!
//! The worker takes every queued job at once (up to a token budget), packs
//! all their sequences into one forward pass (no padding: attention stays
//! within each sequence) and answers each job. Many small requests thus cost
//! about what one batch of the same inputs costs.

use std::path::Path;
use std::sync::{mpsc, Arc};

use hearth_core::{Backend, TokenId};
use hearth_models::bert::BertEncoder;
use hearth_text::EncoderTokenizer;
use tokio::sync::oneshot;

use crate::EngineError;

/// How token states become one vector (sentence-transformers' pooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of all token states.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The last token's state.
    Last,
}

/// An encoder ready to embed or rerank.
pub struct EmbeddingModel {
    encoder: BertEncoder,
    tokenizer: EncoderTokenizer,
    /// How token states are pooled.
    pub pooling: Pooling,
    /// Whether vectors are scaled to length 1.
    pub normalize: bool,
    /// Longest input in tokens (special tokens included).
    pub max_tokens: usize,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

fn json_file(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl EmbeddingModel {
    /// Loads the encoder folder `dir`: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, and the sentence-transformers files when present
    /// (`1_Pooling/config.json` for pooling, `modules.json` for
    /// normalization, `sentence_bert_config.json` for the input limit).
    ///
    /// A file instead of a folder is read as a GGUF `bert` or `nomic-bert`
    /// file (llama.cpp's layout; its `pooling_type`, vectors normalized as
    /// llama.cpp does).
    pub fn load(dir: &Path, backend: Arc<dyn Backend>) -> Result<Self, EngineError> {
        if dir.is_file() {
            return Self::load_gguf(dir, backend);
        }
        let tokenizer = EncoderTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let encoder = BertEncoder::load(dir, backend)?;
        let pooling_cfg = json_file(&dir.join("1_Pooling/config.json"));
        let flag = |k: &str| pooling_cfg.as_ref().and_then(|c| c.get(k)).and_then(serde_json::Value::as_bool) == Some(true);
        let pooling = if flag("pooling_mode_cls_token") {
            Pooling::Cls
        } else if flag("pooling_mode_lasttoken") {
            Pooling::Last
        } else if pooling_cfg.is_some() && !flag("pooling_mode_mean_tokens") {
            return Err(EngineError::Invalid(format!(
                "{}: only mean, CLS and last-token pooling are supported",
                dir.join("1_Pooling/config.json").display()
            )));
        } else {
            Pooling::Mean
        };
        let normalize = json_file(&dir.join("modules.json"))
            .and_then(|m| m.as_array().cloned())
            .is_some_and(|mods| mods.iter().any(|m| m.get("type").and_then(serde_json::Value::as_str).is_some_and(|t| t.ends_with("Normalize"))));
        let max_positions = encoder.config.max_positions;
        let max_tokens = json_file(&dir.join("sentence_bert_config.json"))
            .and_then(|c| c.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .map_or(max_positions, |m| (m as usize).min(max_positions));
        Ok(Self { encoder, tokenizer, pooling, normalize, max_tokens })
    }

    fn load_gguf(path: &Path, backend: Arc<dyn Backend>) -> Result<Self, EngineError> {
        let file = hearth_gguf::GgufFile::open(path)
            .map_err(|reason| EngineError::Load { path: path.display().to_string(), reason })?;
        let tokenizer = EncoderTokenizer::from_gguf(&file)?;
        let encoder = BertEncoder::load_gguf(&file, backend)?;
        let arch = file.get_str("general.architecture").unwrap_or("bert");
        let pooling = match file.get(&format!("{arch}.pooling_type")).and_then(hearth_gguf::MetaValue::as_u64) {
            Some(2) => Pooling::Cls,
            Some(3) => Pooling::Last,
            _ => Pooling::Mean,
        };
        let max_tokens = encoder.config.max_positions;
        Ok(Self { encoder, tokenizer, pooling, normalize: true, max_tokens })
    }

    /// Width of the vectors.
    #[must_use]
    pub fn dims(&self) -> usize {
        self.encoder.config.hidden
    }

    /// Whether the model scores pairs itself (a cross-encoder).
    #[must_use]
    pub fn is_cross_encoder(&self) -> bool {
        self.encoder.is_cross_encoder()
    }

    /// Vocabulary size (token-array inputs are checked against it).
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.encoder.config.vocab_size
    }

    /// Tokens of `text`, special tokens included, not truncated.
    pub fn tokenize(&self, text: &str) -> Result<Vec<TokenId>, EngineError> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// Tokens and segments of a (query, document) pair.
    pub fn tokenize_pair(&self, query: &str, doc: &str) -> Result<(Vec<TokenId>, Vec<u8>), EngineError> {
        Ok(self.tokenizer.encode_pair(query, doc)?)
    }

    /// `ids` cut to the input limit, keeping the final special token (`[SEP]`).
    #[must_use]
    pub fn truncate(&self, mut ids: Vec<TokenId>) -> Vec<TokenId> {
        if ids.len() > self.max_tokens && self.max_tokens >= 2 {
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        ids
    }

    /// Pooled (and, per the model, normalized) vectors of packed sequences.
    pub fn embed_tokens(&self, seqs: &[Vec<TokenId>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let h = self.dims();
        let packed: Vec<(&[TokenId], &[u8])> = seqs.iter().map(|s| (s.as_slice(), &[][..])).collect();
        let states = self.encoder.forward(&packed)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for s in seqs {
            let rows = &states[row * h..(row + s.len()) * h];
            let mut v = match self.pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Last => rows[rows.len() - h..].to_vec(),
                Pooling::Mean => {
                    let mut m = vec![0.0f32; h];
                    for r in rows.chunks_exact(h) {
                        m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                    }
                    m.iter_mut().for_each(|a| *a /= s.len().max(1) as f32);
                    m
                }
            };
            if self.normalize {
                normalize(&mut v);
            }
            out.push(v);
            row += s.len();
        }
        Ok(out)
    }

    /// Relevance of packed (query, document) pairs from a cross-encoder.
    pub fn score_pairs(&self, pairs: &[(Vec<TokenId>, Vec<u8>)]) -> Result<Vec<f32>, EngineError> {
        let packed: Vec<(&[TokenId], &[u8])> = pairs.iter().map(|(i, t)| (i.as_slice(), t.as_slice())).collect();
        Ok(self.encoder.classify(&packed)?)
    }
}

/// Scales `v` to length 1 (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// What one job asks of the worker.
pub enum EmbedJob {
    /// Vectors of these sequences.
    Embed(Vec<Vec<TokenId>>),
    /// Cross-encoder scores of these pairs.
    Score(Vec<(Vec<TokenId>, Vec<u8>)>),
}

/// What the worker answers.
pub type EmbedAnswer = Result<Vec<Vec<f32>>, String>;

struct Queued {
    job: EmbedJob,
    reply: oneshot::Sender<EmbedAnswer>,
}

/// A cloneable handle to the embedding worker thread.
#[derive(Clone)]
pub struct EmbedHandle {
    jobs: mpsc::Sender<Queued>,
    model: Arc<EmbeddingModel>,
}

/// Tokens one packed forward pass takes at most (bounds scratch memory:
/// the feed-forward activations are this × the intermediate width).
pub const EMBED_TOKEN_BUDGET: usize = 8192;

impl EmbedHandle {
    /// Starts the worker over `model`.
    #[must_use]
    pub fn spawn(model: Arc<EmbeddingModel>) -> Self {
        let (tx, rx) = mpsc::channel::<Queued>();
        let worker = Arc::clone(&model);
        std::thread::Builder::new()
            .name("hearth-embed".into())
            .spawn(move || run_worker(&worker, &rx))
            .map_or_else(|e| tracing::error!("cannot start the embedding worker: {e}"), |_| ());
        Self { jobs: tx, model }
    }

    /// The model (limits, tokenizer).
    #[must_use]
    pub fn model(&self) -> &Arc<EmbeddingModel> {
        &self.model
    }

    /// Queues `job`; the answer comes when its batch has run.
    pub async fn run(&self, job: EmbedJob) -> Result<Vec<Vec<f32>>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Queued { job, reply }).map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?.map_err(EngineError::Invalid)
    }
}

fn tokens_of(job: &EmbedJob) -> usize {
    match job {
        EmbedJob::Embed(s) => s.iter().map(Vec::len).sum(),
        EmbedJob::Score(p) => p.iter().map(|(i, _)| i.len()).sum(),
    }
}

/// Waits for a job, takes every other queued one that fits the budget, runs
/// embeddings and scores as (at most) two packed passes, answers each.
fn run_worker(model: &EmbeddingModel, rx: &mpsc::Receiver<Queued>) {
    let mut carry: Option<Queued> = None;
    loop {
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv() {
                Ok(q) => q,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        let mut tokens = tokens_of(&batch[0].job);
        while let Ok(q) = rx.try_recv() {
            let t = tokens_of(&q.job);
            if tokens + t > EMBED_TOKEN_BUDGET {
                carry = Some(q);
                break;
            }
            tokens += t;
            batch.push(q);
        }
        let (embeds, scores): (Vec<Queued>, Vec<Queued>) = batch.into_iter().partition(|q| matches!(q.job, EmbedJob::Embed(_)));
        answer_embeds(model, embeds);
        for q in scores {
            let EmbedJob::Score(pairs) = &q.job else { continue };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.score_pairs(pairs)))
                .map_err(|_| "internal error in the encoder".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map(|s| s.into_iter().map(|x| vec![x]).collect());
            let _ = q.reply.send(result);
        }
    }
}

fn answer_embeds(model: &EmbeddingModel, jobs: Vec<Queued>) {
    if jobs.is_empty() {
        return;
    }
    let mut all: Vec<Vec<TokenId>> = Vec::new();
    let mut counts = Vec::with_capacity(jobs.len());
    for q in &jobs {
        if let EmbedJob::Embed(seqs) = &q.job {
            counts.push(seqs.len());
            all.extend(seqs.iter().cloned());
        }
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed_tokens(&all)))
        .map_err(|_| "internal error in the encoder".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match result {
        Ok(vectors) => {
            let mut it = vectors.into_iter();
            for (q, n) in jobs.into_iter().zip(counts) {
                let _ = q.reply.send(Ok(it.by_ref().take(n).collect()));
            }
        }
        // One job's bad input must not fail the others packed with it:
        // each runs alone, and only the culprit gets the error.
        Err(_) if jobs.len() > 1 => {
            for q in jobs {
                answer_embeds(model, vec![q]);
            }
        }
        Err(e) => {
            for q in jobs {
                let _ = q.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Pools `rows` (`n × dim` hidden states of one sequence) into one vector.
fn pool(rows: &[f32], dim: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => rows[..dim].to_vec(),
        Pooling::Last => rows[rows.len() - dim..].to_vec(),
        Pooling::Mean => {
            let n = rows.len() / dim;
            let mut m = vec![0.0f32; dim];
            for r in rows.chunks_exact(dim) {
                m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
            }
            m.iter_mut().for_each(|a| *a /= n.max(1) as f32);
            m
        }
    }
}

impl crate::LoadedModel {
    /// How this decoder model pools for embeddings: the file's
    /// `{arch}.pooling_type` (llama.cpp's numbering: 1 mean, 2 CLS, 3 last),
    /// else the last token (what decoder embedding models such as
    /// Qwen3-Embedding are trained for).
    #[must_use]
    pub fn pooling(&self) -> Pooling {
        let arch = self.file.get_str("general.architecture").unwrap_or("");
        match self.file.get(&format!("{arch}.pooling_type")).and_then(hearth_gguf::MetaValue::as_u64) {
            Some(1) => Pooling::Mean,
            Some(2) => Pooling::Cls,
            _ => Pooling::Last,
        }
    }

    /// An L2-normalized embedding of `tokens` from the model's final hidden
    /// states. The prompt is run in chunks of the engine's step budget
    /// through its own single-sequence cache.
    pub fn embed(&self, tokens: &[TokenId], pooling: Pooling) -> Result<Vec<f32>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::Invalid("nothing to embed".into()));
        }
        let dim = self.model.config().n_embd;
        let mut kv = self.new_cache(&crate::batching::EngineConfig::single(tokens.len()))?;
        let chunk = crate::batching::EngineConfig::TOKEN_BUDGET;
        let mut rows = Vec::new();
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let start = i * chunk;
            let last_chunk = start + part.len() == tokens.len();
            let mut batch = hearth_core::ForwardBatch::single(hearth_core::SeqId(0), part, start);
            // Only the rows the pooling reads are projected.
            batch.logit_rows = match pooling {
                Pooling::Mean => (0..part.len()).collect(),
                Pooling::Cls if i == 0 => vec![0],
                Pooling::Last if last_chunk => vec![part.len() - 1],
                _ => Vec::new(),
            };
            rows.extend(kv.forward_hidden(self.model.as_ref(), batch)?);
        }
        let mut v = pool(&rows, dim, if pooling == Pooling::Mean { Pooling::Mean } else { Pooling::Cls });
        normalize(&mut v);
        Ok(v)
    }
}
