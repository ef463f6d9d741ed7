//! The user's forms from Python: keyword arguments and dicts read by `crate::form` (through
//! pythonize, so a refusal names the Python field), and TOML text read where spans are kept.

use pyo3::prelude::*;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::errors::guarded;
use crate::error::{CoreError, CoreResult};
use crate::form::scenario::{PolicyForm, ScenarioForm, parse_steps};
use crate::form::{read, refusal, toml_file};
use crate::model::honor_policy::held_at;
use crate::sync::Mode;

/// A `T` from a Python object; a refusal names the field's path inside it. The object is read
/// as plain data first (by its Python type, so a str is never a list and a bool never an int),
/// then as a `T` (so serde's checks, and their wording, are the same as for TOML).
pub fn from_py<T: DeserializeOwned>(obj: &Bound<'_, PyAny>) -> CoreResult<T> {
    let mut de = pythonize::Depythonizer::from_object(obj);
    let data: PlainData = read(&mut de).map_err(|(path, e)| python_refusal(path, &e.to_string()))?;
    read::<T, _>(data.0).map_err(|(path, e)| refusal(path, &e.to_string()))
}

/// Python data as JSON-like values; unlike `serde_json::Value` itself, a float that is not
/// finite is refused (serde_json would make it null, and a null option its default).
struct PlainData(serde_json::Value);

const TOO_LARGE: &str = "an integer too large: at most 2**64 - 1";

/// Deeper than any form (a scenario's values sit five levels down): refused before the
/// recursion could overflow the stack.
const MAX_DEPTH: usize = 32;

impl<'de> Deserialize<'de> for PlainData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Plain { depth: 0 }.deserialize(d)
    }
}

/// Reads one value `depth` levels down.
struct Plain {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Plain {
    type Value = PlainData;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PlainData, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Plain {
    type Value = PlainData;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("plain data")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<PlainData, E> {
        Ok(PlainData(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PlainData, E> {
        Ok(PlainData(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PlainData, E> {
        Ok(PlainData(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<PlainData, E> {
        i64::try_from(v).map(|v| PlainData(v.into())).map_err(|_| E::custom(TOO_LARGE))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<PlainData, E> {
        u64::try_from(v).map(|v| PlainData(v.into())).map_err(|_| E::custom(TOO_LARGE))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PlainData, E> {
        serde_json::Number::from_f64(v)
            .map(|n| PlainData(n.into()))
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &"a finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PlainData, E> {
        Ok(PlainData(v.into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<PlainData, E> {
        Ok(PlainData(serde_json::Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<PlainData, E> {
        Ok(PlainData(serde_json::Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PlainData, A::Error> {
        let mut items = Vec::new();
        while let Some(PlainData(v)) = seq.next_element_seed(Plain { depth: self.depth + 1 })? {
            items.push(v);
        }
        Ok(PlainData(items.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PlainData, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let PlainData(v) = map.next_value_seed(Plain { depth: self.depth + 1 })?;
            out.insert(k, v);
        }
        Ok(PlainData(out.into()))
    }
}

/// pythonize's refusals of a Python value that is not plain data, in the user's words.
fn python_refusal(path: String, message: &str) -> CoreError {
    let path = path.trim_end_matches(".?").trim_end_matches('?').to_string();
    let message = match message {
        m if m.contains("instance of 'str'") => {
            let found = m.split('\'').nth(1).unwrap_or("another type");
            format!("a dict key must be a str, not {found}")
        }
        m if m.contains(TOO_LARGE) => return CoreError::Field { path, message: TOO_LARGE.into() },
        m if m.contains("invalid value") => return refusal(path, m),
        m if m.contains("levels deep") => {
            let path = if path.chars().count() > 24 {
                format!("{}...", path.chars().take(24).collect::<String>())
            } else {
                path
            };
            return CoreError::Field { path, message: m.to_string() };
        }
        m => format!("expected plain data (None, bool, int, float, str, list, tuple or dict): {m}"),
    };
    CoreError::Type { path, message }
}

/// A scenario's fields (as `tdxcore.Scenario` holds them) validated into the explorer's
/// canonical JSON; `steps`, when given, is the policy checked with it.
#[pyfunction]
#[pyo3(signature = (fields, steps=None))]
pub fn scenario_json(fields: &Bound<'_, PyAny>, steps: Option<Vec<String>>) -> PyResult<String> {
    guarded(|| {
        let form: ScenarioForm = from_py(fields)?;
        let policy = steps.as_deref().map(parse_steps).transpose()?;
        let s = form.into_scenario(policy)?;
        super::json(&s)
    })
}

/// Check a policy's steps against the one lock discipline (model/honor.rs); a ConfigError
/// names the step and the rule.
#[pyfunction]
pub fn check_policy(steps: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(|| parse_steps(&from_py::<Vec<String>>(steps).map_err(|e| e.at("steps"))?).map(|_| ()))
}

/// The mmu_lock mode each step of a policy runs under ("read", "write" or None), from the
/// honour policy's one home (model/honor_policy.rs `held_at`).
#[pyfunction]
pub fn policy_locks(steps: &Bound<'_, PyAny>) -> PyResult<Vec<Option<&'static str>>> {
    guarded(|| {
        let steps = parse_steps(&from_py::<Vec<String>>(steps).map_err(|e| e.at("steps"))?)?;
        Ok(held_at(&steps).map(|(_, held)| held.map(|m| if m == Mode::Read { "read" } else { "write" })).collect())
    })
}

/// A policy's fields as a dict (`{"steps": [...], "name": "..."}`), checked whole: unknown or
/// missing fields, the steps' names and their lock discipline.
#[pyfunction]
pub fn check_policy_fields(fields: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(|| parse_steps(&from_py::<PolicyForm>(fields)?.steps).map(|_| ()).map_err(|e| e.at("steps")))
}

/// Read TOML `text` of `kind` ("scenario", "policy" or "check") from `label` (a file name),
/// validated by the one validator; returns the file's tables as dicts and lists.
#[pyfunction]
pub fn read_toml<'py>(py: Python<'py>, text: &str, label: &str, kind: &str) -> PyResult<Bound<'py, PyAny>> {
    let table = guarded(|| toml_file::read(text, label, toml_file::Kind::parse(kind)?))?;
    pythonize::pythonize(py, &table).map_err(|e| super::errors::to_pyerr(internal(e)))
}

fn internal(e: impl std::fmt::Display) -> CoreError {
    CoreError::Internal(format!("tdxcore internal error (please report): {e}"))
}
