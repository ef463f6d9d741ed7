//! The core error type. No pyo3 here: `py/errors.rs` maps it to Python exceptions.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A configuration or argument the model cannot accept (bad level, overlapping memslots...).
    #[error("{0}")]
    Config(String),
    /// A value refused at a field of the user's form; `path` as the user wrote it
    /// (`vm.memslots[0]`, `threads[1].ops[0].gfn`), empty for the form itself.
    #[error("{}", at(path, message))]
    Field { path: String, message: String },
    /// A value of the wrong type at a field of the user's form.
    #[error("{}", at(path, message))]
    Type { path: String, message: String },
    /// A well-formed request the kernel would refuse in the current state.
    #[error("{0}")]
    InvalidOperation(String),
    /// A sequential run asked for a lock nobody can release.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// More memory than the machine can give, refused before allocating.
    #[error("{0}")]
    Resource(String),
    /// A bug in tdxcore itself (a panic caught at the boundary).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

fn at(path: &str, message: &str) -> String {
    if path.is_empty() { message.to_string() } else { format!("{path}: {message}") }
}

impl CoreError {
    /// This refusal, found inside the field at `path`: a field's own path goes below it.
    pub fn at(self, path: &str) -> CoreError {
        let join = |p: String| {
            if p.is_empty() {
                path.to_string()
            } else if p.starts_with('[') {
                format!("{path}{p}")
            } else {
                format!("{path}.{p}")
            }
        };
        match self {
            CoreError::Config(message) => CoreError::Field { path: path.to_string(), message },
            CoreError::Field { path: p, message } => CoreError::Field { path: join(p), message },
            CoreError::Type { path: p, message } => CoreError::Type { path: join(p), message },
            other => other,
        }
    }
}

pub fn config_err<T>(msg: impl Into<String>) -> CoreResult<T> {
    Err(CoreError::Config(msg.into()))
}
