//! bench(): one native run per call, with the GIL released.

use pyo3::prelude::*;

use super::errors::guarded;
use super::form::from_py;
use super::to_py;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::native::{RunConfig, run_until};

/// Run a workload under a policy on OS threads (`config`: a bench plan's run with the policy's
/// `honor_policy` and `atomic_demote`); the report. The run goes on in a thread
/// of its own while this one checks for Ctrl-C every 50 ms; Ctrl-C stops it before each
/// thread's next operation, and the report says `interrupted`.
#[pyfunction]
pub fn native_run<'py>(py: Python<'py>, config: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let cfg: RunConfig = guarded(|| from_py(config))?;
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
    to_py(py, &report)
}

/// A bench's options (`tdxcore.bench`'s, every one given) checked by the one validator; the
/// run every policy shares and the repeat count.
#[pyfunction]
pub fn bench_plan<'py>(py: Python<'py>, options: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let plan = guarded(|| from_py::<crate::form::bench::BenchForm>(options)?.into_plan())?;
    to_py(py, &plan)
}

/// A workload's programs: phases, each one list of operations per vCPU (so other
/// implementations, like the Python specification, can run the same trace).
#[pyfunction]
pub fn workload_plan<'py>(py: Python<'py>, workload: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let plan = guarded(|| from_py::<crate::native::workload::Workload>(workload)?.plan())?;
    to_py(py, &plan.phases)
}

/// B8's baseline: a bare PyO3 function that does nothing.
#[pyfunction]
pub fn noop() {}

/// B8's subject: nothing, through the guard every tdxcore call goes through.
#[pyfunction]
pub fn guarded_noop() -> PyResult<()> {
    guarded(|| Ok(()))
}
