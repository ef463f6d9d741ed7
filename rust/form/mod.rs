//! The user's forms: a VM's options, a scenario and a policy, as Python keyword arguments or as
//! TOML tables. One validator for all of them: serde reads a form and names the path of a
//! wrong field; the model's own checks (`Vm::new`, `Scenario::validate`,
//! `check_lock_discipline`) then decide what a type cannot say. The front ends (`py`, `toml`)
//! only add where the input came from: the Python argument, or the TOML file and line.

pub mod bench;
pub mod check;
pub mod presets;
pub mod scenario;
pub mod toml_file;
pub mod vm;

use serde::Deserialize;

use crate::error::CoreError;

/// Read a `T` from any serde source; a refusal names the path of the field it is about.
pub fn read<'de, T: Deserialize<'de>, D>(source: D) -> Result<T, (String, D::Error)>
where
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(source).map_err(|e| {
        let path = e.path().to_string();
        (if path == "." { String::new() } else { path }, e.into_inner())
    })
}

/// A serde refusal at `path`, in the user's words: a value of the wrong type is a
/// `CoreError::Type` (ArgumentTypeError in Python), anything else a `CoreError::Field`.
pub fn refusal(mut path: String, serde_message: &str) -> CoreError {
    let (message, wrong_type) = reword(serde_message);
    if message.starts_with("unknown field") {
        // The path ends with the unknown key, which the message names.
        path.truncate(path.rfind('.').unwrap_or(0));
    }
    if wrong_type { CoreError::Type { path, message } } else { CoreError::Field { path, message } }
}

/// serde's wording, in the user's: `invalid type: string "x", expected u16` becomes
/// `expected an integer from 0 to 65535, not the string "x"` (and is a wrong type).
fn reword(m: &str) -> (String, bool) {
    let m = m.trim();
    for (prefix, wrong_type) in [("invalid type: ", true), ("invalid value: ", false), ("invalid length ", false)] {
        if let Some(rest) = m.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            let found = if prefix == "invalid length " { format!("{found} entries") } else { found_words(found) };
            return (format!("expected {}, not {found}", expected_words(expected)), wrong_type);
        }
    }
    for (prefix, what) in [("unknown field ", "field"), ("unknown variant ", "value")] {
        if let Some(rest) = m.strip_prefix(prefix)
            && let Some((name, allowed)) = rest.split_once(", expected ")
        {
            let allowed = allowed.trim_start_matches("one of ").replace('`', "").replace(" or ", ", ");
            return (format!("unknown {what} {}: allowed are {allowed}", name.replace('`', "\"")), false);
        }
        if let Some(rest) = m.strip_prefix(prefix)
            && let Some((name, _)) = rest.split_once(", there are no ")
        {
            return (format!("unknown {what} {}: none is allowed here", name.replace('`', "\"")), false);
        }
    }
    if let Some(name) = m.strip_prefix("missing field ") {
        return (format!("{} is required", name.replace('`', "")), false);
    }
    (m.to_string(), false)
}

/// serde's name of an expected type, as a user would say it.
fn expected_words(e: &str) -> String {
    match e {
        "u8" => "an integer from 0 to 255".into(),
        "u16" => "an integer from 0 to 65535".into(),
        "u32" => "an integer from 0 to 4294967295".into(),
        "u64" => "an integer from 0 to 2**64 - 1".into(),
        "a boolean" => "true or false".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" | "a tuple" => "a list".into(),
        "fewer elements in array" => "fewer entries".into(),
        "a map" => "a table (a dict)".into(),
        _ if e.starts_with("struct ") => "a table (a dict)".into(),
        _ if e.starts_with("a tuple of size ") => format!("a list of {}", &e["a tuple of size ".len()..]),
        _ if e.starts_with("internally tagged enum") => "a table with op = \"...\"".into(),
        _ => e.replace('`', ""),
    }
}

/// serde's name of what it found, as a user would say it.
fn found_words(f: &str) -> String {
    match f {
        "sequence" => "a list".into(),
        "map" => "a table (a dict)".into(),
        "unit value" | "Option value" | "none" | "null" => "None".into(),
        _ => format!("the {}", f.replace('`', "")),
    }
}

#[cfg(test)]
mod tests {
    use super::reword;

    #[test]
    fn serde_wording_becomes_the_users() {
        assert_eq!(
            reword("invalid type: string \"pre_check\", expected a sequence"),
            ("expected a list, not the string \"pre_check\"".into(), true)
        );
        assert_eq!(
            reword("invalid value: integer `-1`, expected u64"),
            ("expected an integer from 0 to 2**64 - 1, not the integer -1".into(), false)
        );
        assert_eq!(
            reword("unknown field `thread`, expected one of `threads`, `vm`"),
            ("unknown field \"thread\": allowed are threads, vm".into(), false)
        );
        assert_eq!(reword("missing field `threads`"), ("threads is required".into(), false));
    }
}
