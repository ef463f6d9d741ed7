//! The core error type. No pyo3 here: `py/errors.rs` maps it to Python exceptions.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A configuration or argument the model cannot accept (bad level, overlapping memslots...).
    #[error("{0}")]
    Config(String),
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

pub fn config_err<T>(msg: impl Into<String>) -> CoreResult<T> {
    Err(CoreError::Config(msg.into()))
}
