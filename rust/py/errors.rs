//! CoreError -> the exceptions defined in tdxcore.errors; panics -> InternalError.

use pyo3::PyErr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::CoreError;

pyo3::import_exception!(tdxcore.errors, ConfigError);
pyo3::import_exception!(tdxcore.errors, ArgumentTypeError);
pyo3::import_exception!(tdxcore.errors, InvalidOperation);
pyo3::import_exception!(tdxcore.errors, DeadlockError);
pyo3::import_exception!(tdxcore.errors, InternalError);
pyo3::import_exception!(tdxcore.errors, ResourceError);

pub fn to_pyerr(e: CoreError) -> PyErr {
    match e {
        CoreError::Config(m) => ConfigError::new_err(m),
        e @ CoreError::Field { .. } => ConfigError::new_err(e.to_string()),
        e @ CoreError::Type { .. } => ArgumentTypeError::new_err(e.to_string()),
        CoreError::InvalidOperation(m) => InvalidOperation::new_err(m),
        CoreError::Deadlock(m) => DeadlockError::new_err(format!("deadlock: {m}")),
        CoreError::Internal(m) => InternalError::new_err(m),
        CoreError::Resource(m) => ResourceError::new_err(m),
    }
}

/// Run `f`, turning a panic into InternalError so it never unwinds into Python.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, CoreError>) -> Result<T, PyErr> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_pyerr),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(InternalError::new_err(format!("tdxcore internal error (please report): {msg}")))
        }
    }
}
