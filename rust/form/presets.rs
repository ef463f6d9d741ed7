//! The presets: one TOML file each under presets/policies/ and presets/scenarios/, in the layout
//! `Policy.to_toml()` and `Scenario.to_toml()` write, built into the core (a wheel needs no data
//! files) and read by the one validator like any user's file. Their order is the order reports
//! list them in.

use serde::Serialize;

use super::scenario::{PolicyForm, parse_steps};
use super::toml_file::{self, Kind};
use crate::error::{CoreError, CoreResult};
use crate::model::honor_policy::HonorStep;

macro_rules! preset_files {
    ($folder:literal: $($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../presets/", $folder, "/", $name, ".toml")))),*]
    };
}

const POLICY_FILES: [(&str, &str); 6] =
    preset_files!["policies": "v3", "v3-no-precheck", "read-inhibit", "set-then-split", "read-demote", "inhibit-only"];

const SCENARIO_FILES: [(&str, &str); 5] =
    preset_files!["scenarios": "accept-vs-fault", "two-accepts", "accept-vs-convert", "punch-hole", "boot-small"];

/// Every preset scenario's fields, read and checked (each as its file holds it).
pub fn scenario_presets() -> CoreResult<Vec<toml::Table>> {
    SCENARIO_FILES
        .iter()
        .map(|(name, text)| {
            let label = format!("presets/scenarios/{name}.toml");
            let fields = toml_file::read(text, &label, Kind::Scenario)?;
            if fields.get("name").and_then(|n| n.as_str()) != Some(name) {
                return Err(CoreError::Internal(format!("{label}: its name is not the file's")));
            }
            Ok(fields)
        })
        .collect()
}

/// A preset policy: its name, what it is and where it comes from, and its steps.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyPreset {
    pub name: String,
    pub about: String,
    pub steps: Vec<HonorStep>,
}

/// Every preset policy, read and checked.
pub fn policy_presets() -> CoreResult<Vec<PolicyPreset>> {
    POLICY_FILES
        .iter()
        .map(|(name, text)| {
            let label = format!("presets/policies/{name}.toml");
            toml_file::read(text, &label, Kind::Policy)?;
            let form: PolicyForm = toml::from_str(text).map_err(|e| CoreError::Internal(format!("{label}: {e}")))?;
            if form.name != *name {
                return Err(CoreError::Internal(format!("{label}: name {:?} is not the file's", form.name)));
            }
            Ok(PolicyPreset { steps: parse_steps(&form.steps)?, name: form.name, about: form.about })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_file_reads_and_keeps_the_lock_discipline() {
        let presets = policy_presets().unwrap();
        assert_eq!(presets.len(), POLICY_FILES.len());
        assert_eq!(presets[0].steps, HonorStep::FINAL, "v3 is the final algorithm");
        let read_inhibit = presets.iter().find(|p| p.name == "read-inhibit").unwrap();
        assert_eq!(read_inhibit.steps, HonorStep::READ_INHIBIT);
        assert!(presets.iter().all(|p| !p.about.is_empty()));
    }

    #[test]
    fn every_scenario_file_reads_and_validates() {
        let presets = scenario_presets().unwrap();
        assert_eq!(presets.len(), SCENARIO_FILES.len());
        assert!(presets.iter().all(|s| s["about"].as_str().is_some_and(|a| !a.is_empty())));
    }
}
