//! TOML files of scenarios, policies and checks, read where spans are kept: a refusal names the
//! file, the line and the key path, and quotes the line.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::scenario::{PolicyForm, ScenarioForm, parse_steps};
use crate::error::{CoreError, CoreResult};

/// What a TOML file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A scenario's fields at the top level (`Scenario.from_toml`).
    Scenario,
    /// A policy's fields at the top level (`Policy.from_toml`).
    Policy,
    /// `tdxcore check --toml`: a `[scenario]` and/or a `[policy]` table (each a table or a
    /// preset's name), or a scenario's or a policy's own file.
    Check,
}

impl Kind {
    pub fn parse(s: &str) -> CoreResult<Kind> {
        match s {
            "scenario" => Ok(Kind::Scenario),
            "policy" => Ok(Kind::Policy),
            "check" => Ok(Kind::Check),
            _ => Err(CoreError::Config(format!("unknown TOML kind {s:?}: allowed are scenario, policy, check"))),
        }
    }
}

/// A check file: each table a form, or a string naming a preset (checked by the front end,
/// which holds the presets).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckForm {
    scenario: Option<PresetOr<ScenarioForm>>,
    policy: Option<PresetOr<PolicyForm>>,
}

#[derive(Debug)]
enum PresetOr<T> {
    Preset,
    Form(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for PresetOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = PresetOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table, or a preset's name")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<PresetOr<T>, E> {
                Ok(PresetOr::Preset)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PresetOr<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(PresetOr::Form)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Read and validate `text` (from `label`, a file name or "scenario TOML"); the file's own
/// tables come back, so the front end builds what the user wrote (and a round trip keeps it).
pub fn read(text: &str, label: &str, kind: Kind) -> CoreResult<toml::Table> {
    let doc = DeTable::parse(text)
        .map_err(|e| CoreError::Config(format!("{}: {}", place(text, label, e.span()), e.message().trim())))?;
    if doc.get_ref().is_empty() {
        let needs = match kind {
            Kind::Scenario => "a scenario's fields (threads at least)",
            Kind::Policy => "steps = [...]",
            Kind::Check => "a [scenario] and/or a [policy] table",
        };
        return Err(CoreError::Config(format!("{label}: empty: it needs {needs}")));
    }
    let top = |key: &str| doc.get_ref().keys().any(|k| k.get_ref() == key);
    if kind == Kind::Check && !top("scenario") && !top("policy") && (top("threads") || top("steps")) {
        // A scenario's or a policy's own file (what `to_toml()` writes, a preset's file).
        let (inner, key) = if top("steps") { (Kind::Policy, "policy") } else { (Kind::Scenario, "scenario") };
        let table = read(text, label, inner)?;
        return Ok(toml::Table::from_iter([(key.to_string(), toml::Value::Table(table))]));
    }
    let located = |e: CoreError| locate(e, text, label, doc.get_ref());
    let serde = |(path, e): (String, toml::de::Error)| {
        let err = super::refusal(path, e.message());
        match e.span() {
            Some(span) => relabel(err, &place(text, label, Some(span))),
            None => located(err),
        }
    };
    let de = || toml::de::Deserializer::from(doc.clone());
    match kind {
        Kind::Scenario => {
            super::read::<ScenarioForm, _>(de()).map_err(serde)?.into_scenario(None).map_err(located)?;
        }
        Kind::Policy => {
            parse_steps(&super::read::<PolicyForm, _>(de()).map_err(serde)?.steps)
                .map_err(|e| located(e.at("steps")))?;
        }
        Kind::Check => {
            let form = super::read::<CheckForm, _>(de()).map_err(serde)?;
            if let Some(PresetOr::Form(p)) = form.policy {
                parse_steps(&p.steps).map_err(|e| located(e.at("policy.steps")))?;
            }
            if let Some(PresetOr::Form(s)) = form.scenario {
                s.into_scenario(None).map_err(|e| located(e.at("scenario")))?;
            }
        }
    }
    toml::from_str(text).map_err(|e| CoreError::Internal(format!("{label}: read twice, differently: {e}")))
}

/// "label line N (the line's text)" for a span, or the label without one.
fn place(text: &str, label: &str, span: Option<Range<usize>>) -> String {
    let Some(span) = span else {
        return label.to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text[text[..start].rfind('\n').map_or(0, |i| i + 1)..].lines().next().unwrap_or("").trim();
    let quoted = if line.chars().count() > 40 {
        format!("{}...", line.chars().take(37).collect::<String>())
    } else {
        line.into()
    };
    format!("{label} line {line_no} ({quoted})")
}

/// A refusal, prefixed with where it is.
fn relabel(e: CoreError, place: &str) -> CoreError {
    let within = |path: String| if path.is_empty() { place.to_string() } else { format!("{place}: {path}") };
    match e {
        CoreError::Field { path, message } => CoreError::Field { path: within(path), message },
        CoreError::Type { path, message } => CoreError::Type { path: within(path), message },
        CoreError::Config(message) => CoreError::Config(format!("{place}: {message}")),
        other => other,
    }
}

/// A refusal from the validator, placed at the line of its key path in the file.
fn locate(e: CoreError, text: &str, label: &str, doc: &DeTable<'_>) -> CoreError {
    let path = match &e {
        CoreError::Field { path, .. } | CoreError::Type { path, .. } => path.clone(),
        _ => String::new(),
    };
    relabel(e, &place(text, label, span_of(doc, &path)))
}

/// The span of the value at a key path (`scenario.threads[0].ops[1]`), or of the deepest part
/// of it the file has.
fn span_of(doc: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut span = None;
    let mut table = Some(doc);
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        let mut value: Option<&Spanned<DeValue<'_>>> =
            table.and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v));
        for index in indices.split('[').filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok()) {
            value = match value.map(|v| v.get_ref()) {
                Some(DeValue::Array(items)) => items.get(index),
                _ => None,
            };
        }
        let Some(v) = value else { break };
        if !v.span().is_empty() {
            span = Some(v.span());
        }
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    span
}

