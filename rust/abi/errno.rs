//! The kernel's errno values the model returns (include/uapi/asm-generic/errno-base.h).

use serde::{Deserialize, Serialize};

/// The kernel's errno values the model returns, and KVM's fault-handler results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Errno {
    ENOMEM,
    EBUSY,
    EOPNOTSUPP,
    EFAULT,
    EIO,
}

impl Errno {
    pub fn name(self) -> &'static str {
        match self {
            Errno::ENOMEM => "-ENOMEM",
            Errno::EBUSY => "-EBUSY",
            Errno::EOPNOTSUPP => "-EOPNOTSUPP",
            Errno::EFAULT => "-EFAULT",
            Errno::EIO => "-EIO",
        }
    }
}
