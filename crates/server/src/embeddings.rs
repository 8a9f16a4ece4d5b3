//! `POST /v1/embeddings` (OpenAI's shape) and `POST /v1/rerank` (the shape
//! of the common rerank APIs: Cohere's, Jina's, llama-server's), answered by
//! the embedding model served beside the chat model (`--embedding-model`),
//! or by the chat model itself (its pooled final hidden states) when it is
//! named or no embedding model is served. Inputs are tokenized and sized
//! here; the encoder's worker packs them with other requests' into one pass.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use hearth_core::TokenId;
use hearth_engine::embed::{normalize, EmbedHandle, EmbedJob};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{parse, AppState, Served};

/// Most inputs in one embeddings request (OpenAI's bound).
pub const MAX_INPUTS: usize = 2048;
/// Most documents in one rerank request.
pub const MAX_DOCUMENTS: usize = 1024;

/// The embedding model served beside the chat model.
#[derive(Clone)]
pub struct Embedder {
    /// Its name in `model` fields and `/v1/models`.
    pub name: String,
    /// Its worker.
    pub handle: EmbedHandle,
}

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    /// Cut over-long inputs to the model's limit instead of refusing them (extension).
    #[serde(default)]
    truncate: bool,
}

#[derive(Debug, Deserialize)]
struct RerankRequest {
    query: String,
    /// Cohere's and Jina's name; Hugging Face TEI's is `texts`.
    #[serde(alias = "texts")]
    documents: Vec<Value>,
    model: Option<String>,
    top_n: Option<usize>,
    #[serde(default = "yes")]
    return_documents: bool,
    #[serde(default)]
    truncate: bool,
}

fn yes() -> bool {
    true
}

/// Which model embeds a request.
#[derive(Clone)]
pub(crate) enum Source {
    /// The embedding model served beside the chat model.
    Encoder(Embedder),
    /// A chat model itself.
    Decoder(Arc<Served>),
}

impl Source {
    pub(crate) fn name(&self) -> String {
        match self {
            Self::Encoder(e) => e.name.clone(),
            Self::Decoder(state) => state.model_name.clone(),
        }
    }

    fn normalized(&self) -> bool {
        match self {
            Self::Encoder(e) => e.handle.model().normalize,
            Self::Decoder(_) => true,
        }
    }

    /// Embeds `seqs` where this source computes.
    pub(crate) async fn run(&self, seqs: Vec<Vec<TokenId>>) -> Result<Vec<Vec<f32>>, ApiError> {
        let result = match self {
            Self::Encoder(e) => e.handle.run(EmbedJob::Embed(seqs)).await,
            Self::Decoder(state) => {
                let session = state.engine.session();
                state.engine.embed(seqs, session.pooling()).await
            }
        };
        result.map_err(|err| match err {
            hearth_engine::EngineError::Model(m) => ApiError::invalid("model", m.to_string()),
            other => ApiError::internal(other.to_string()),
        })
    }
}

/// The model `model` names: the embedding model (also when none is named
/// and one is served) or the chat model.
pub(crate) async fn source(state: &Arc<AppState>, model: Option<&str>) -> Result<Source, ApiError> {
    let named = model.filter(|m| !m.is_empty());
    let decoder = |m: &str| {
        let m = m.to_owned();
        async move { Ok(Source::Decoder(Arc::new(state.served(&m).await?))) }
    };
    match (&state.embedder, named) {
        (Some(e), None) => Ok(Source::Encoder(e.clone())),
        (Some(e), Some(m)) if hearth_catalog::same_model(m, &e.name) => Ok(Source::Encoder(e.clone())),
        (_, Some(m)) if state.serves(m) => decoder(m).await,
        // The default model for embeddings is the embedding model, if any.
        (Some(e), Some(_)) if state.default_model => Ok(Source::Encoder(e.clone())),
        (None, _) => decoder(named.unwrap_or("")).await,
        (Some(e), Some(m)) => Err(ApiError::unknown_model(m, &format!("{} or {}", e.name, state.model_name()))),
    }
}

/// Text to tokens, or why not.
type Tokenize = dyn Fn(&str) -> Result<Vec<TokenId>, String> + Send;

/// The rule for one source's inputs: how to tokenize, the vocabulary, the
/// longest input, and how to cut one.
pub(crate) struct InputRule {
    tokenize: Box<Tokenize>,
    vocab: usize,
    max_tokens: usize,
    cut: Box<dyn Fn(Vec<TokenId>) -> Vec<TokenId> + Send>,
}

