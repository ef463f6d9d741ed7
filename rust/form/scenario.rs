//! A scenario and a policy as the user writes them (`Scenario(...)`, a TOML file), turned into
//! the explorer's `Scenario` by the one validator.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::vm::VmForm;
use crate::error::{CoreError, CoreResult};
use crate::model::config::{RetryOptions, VmConfig};
use crate::model::honor_policy::{HonorStep, check_lock_discipline};
use crate::model::mutation::Mutation;
use crate::program::scenario::{Fairness, FaultBudget, Program, RwlockVariant, Scenario};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioForm {
    threads: Vec<Program>,
    #[serde(default)]
    vm: VmForm,
    #[serde(default)]
    alloc_failures: u32,
    /// SEAMCALL name ("page_demote"...) -> how many calls return TDX_OPERAND_BUSY.
    #[serde(default)]
    busy: BTreeMap<String, u32>,
    #[serde(default)]
    rwlock: RwlockVariant,
    #[serde(default)]
    fairness: Fairness,
    #[serde(default = "default_max_steps")]
    max_steps: u32,
    #[serde(default = "custom")]
    name: String,
    /// What the scenario is about (documentation: the explorer does not read it).
    #[serde(default)]
    #[allow(dead_code)]
    about: String,
    #[serde(default)]
    setup: Vec<Program>,
    /// Test-only: bugs planted in the model (model/mutation.rs).
    #[serde(default)]
    mutations: Vec<Mutation>,
}

fn default_max_steps() -> u32 {
    5000
}
fn custom() -> String {
    "custom".into()
}

/// The VM a scenario's options are laid over: the seed's VM, with a local retry loop that sees
/// an event after one retry (the explorer chooses at every retry anyway) and room for the
/// exits an honour path that never completes takes before it is called no progress.
pub fn scenario_vm() -> VmConfig {
    VmConfig {
        retry: RetryOptions { event_after_retries: 1, max_exits: 64, ..RetryOptions::default() },
        ..VmConfig::default()
    }
}

impl ScenarioForm {
    /// The explorer's scenario, validated; `policy` (already checked) replaces `vm.honor_policy`.
    pub fn into_scenario(self, policy: Option<Vec<HonorStep>>) -> CoreResult<Scenario> {
        let mut vm = self.vm.over(scenario_vm()).map_err(|e| e.at("vm"))?;
        if let Some(steps) = policy {
            vm.honor_policy = steps;
        }
        vm.mutations = self.mutations;
        let s = Scenario {
            name: self.name,
            vm,
            setup: self.setup,
            threads: self.threads,
            faults: FaultBudget { alloc_failures: self.alloc_failures, busy: self.busy },
            rwlock: self.rwlock,
            fairness: self.fairness,
            max_steps: self.max_steps,
        };
        s.validate()?;
        Ok(s)
    }
}

/// A policy as the user writes it: `steps = [...]`, an optional name and what it is (`about`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyForm {
    pub steps: Vec<String>,
    #[serde(default = "custom")]
    pub name: String,
    #[serde(default)]
    pub about: String,
}

/// Honour steps by name, checked against the one lock discipline; a refusal names the step.
pub fn parse_steps(steps: &[String]) -> CoreResult<Vec<HonorStep>> {
    let parsed = steps
        .iter()
        .enumerate()
        .map(|(i, s)| HonorStep::parse(s).map_err(|e| CoreError::Config(format!("step {}: {e}", i + 1))))
        .collect::<CoreResult<Vec<_>>>()?;
    check_lock_discipline(&parsed).map_err(CoreError::Config)?;
    Ok(parsed)
}
