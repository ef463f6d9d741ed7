//! The kernel and TDX-module state and operations. Files follow the kernel's own split; every
//! function names the kernel (or module) function it models.

pub mod accept;
pub mod attributes;
pub mod config;
pub mod convert;
pub mod external_spte;
pub mod guest;
pub mod honor;
pub mod honor_policy;
pub mod invariants;
pub mod lpage_info;
pub mod memslot;
pub mod mmu;
pub mod mutation;
pub mod sept;
pub mod split;
pub mod spte;
pub mod tdp_iter;
pub mod tdp_mmu;
pub mod tdx;
pub mod trace_value;
pub mod vm;

pub use crate::abi::{Gfn, Level};
pub use vm::Vm;
