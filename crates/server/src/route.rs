//! The triage router at work: a request sent to the router's name
//! (`"model": "auto"`) is answered by the small or the big model, as
//! [`RoutePolicy`] decides. This file does the work the policy asks for —
//! counting the prompt's tokens and asking the small model for its verdict
//! (one constrained step) — and says where the request went: the reply's
//! `model`, the `x-hearth-routed-to` / `x-hearth-route-reason` /
//! `x-hearth-triage-ms` (and `x-hearth-classifier-margin`) headers, and
//! `hearth_routes_total`.

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderValue;
use axum::response::Response;
use hearth_engine::batching::{Event, GenRequest};
use hearth_engine::router::{classification_turns, Judgement, Reason, RequestTraits, RoutePolicy, Step, Target, Verdict};
use hearth_engine::EngineError;
use hearth_sampling::SamplingParams;
use hearth_text::{ChatExtras, Message};

use crate::dto::OverflowPolicy;
use crate::error::ApiError;
use crate::{prompt, AppState, Served};

/// The header naming the model a routed request went to.
pub(crate) const ROUTED_TO: &str = "x-hearth-routed-to";

/// A router served under a model name: its two models and its rules.
#[derive(Clone, Debug)]
pub struct TriageRouter {
    /// The name requests give to be routed (`auto`).
    pub name: String,
    /// The served model that answers easy requests and judges the others.
    pub small: String,
    /// The served model that answers the rest.
    pub big: String,
    /// The rules.
    pub policy: RoutePolicy,
}

/// Where a routed request went and why, for its reply's headers.
#[derive(Clone, Debug)]
pub(crate) struct RouteNote {
    reason: Reason,
    /// Time spent deciding (counting, classifying), milliseconds.
    triage_ms: f64,
}

impl AppState {
    /// Whether `asked` names the router.
    pub(crate) fn routes(&self, asked: &str) -> bool {
        self.router.as_ref().is_some_and(|r| hearth_catalog::same_model(asked, &r.name))
    }

    /// The model a request naming `asked` is answered by: routed by the
    /// triage router when `asked` is its name (`traits` read only then),
    /// else as [`AppState::served`].
    pub(crate) async fn served_for(
        self: &Arc<Self>,
        asked: &str,
        traits: impl FnOnce() -> Result<RequestTraits, ApiError>,
    ) -> Result<Served, ApiError> {
        match &self.router {
            Some(router) if self.routes(asked) => route(self, router, traits()?).await,
            _ => self.served(asked).await,
        }
    }
}

/// Runs the policy to its answer, doing what it asks on the way.
async fn route(app: &Arc<AppState>, router: &TriageRouter, traits: RequestTraits) -> Result<Served, ApiError> {
    let started = Instant::now();
    let mut small: Option<Served> = None;
    let (mut tokens, mut judgement) = (None, None);
    let (target, reason) = loop {
        match router.policy.decide(&traits, tokens, judgement) {
            Step::Answer(target, reason) => break (target, reason),
            Step::CountTokens => {
                let s = take_small(app, router, &mut small).await?;
                tokens = Some(prompt::count(s, traits.text.clone()).await?);
            }
            Step::Classify => {
                let s = take_small(app, router, &mut small).await?;
                judgement = Some(classify(s, &traits.question).await.map_or_else(
                    |e| {
                        tracing::warn!("router {:?}: the classifier could not answer: {}", router.name, e.message);
                        Judgement::Unavailable
                    },
                    Judgement::Margin,
                ));
            }
        }
    };
    let mut served = match (target, small) {
        (Target::Small, Some(s)) => s,
        (Target::Small, None) => app.served(&router.small).await?,
        // The small model's lease ends first: the big one may need its room.
        (Target::Big, small) => {
            drop(small);
            app.served(&router.big).await?
        }
    };
    app.models.metrics().routes.get_or_create(&vec![
        ("model", router.name.clone()),
        ("target", served.model_name.clone()),
        ("reason", reason.kind().to_owned()),
    ])
    .inc();
    tracing::debug!("router {:?} → {:?}: {}", router.name, served.model_name, reason.describe());
    served.route = Some(RouteNote { reason, triage_ms: started.elapsed().as_secs_f64() * 1e3 });
    Ok(served)
}

/// The small model, acquired once per routed request.
async fn take_small<'a>(
    app: &Arc<AppState>,
    router: &TriageRouter,
    small: &'a mut Option<Served>,
) -> Result<&'a Served, ApiError> {
    if small.is_none() {
        *small = Some(app.served(&router.small).await?);
    }
    small.as_ref().ok_or_else(|| ApiError::internal("the triage model is not held"))
}

/// The small model's margin for "easy" over "hard" on `question`: its
/// classification prompt, one forward step, the two labels' first tokens
/// read from the step's log-probabilities (the most likely
/// [`LABEL_CANDIDATES`]; a label outside them counts as the least of them).
async fn classify(small: &Served, question: &str) -> Result<f32, ApiError> {
    /// Enough of the vocabulary that both labels are nearly always among
    /// them (a reply of one word); ranking them costs a partial sort.
    const LABEL_CANDIDATES: usize = 256;
    let messages: Vec<Message> = classification_turns(question).iter().map(|(role, text)| Message::new(role, text)).collect();
    let tokens = prompt::chat(small, messages, ChatExtras::default(), OverflowPolicy::Error).await?;
    let tokenizer = &small.engine.session().tokenizer;
    let first_token = |label: &str| -> Result<_, ApiError> {
        let ids = tokenizer.encode(label, false).map_err(EngineError::from)?;
        ids.first().copied().ok_or_else(|| ApiError::internal(format!("the label {label:?} has no tokens")))
    };
    let (easy, hard) = (first_token(Verdict::LABELS[0])?, first_token(Verdict::LABELS[1])?);
    let params = SamplingParams { max_tokens: 1, ..SamplingParams::greedy() };
    let request = GenRequest { logprobs: Some(LABEL_CANDIDATES), ignore_eos: true, ..GenRequest::new(tokens, params) };
    let mut sub = small.engine.submit(request).await.map_err(ApiError::from)?;
    let mut step = None;
    while let Some(event) = sub.events.recv().await {
        match event {
            Event::Token { logprob, .. } => step = step.or(logprob),
            Event::Done { .. } => {}
            Event::Error(why) => return Err(ApiError::internal(why)),
        }
    }
    let step = step.ok_or_else(|| ApiError::internal("the classification step gave no log-probabilities"))?;
    let floor = step.top.last().map_or(f32::NEG_INFINITY, |&(_, lp)| lp);
    let lp = |id| step.top.iter().find(|&&(t, _)| t == id).map_or(floor, |&(_, lp)| lp);
    Ok(lp(easy) - lp(hard))
}

/// `response` with the route's headers, when the request was routed.
pub(crate) fn with_route_headers(served: &Served, mut response: Response) -> Response {
    if let Some(note) = &served.route {
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(ROUTED_TO, served.model_name.clone());
        set("x-hearth-route-reason", note.reason.describe().replace(|c: char| !c.is_ascii() || c.is_ascii_control(), "?"));
        set("x-hearth-triage-ms", format!("{:.1}", note.triage_ms));
        if let Reason::Classifier { margin, .. } = note.reason {
            set("x-hearth-classifier-margin", format!("{margin:.3}"));
        }
    }
    response
}
