//! The engine on its own thread, driven through a command channel: what the
//! HTTP server talks to. The thread sleeps while idle, and otherwise loops
//! `take new commands → one step`, so requests join and leave between steps.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;

use hearth_core::{SeqId, TokenId};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::batching::{Engine, EngineConfig, Event, GenRequest, SeqLimits};
use crate::embed::Pooling;
use crate::metrics::Metrics;
use crate::{EngineError, LoadedModel};

enum Command {
    Submit {
        // Boxed: a request (with its grammar state) is far larger than an abort.
        req: Box<GenRequest>,
        events: tmpsc::UnboundedSender<Event>,
        reply: oneshot::Sender<Result<SeqId, EngineError>>,
    },
    Abort(SeqId),
    Embed {
        seqs: Vec<Vec<TokenId>>,
        pooling: Pooling,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
    },
}

/// A cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    session: Arc<LoadedModel>,
    metrics: Arc<Metrics>,
    limits: SeqLimits,
    parallel: usize,
    config: EngineConfig,
}

/// A submitted request: its id and its stream of events.
pub struct Submitted {
    /// Id for [`EngineHandle::abort`].
    pub id: SeqId,
    /// Events until `Done` or `Error`.
    pub events: tmpsc::UnboundedReceiver<Event>,
}

impl EngineHandle {
    /// Starts the engine thread over `session`, its figures under the name `model`.
    pub fn spawn(session: Arc<LoadedModel>, config: EngineConfig) -> Result<Self, EngineError> {
        Self::spawn_with(session, config, Metrics::new())
    }

    /// As [`EngineHandle::spawn`], updating `metrics` (a model's series in
    /// a registry shared with other models).
    pub fn spawn_with(session: Arc<LoadedModel>, config: EngineConfig, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let (s, m, parallel, kept) = (Arc::clone(&session), Arc::clone(&metrics), config.parallel, config);
        thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || run(&s, config, &m, &rx, &ready_tx))
            .map_err(EngineError::Io)?;
        // The engine is built on its thread (it borrows the session there);
        // its configuration errors and its limits come back before serving.
        let limits = ready.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Self { commands, session, metrics, limits, parallel, config: kept })
    }

    /// The model being served.
    #[must_use]
    pub fn session(&self) -> &Arc<LoadedModel> {
        &self.session
    }

    /// Serving figures.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How long a sequence may grow and which prompts fit: the scheduler's
    /// own rule, for checks before a request is queued.
    #[must_use]
    pub fn limits(&self) -> SeqLimits {
        self.limits
    }

    /// How the engine runs.
    #[must_use]
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Sequences computed together at most (llama-server's slots).
    #[must_use]
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Queues `req`; fails at once when it is refused (queue full, too long).
    pub async fn submit(&self, req: GenRequest) -> Result<Submitted, EngineError> {
        let (events, rx) = tmpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Submit { req: Box::new(req), events, reply }).map_err(|_| EngineError::Stopped)?;
        let id = answer.await.map_err(|_| EngineError::Stopped)??;
        Ok(Submitted { id, events: rx })
    }

    /// Embeddings of `seqs` from the served (decoder) model's final hidden
    /// states, computed on the engine thread between steps (the model's
    /// threads are the engine's).
    pub async fn embed(&self, seqs: Vec<Vec<TokenId>>, pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Embed { seqs, pooling, reply }).map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Ends request `id` now and frees its KV blocks (no-op when it already ended).
    pub fn abort(&self, id: SeqId) {
        let _ = self.commands.send(Command::Abort(id));
    }
}

/// The engine thread: sleep while idle, else take commands and step.
fn run(
    session: &LoadedModel,
    config: EngineConfig,
    metrics: &Arc<Metrics>,
    rx: &mpsc::Receiver<Command>,
    ready: &mpsc::Sender<Result<SeqLimits, EngineError>>,
) {
    let mut engine = match Engine::new(session, config, Arc::clone(metrics)) {
        Ok(engine) => {
            let _ = ready.send(Ok(engine.limits()));
            engine
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    loop {
        if engine.is_idle() {
            match rx.recv() {
                Ok(cmd) => apply(&mut engine, cmd, metrics),
                Err(_) => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            apply(&mut engine, cmd, metrics);
        }
        // A bug must not take the server down with it: fail the requests in
        // flight, start over with an empty cache, keep serving.
        if catch_unwind(AssertUnwindSafe(|| engine.step())).is_err() {
            tracing::error!("engine step panicked; failing the requests in flight");
            engine.fail_all("internal error in the engine step");
            match Engine::new(session, config, Arc::clone(metrics)) {
                Ok(fresh) => engine = fresh,
                Err(_) => return,
            }
        }
    }
}

fn apply(engine: &mut Engine<'_>, cmd: Command, metrics: &Metrics) {
    match cmd {
        Command::Submit { req, events, reply } => {
            let result = engine.submit(*req, Box::new(move |e| events.send(e).is_ok()));
            if let Err(e) = &result {
                metrics.rejected(e.reason());
            }
            let _ = reply.send(result);
        }
        Command::Abort(id) => engine.abort(id),
        Command::Embed { seqs, pooling, reply } => {
            let session = engine.session();
            let result = catch_unwind(AssertUnwindSafe(|| {
                seqs.iter().map(|s| session.embed(s, pooling)).collect::<Result<Vec<_>, _>>()
            }))
            .unwrap_or_else(|_| Err(EngineError::Invalid("internal error while embedding".into())));
            let _ = reply.send(result);
        }
    }
}