#[cfg(test)]
mod tests {
    use super::{Kind, read};

    #[test]
    fn a_wrong_type_names_the_line_and_the_key() {
        let e = read("name = \"x\"\nsteps = \"pre_check\"\n", "p.toml", Kind::Policy).unwrap_err().to_string();
        assert_eq!(e, "p.toml line 2 (steps = \"pre_check\"): steps: expected a list, not the string \"pre_check\"");
    }

    #[test]
    fn a_model_refusal_is_placed_at_its_key() {
        let text = "[[threads]]\nvcpu = 0\nops = [{op = \"accept\", gfn = 0x201, level = \"1G\"}]\n";
        let e = read(text, "s.toml", Kind::Scenario).unwrap_err().to_string();
        assert!(e.starts_with("s.toml line 3 (ops = "), "{e}");
        assert!(e.ends_with("threads[0].ops[0].level: accept level 1G: allowed are 4K and 2M"), "{e}");
    }

    #[test]
    fn empty_and_unknown_files_are_refused() {
        assert!(read("", "c.toml", Kind::Check).unwrap_err().to_string().contains("empty"));
        let e = read("[scenarios]\nx = 1\n", "c.toml", Kind::Check).unwrap_err().to_string();
        assert!(e.contains("unknown field \"scenarios\": allowed are scenario, policy"), "{e}");
        assert!(read("policy = \"v3\"\n", "c.toml", Kind::Check).is_ok());
        // A scenario's or a policy's own file is taken as one.
        let scenario =
            read("[[threads]]\nvcpu = 0\nops = [{op = \"access\", gfn = 0x3ff}]\n", "s.toml", Kind::Check).unwrap();
        assert!(scenario["scenario"]["threads"].is_array());
        assert!(read("steps = [\"pre_check\"]\n", "p.toml", Kind::Check).unwrap()["policy"]["steps"].is_array());
    }
}
