//! Other protocols' handlers relay through the OpenAI ones: they translate
//! their request into an OpenAI request, run it through the same handler
//! (one request path: the same checks, engine, metrics), and translate the
//! reply back. This is the reply side: a whole JSON body, or the data
//! objects of its server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::Response;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use serde_json::Value;

use crate::error::ApiError;
use crate::AppState;

/// Which OpenAI handler serves a relayed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions` (raw prompts).
    Text,
}

/// Runs `body` (an OpenAI request) through the handler of `target`.
pub(crate) async fn call(state: &Arc<AppState>, target: Target, body: &Value) -> Result<Response, ApiError> {
    let bytes = Bytes::from(body.to_string());
    match target {
        Target::Chat => crate::generation::chat(State(Arc::clone(state)), bytes).await,
        Target::Text => crate::generation::completions(State(Arc::clone(state)), bytes).await,
    }
}

/// The name a relayed reply gives: the model the triage router chose when
/// it routed the request, else the one answering `asked`.
pub(crate) fn answered_by(state: &AppState, asked: &str, reply: &Response) -> String {
    reply
        .headers()
        .get(crate::route::ROUTED_TO)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| state.answering_name(asked).to_owned(), str::to_owned)
}

/// `translated` with the routing headers of the OpenAI `reply` it came from.
pub(crate) fn with_route_headers_of(reply_headers: &axum::http::HeaderMap, mut translated: Response) -> Response {
    for (name, value) in reply_headers.iter().filter(|(n, _)| n.as_str().starts_with("x-hearth-")) {
        translated.headers_mut().insert(name.clone(), value.clone());
    }
    translated
}

/// A whole (not streamed) reply's JSON.
pub(crate) async fn whole(reply: Response) -> Result<Value, ApiError> {
    let bytes =
        axum::body::to_bytes(reply.into_body(), usize::MAX).await.map_err(|_| ApiError::internal("reading the reply failed"))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::internal("the reply was not JSON"))
}

/// The data objects of a streamed reply's events, in order, up to `[DONE]`.
pub(crate) fn events(reply: Response) -> BoxStream<'static, Value> {
    let body = reply.into_body().into_data_stream();
    stream::unfold((body, String::new()), |(mut body, mut buf)| async move {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                if data == "[DONE]" {
                    return None;
                }
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    return Some((v, (body, buf)));
                }
                continue;
            }
            match body.next().await {
                Some(Ok(bytes)) => buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    })
    .boxed()
}

/// What a relayed stream learns on the way: the usage (sent last) and why
/// the choice ended.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// OpenAI's `usage` object, once seen.
    pub usage: Value,
    /// The first choice's finish reason, once seen.
    pub finish: Option<String>,
}

impl Tally {
    /// Takes note of one OpenAI chunk.
    pub fn note(&mut self, chunk: &Value) {
        if !chunk["usage"].is_null() {
            self.usage = chunk["usage"].clone();
        }
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            self.finish = Some(f.to_owned());
        }
    }
}

/// A protocol's stream built from OpenAI chunks: it reads each chunk (and
/// the end) and queues the events its protocol sends.
pub(crate) trait Translator: Send + 'static {
    /// Reads one OpenAI chunk.
    fn chunk(&mut self, chunk: &Value);
    /// The OpenAI stream ended: queues the closing events.
    fn end(&mut self);
    /// Events ready to go, in order.
    fn queue(&mut self) -> &mut VecDeque<SseEvent>;
    /// Whether nothing more is to be sent once the queue is empty (after
    /// an error, say), even if chunks remain.
    fn stopped(&self) -> bool {
        false
    }
}

/// The SSE body that `translator` makes of `chunks`.
pub(crate) fn translate<T: Translator>(
    chunks: BoxStream<'static, Value>,
    translator: T,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let body = stream::unfold((chunks, translator, false), |(mut chunks, mut t, mut ended)| async move {
        loop {
            if let Some(event) = t.queue().pop_front() {
                return Some((Ok(event), (chunks, t, ended)));
            }
            if ended || t.stopped() {
                return None;
            }
            if let Some(v) = chunks.next().await {
                t.chunk(&v);
            } else {
                t.end();
                ended = true;
            }
        }
    });
    Sse::new(body).keep_alive(KeepAlive::default())
}
