//! tdxcore: a model of KVM's TDP MMU (mirror page table, lpage_info, the fault path, the split
//! engine) and the TDX module's S-EPT, written once and driven by interchangeable runtimes.
//!
//! Layers, each a folder importing only the ones below it (tests/test_layers.py checks):
//!
//! ```text
//! `py`        the Python bindings (PyO3)
//! `form`      the user's input, read by the one validator   `session`  a Vm driven op by op
//! `explore`   the interleaving explorer                      `native`   real OS threads
//! `program`   scenario programs and how a thread runs them
//! `model`     KVM's and the TDX module's state and operations, files named as the kernel's
//! `sync`      the Runtime seam every shared access goes through, and its sequential backend
//! `abi`       Gfn, Level, Errno, SEAMCALL leaves, status codes, S-EPT states
//! ```
//!
//! `error` (the crate's error type) is used by every layer.

pub mod abi;
pub mod error;
pub mod explore;
pub mod form;
pub mod model;
pub mod native;
pub mod program;
pub mod session;
pub mod sync;

#[cfg(feature = "python")]
mod py;

/// Bumped whenever a change to the model can change an outcome or a trace.
pub const MODEL_VERSION: u32 = 4;
