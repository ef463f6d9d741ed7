//! tdxcore: a model of KVM's TDP MMU (mirror page table, lpage_info, the fault path, the split
//! engine) and the TDX module's S-EPT, written once and driven by interchangeable runtimes.
//!
//! Layers (arrows point down only): `py` (bindings) -> `form` (the user's input, read by the one
//! validator) -> `explore` / `native` -> `model` (kernel and module state and operations) ->
//! `sync` (the facade every shared access goes through).

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
