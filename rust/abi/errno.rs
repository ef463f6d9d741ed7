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

/// What a call that returns 0 or an errno returned, as reports name it: "ok" or "-EBUSY".
pub fn errno_name(r: &Result<(), Errno>) -> String {
    r.map_or_else(|e| e.name().to_string(), |()| "ok".into())
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
