//! bench(): one native run per call, with the GIL released.

use pyo3::prelude::*;

use super::errors::guarded;
use crate::error::CoreError;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::native::{RunConfig, run_until};

/// Run a workload under a policy on OS threads; the report as JSON. The run goes on in a thread
/// of its own while this one checks for Ctrl-C every 50 ms; Ctrl-C stops it before each
/// thread's next operation, and the report says `interrupted`.
#[pyfunction]
pub fn native_run(py: Python<'_>, config_json: &str) -> PyResult<String> {
    let cfg: RunConfig =
        guarded(|| serde_json::from_str(config_json).map_err(|e| CoreError::Config(format!("bench config: {e}"))))?;
    let interrupt = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let worker = s.spawn(|| guarded(|| run_until(&cfg, &interrupt)));
        while !worker.is_finished() {
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            if let Err(e) = py.check_signals() {
                if !e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                    interrupt.store(true, Relaxed);
                    let _ = worker.join();
                    return Err(e);
                }
                interrupt.store(true, Relaxed);
            }
        }
        worker
            .join()
            .unwrap_or_else(|_| Err(pyo3::exceptions::PyRuntimeError::new_err("the native run's thread panicked")))
    })?;
    guarded(|| super::json(&report))
}

/// A bench's options (`tdxcore.bench`'s, every one given) checked by the one validator; the
/// run every policy shares and the repeat count, as JSON.
#[pyfunction]
pub fn bench_plan(options: &Bound<'_, PyAny>) -> PyResult<String> {
    guarded(|| {
        let plan = super::form::from_py::<crate::form::bench::BenchForm>(options)?.into_plan()?;
        super::json(&plan)
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
        super::json(&plan.phases)
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
