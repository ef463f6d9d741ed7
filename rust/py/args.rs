//! The arguments of `Vm`'s methods as types that convert themselves from Python (FromPyObject):
//! a bool is not an int, a level is one of those the argument allows, and a refusal names the
//! argument and what it may be.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};

use super::errors::{ArgumentTypeError, ConfigError};
use crate::abi::{Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K, ROOT_LEVEL};

/// What a wrong value is, in words: its type's name, or None.
fn kind(v: &Bound<'_, PyAny>) -> String {
    if v.is_none() { "None".into() } else { v.get_type().name().map_or_else(|_| "?".into(), |n| n.to_string()) }
}

fn int(v: &Bound<'_, PyAny>, name: &str, lo: u64, hi: u64) -> PyResult<u64> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(ArgumentTypeError::new_err(format!("{name} must be an int, not {}", kind(v))));
    }
    match v.extract::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(ConfigError::new_err(format!("{name} must be between {lo} and {hi}, not {v}"))),
    }
}

fn level(v: &Bound<'_, PyAny>, name: &str, allowed: &[Level]) -> PyResult<Level> {
    let names: Vec<&str> = allowed.iter().map(|l| l.name()).collect();
    let Ok(s) = v.cast::<PyString>() else {
        return Err(ArgumentTypeError::new_err(format!(
            "{name} must be a str, one of {}; not {}",
            names.join(", "),
            kind(v)
        )));
    };
    let s = s.to_str()?;
    match allowed.iter().find(|l| l.name().eq_ignore_ascii_case(s)) {
        Some(&l) => Ok(l),
        None => Err(ConfigError::new_err(format!("unknown {name} {s:?}: allowed are {}", names.join(", ")))),
    }
}

/// An argument converted by the rule its name gives it.
macro_rules! argument {
    ($(#[$doc:meta])* $ty:ident($t:ty) = |$v:ident| $convert:expr) => {
        $(#[$doc])*
        pub struct $ty(pub $t);

        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;
            fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                let $v: &Bound<'py, PyAny> = &obj;
                $convert.map($ty)
            }
        }
    };
}

argument!(/// A vCPU index.
    Vcpu(u16) = |v| int(v, "vcpu", 0, u16::MAX as u64).map(|n| n as u16));
argument!(/// A guest frame number.
    GfnArg(Gfn) = |v| int(v, "gfn", 0, u64::MAX));
argument!(/// The first gfn of a range.
    Start(Gfn) = |v| int(v, "start", 0, u64::MAX));
argument!(/// The gfn after a range.
    End(Gfn) = |v| int(v, "end", 0, u64::MAX));
argument!(/// A number of 4K pages.
    Npages(u64) = |v| int(v, "npages", 1, 1 << 36));
argument!(/// To private (true) or shared (false).
Private(bool) = |v| {
    if v.is_instance_of::<PyBool>() {
        v.extract()
    } else {
        Err(ArgumentTypeError::new_err(format!("private must be a bool, not {}", kind(v))))
    }
});
argument!(/// A level a guest may ACCEPT at: 4K or 2M.
    AcceptLevel(Level) = |v| level(v, "accept level", &[PG_LEVEL_4K, PG_LEVEL_2M]));
argument!(/// A page level: 4K, 2M or 1G.
    PageLevel(Level) = |v| level(v, "level", &[PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G]));
argument!(/// A page-table level, the root's included.
    TableLevel(Level) = |v| level(v, "level", &[PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G, ROOT_LEVEL]));
