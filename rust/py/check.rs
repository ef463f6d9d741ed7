//! check() and replay(): a whole search per call, run in slices with the GIL released, with
//! Ctrl-C honoured between slices (what was covered so far is returned).

use pyo3::prelude::*;
use std::io::Write;
use std::time::Duration;

use super::errors::guarded;
use crate::error::{CoreError, CoreResult};
use crate::explore::scenario::Scenario;
use crate::explore::search::{Budget, Search, Strategy, replay};
use crate::explore::token;

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> CoreResult<T> {
    serde_json::from_str(text).map_err(|e| CoreError::Config(format!("{what}: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> CoreResult<String> {
    serde_json::to_string(v).map_err(|e| CoreError::Internal(e.to_string()))
}

/// Run a search. `budget_json`: {"max_schedules": n, "max_time": seconds or null}.
/// Returns the report as JSON, with the counterexample's replay token.
#[pyfunction]
#[pyo3(signature = (scenario_json, strategy_json, budget_json, progress=false))]
pub fn check(
    py: Python<'_>,
    scenario_json: &str,
    strategy_json: &str,
    budget_json: &str,
    progress: bool,
) -> PyResult<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BudgetJson {
        max_schedules: u64,
        max_time: Option<f64>,
    }
    let mut search = guarded(|| {
        let scenario: Scenario = parse("scenario", scenario_json)?;
        let strategy: Strategy = parse("strategy", strategy_json)?;
        let b: BudgetJson = parse("budget", budget_json)?;
        if b.max_time.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
            return Err(CoreError::Config("max_time must be a positive number of seconds".into()));
        }
        let budget = Budget { max_schedules: b.max_schedules, max_time: b.max_time.map(Duration::from_secs_f64) };
        Search::new(scenario, strategy, budget)
    })?;
    loop {
        let done = py.detach(|| guarded(|| Ok(search.run_for(Duration::from_millis(100)))))?;
        if progress {
            let r = search.report();
            let c = &r.certificate;
            let _ = write!(
                std::io::stderr(),
                "\r  {} schedules, {} states, {} steps, {:.1}s   ",
                c.schedules,
                c.distinct_states.max(c.pruned),
                c.steps,
                r.elapsed_ms as f64 / 1000.0
            );
        }
        if done {
            break;
        }
        if let Err(e) = py.check_signals() {
            if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                search.cut("interrupted (Ctrl-C)");
                break;
            }
            return Err(e);
        }
    }
    if progress {
        let _ = writeln!(std::io::stderr());
    }
    guarded(|| {
        let report = search.report();
        let mut v = serde_json::to_value(&report).map_err(|e| CoreError::Internal(e.to_string()))?;
        if let Some(cx) = &report.counterexample {
            v["counterexample"]["token"] = serde_json::Value::String(token::encode(search.scenario(), &cx.choices));
        }
        json(&v)
    })
}

/// Replay `choices` on a scenario with tracing: {violation, trace, results, decisions, steps,
/// preemptions} as JSON.
#[pyfunction]
pub fn replay_choices(py: Python<'_>, scenario_json: &str, choices: Vec<u32>) -> PyResult<String> {
    py.detach(|| {
        guarded(|| {
            let scenario: Scenario = parse("scenario", scenario_json)?;
            let e = replay(&scenario, &choices)?;
            json(&serde_json::json!({
                "violation": e.violation,
                "trace": e.trace,
                "results": e.results,
                "decisions": e.decisions,
                "steps": e.steps,
                "preemptions": e.preemptions,
                "design_rules": e.design_rules,
                "token": token::encode(&scenario, &choices),
            }))
        })
    })
}

/// Decode a replay token: (scenario JSON, choices). Refuses another model version's token.
#[pyfunction]
pub fn read_token(token_text: &str) -> PyResult<(String, Vec<u32>)> {
    guarded(|| {
        let (s, c) = token::decode(token_text)?;
        Ok((json(&s)?, c))
    })
}

/// Validate a scenario and return it in canonical JSON.
#[pyfunction]
pub fn canonical_scenario(scenario_json: &str) -> PyResult<String> {
    guarded(|| {
        let s: Scenario = parse("scenario", scenario_json)?;
        s.validate()?;
        json(&s)
    })
}
