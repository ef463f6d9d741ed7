//! The kernel and TDX-module state and operations. Files follow the kernel's own split; every
//! function names the kernel (or module) function it models.

pub mod attributes;
pub mod config;
pub mod convert;
pub mod fault;
pub mod guest;
pub mod honor;
pub mod invariants;
pub mod lpage_info;
pub mod memslot;
pub mod sept;
pub mod split;
pub mod spte;
pub mod tdp_mmu;
pub mod tdx;
pub mod vm;

pub use crate::abi::{Gfn, Level};
pub use vm::Vm;
