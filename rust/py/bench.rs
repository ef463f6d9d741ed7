//! bench(): one native run per call, with the GIL released.

use pyo3::prelude::*;

use super::errors::guarded;
use crate::error::CoreError;
use crate::native::{RunConfig, run};

/// Run a workload under a policy on OS threads; the report as JSON.
#[pyfunction]
pub fn native_run(py: Python<'_>, config_json: &str) -> PyResult<String> {
    let cfg: RunConfig =
        guarded(|| serde_json::from_str(config_json).map_err(|e| CoreError::Config(format!("bench config: {e}"))))?;
    py.detach(|| {
        guarded(|| {
            let report = run(&cfg)?;
            serde_json::to_string(&report).map_err(|e| CoreError::Internal(e.to_string()))
        })
    })
}
