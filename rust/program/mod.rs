//! Scenario programs: what each thread of a scenario does (scenario.rs) and how a thread runs its
//! operations on a runtime (thread.rs). The explorer and the native runtime both build on it.

pub mod scenario;
pub mod thread;
