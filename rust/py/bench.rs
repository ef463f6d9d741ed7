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

/// A workload's programs: phases, each one list of operations per vCPU, as JSON (so other
/// implementations, like the Python specification, can run the same trace).
#[pyfunction]
pub fn workload_plan(workload_json: &str) -> PyResult<String> {
    guarded(|| {
        let w: crate::native::workload::Workload =
            serde_json::from_str(workload_json).map_err(|e| CoreError::Config(format!("workload: {e}")))?;
        let plan = w.plan()?;
        serde_json::to_string(&plan.phases).map_err(|e| CoreError::Internal(e.to_string()))
    })
}

/// B8's baseline: a bare PyO3 function that does nothing.
#[pyfunction]
pub fn noop() {}

/// B8's subject: nothing, through the guard every tdxcore call goes through.
#[pyfunction]
pub fn guarded_noop() -> PyResult<()> {
    guarded(|| Ok(()))
}
