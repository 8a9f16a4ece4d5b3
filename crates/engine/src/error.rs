use hearth_models::ModelError;
use hearth_text::TextError;

/// What can go wrong between a model path and generated text.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The file is not a usable GGUF (`reason` says what and where).
    #[error("{path}: {reason}")]
    Load { path: String, reason: hearth_gguf::GgufError },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("{0}")]
    Invalid(String),
    /// A sampling parameter outside its range (the field is named).
    #[error(transparent)]
    InvalidParam(#[from] hearth_sampling::InvalidParam),
    #[error(transparent)]
    Rejected(#[from] hearth_sched::AddError),
    /// A response format or grammar that cannot be used (before any token).
    #[error("{0}")]
    Constraint(#[from] hearth_constrain::ConstraintError),
    #[error("the engine has stopped")]
    Stopped,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl EngineError {
    /// A short label for metrics (`queue_full`, `too_long`, `invalid`, …).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        use hearth_sched::AddError as A;
        match self {
            Self::Rejected(A::QueueFull { .. }) => "queue_full",
            Self::Rejected(A::PromptTooLong { .. } | A::ExceedsKvPool { .. }) => "too_long",
            Self::Invalid(_) | Self::InvalidParam(_) | Self::Rejected(_) | Self::Constraint(_) => "invalid",
            Self::Stopped => "stopped",
            _ => "other",
        }
    }
}