pub(crate) fn input_rule(src: &Source) -> InputRule {
    match src {
        Source::Encoder(e) => {
            let (m, m2) = (Arc::clone(e.handle.model()), Arc::clone(e.handle.model()));
            InputRule {
                vocab: m.vocab_size(),
                max_tokens: m.max_tokens,
                tokenize: Box::new(move |t| m.tokenize(t).map_err(|e| e.to_string())),
                cut: Box::new(move |ids| m2.truncate(ids)),
            }
        }
        Source::Decoder(state) => {
            let session = Arc::clone(state.engine.session());
            let max = state.engine.limits().max_seq_len();
            InputRule {
                vocab: session.model.config().n_vocab,
                max_tokens: max,
                tokenize: Box::new(move |t| session.raw_prompt(t).map_err(|e| e.to_string())),
                cut: Box::new(move |mut ids| {
                    ids.truncate(max);
                    ids
                }),
            }
        }
    }
}

/// Token sequences of the `input` field: a string, a list of strings, a list
/// of token ids, or a list of such lists.
pub(crate) fn inputs(m: &InputRule, input: &Value, truncate: bool) -> Result<Vec<Vec<TokenId>>, ApiError> {
    let items: Vec<&Value> = match input {
        Value::String(_) => vec![input],
        Value::Array(a) if a.is_empty() => return Err(ApiError::invalid("input", "input must not be empty")),
        Value::Array(a) if a.iter().all(Value::is_number) => vec![input],
        Value::Array(a) => a.iter().collect(),
        _ => return Err(ApiError::invalid("input", "input must be a string, a list of strings, or token ids")),
    };
    if items.len() > MAX_INPUTS {
        return Err(ApiError::invalid("input", format!("at most {MAX_INPUTS} inputs per request, not {}", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let ids = match item {
                Value::String(s) if s.is_empty() => return Err(ApiError::invalid(&format!("input[{i}]"), "an input must not be empty")),
                Value::String(s) => {
                    // A text cannot be fewer tokens than its words; refuse
                    // megabytes before tokenizing them.
                    if !truncate && s.split_whitespace().count() > m.max_tokens {
                        return Err(too_long(i, s.split_whitespace().count(), m.max_tokens));
                    }
                    (m.tokenize)(s).map_err(|err| ApiError::invalid(&format!("input[{i}]"), err))?
                }
                // `{"content": "…" | [{"type": "text", "text": "…"}, …]}` (llama-server's multimodal-ready form).
                Value::Object(o) if o.contains_key("content") => {
                    let text = match &o["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
                        _ => return Err(ApiError::invalid(&format!("input[{i}].content"), "content is a string or a list of text parts")),
                    };
                    (m.tokenize)(&text).map_err(|err| ApiError::invalid(&format!("input[{i}]"), err))?
                }
                Value::Array(ids) => ids
                    .iter()
                    .map(|v| v.as_u64().and_then(|t| u32::try_from(t).ok()).filter(|&t| (t as usize) < m.vocab))
                    .collect::<Option<Vec<TokenId>>>()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ApiError::invalid(&format!("input[{i}]"), format!("token ids must be integers below {}", m.vocab)))?,
                _ => return Err(ApiError::invalid(&format!("input[{i}]"), "each input must be a string or a list of token ids")),
            };
            if ids.len() > m.max_tokens {
                if !truncate {
                    return Err(too_long(i, ids.len(), m.max_tokens));
                }
                return Ok((m.cut)(ids));
            }
            Ok(ids)
        })
        .collect()
}

fn too_long(i: usize, len: usize, max: usize) -> ApiError {
    ApiError::context_length(
        &format!("input[{i}]"),
        format!("input {i} is at least {len} tokens, more than this model's {max} (send \"truncate\": true to cut it)"),
    )
}

pub async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingsRequest = parse(&body)?;
    let src = source(&state, req.model.as_deref()).await?;
    let dims = match &src {
        Source::Encoder(e) => e.handle.model().dims(),
        Source::Decoder(state) => state.engine.session().model.config().n_embd,
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::invalid("encoding_format", format!("encoding_format {other:?} is not float or base64"))),
    };
    let keep = match req.dimensions {
        None => dims,
        Some(d) if (1..=dims).contains(&d) => d,
        Some(d) => return Err(ApiError::invalid("dimensions", format!("dimensions must be 1..={dims}, not {d}"))),
    };
    let (rule, input, truncate) = (input_rule(&src), req.input, req.truncate);
    let seqs = tokio::task::spawn_blocking(move || inputs(&rule, &input, truncate))
        .await
        .map_err(|_| ApiError::internal("tokenizing the inputs failed"))??;
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    let vectors = src.run(seqs).await?;
    let normalized = src.normalized();
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            if keep < v.len() {
                // Matryoshka-style truncation: the leading dimensions, renormalized.
                v.truncate(keep);
                if normalized {
                    normalize(&mut v);
                }
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                // Each value as its shortest f32 text (an f32 widened to f64
                // would print 17 digits of noise).
                Value::Array(v.iter().map(|x| x.to_string().parse::<f64>().map_or(Value::Null, |f| json!(f))).collect())
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": src.name(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

pub async fn rerank(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: RerankRequest = parse(&body)?;
    // Hugging Face TEI's request (`texts`) gets TEI's answer: a bare list.
    let tei = serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.get("texts").is_some());
    let src = source(&state, req.model.as_deref()).await?;
    if req.documents.is_empty() {
        return Err(ApiError::invalid("documents", "documents must not be empty"));
    }
    if req.documents.len() > MAX_DOCUMENTS {
        return Err(ApiError::invalid("documents", format!("at most {MAX_DOCUMENTS} documents per request")));
    }
    let texts: Vec<String> = req
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                ApiError::invalid(&format!("documents[{i}]"), "a document is a string or an object with text")
            }),
            _ => Err(ApiError::invalid(&format!("documents[{i}]"), "a document is a string or an object with text")),
        })
        .collect::<Result<_, _>>()?;
    if req.query.is_empty() {
        return Err(ApiError::invalid("query", "query must not be empty"));
    }
    let (query, docs, truncate) = (req.query.clone(), texts.clone(), req.truncate);
    let cross_encoder = match &src {
        Source::Encoder(e) if e.handle.model().is_cross_encoder() => Some(e.clone()),
        _ => None,
    };
    let (scores, tokens) = if let Some(e) = cross_encoder {
        let e2 = e.clone();
        let pairs = tokio::task::spawn_blocking(move || {
            let m = e2.handle.model();
            docs.iter()
                .enumerate()
                .map(|(i, d)| {
                    let (mut ids, mut types) =
                        m.tokenize_pair(&query, d).map_err(|err| ApiError::invalid(&format!("documents[{i}]"), err.to_string()))?;
                    if ids.len() > m.max_tokens {
                        if !truncate {
                            return Err(too_long(i, ids.len(), m.max_tokens));
                        }
                        let last = ids[ids.len() - 1];
                        ids.truncate(m.max_tokens - 1);
                        ids.push(last);
                        types.truncate(m.max_tokens);
                    }
                    Ok((ids, types))
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await
        .map_err(|_| ApiError::internal("tokenizing the documents failed"))??;
        let tokens: usize = pairs.iter().map(|(i, _)| i.len()).sum();
        let scores = e.handle.run(EmbedJob::Score(pairs)).await.map_err(|err| ApiError::internal(err.to_string()))?;
        (scores.into_iter().map(|s| s[0]).collect::<Vec<f32>>(), tokens)
    } else {
        // An embedding model ranks by the cosine of query and document.
        let mut all = vec![Value::String(query)];
        all.extend(docs.into_iter().map(Value::String));
        let rule = input_rule(&src);
        let seqs = tokio::task::spawn_blocking(move || inputs(&rule, &Value::Array(all), truncate))
            .await
            .map_err(|_| ApiError::internal("tokenizing the documents failed"))??;
        let tokens: usize = seqs.iter().map(Vec::len).sum();
        let mut vectors = src.run(seqs).await?;
        vectors.iter_mut().for_each(|v| normalize(v));
        let q = vectors.remove(0);
        (vectors.iter().map(|d| d.iter().zip(&q).map(|(a, b)| a * b).sum()).collect(), tokens)
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(req.top_n.unwrap_or(order.len()).min(order.len()));
    if tei {
        let list = order.into_iter().map(|i| json!({"index": i, "score": scores[i], "text": texts[i]})).collect();
        return Ok(Json(Value::Array(list)));
    }
    let results: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let mut r = json!({"index": i, "relevance_score": scores[i]});
            if req.return_documents {
                r["document"] = json!({"text": texts[i]});
            }
            r
        })
        .collect();
    Ok(Json(json!({"object": "list", "model": src.name(), "results": results, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})))
}
