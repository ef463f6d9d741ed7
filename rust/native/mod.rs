//! The native runtime: the same model code on OS threads, with a real rwlock for mmu_lock,
//! for measuring what a policy costs (`tdxcore bench`). Scheduling points compile to nothing;
//! invariants are checked where every thread has stopped (between phases and at the end).

pub mod lock;
pub mod metrics;
pub mod run;
pub mod runtime;
pub mod workload;

pub use run::{Report, RunConfig, run, run_until};
