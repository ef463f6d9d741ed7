//! The bottom layer: the types and codes the kernel and the TDX module define, which every
//! layer above names (guest frame numbers, page levels, errno values, SEAMCALL leaves, their
//! status codes, S-EPT entry states). It imports nothing of the crate.

mod errno;
mod page;
mod tdx;

pub use errno::{Errno, errno_name};
pub use page::*;
pub use tdx::*;
