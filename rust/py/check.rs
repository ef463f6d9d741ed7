//! check() and replay(): a whole search per call, run in slices with the GIL released, with
//! Ctrl-C honoured between slices (what was covered so far is returned).

use pyo3::prelude::*;
use std::io::Write;
use std::time::Duration;

use super::errors::guarded;
use super::form::from_py;
use super::to_py;
use crate::error::CoreError;
use crate::explore::search::{Search, replay};
use crate::explore::token::{self, Expected};
use crate::form::check::CheckForm;
use crate::form::scenario::{ScenarioForm, parse_steps};

/// Run a search of a scenario (its fields, as `Scenario` holds them, with the policy's `steps`)
/// with the user's `options` (every option of `tdxcore.check`, checked by the one validator:
/// strategy, budget, properties). Returns the report, with a replay token beside every
/// counterexample and every race.
#[pyfunction]
pub fn check<'py>(
    py: Python<'py>,
    scenario: &Bound<'_, PyAny>,
    steps: Vec<String>,
    options: &Bound<'_, PyAny>,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (mut search, max_time) = guarded(|| {
        let scenario = from_py::<ScenarioForm>(scenario)?.into_scenario(Some(parse_steps(&steps)?))?;
        let o = super::form::from_py::<CheckForm>(options)?.into_options()?;
        let max_time = o.budget.max_time;
        Ok((Search::asking(scenario, o.strategy, o.budget, &o.asked)?, max_time))
    })?;
    loop {
        let done = py.detach(|| guarded(|| Ok(search.run_for(Duration::from_millis(100)))))?;
        if progress {
            let r = search.report();
            let c = &r.certificate;
            let elapsed = r.elapsed_ms as f64 / 1000.0;
            let bound = if c.complete {
                ", complete".to_string()
            } else {
                c.completed_bound.map_or(String::new(), |b| format!(", every schedule to {b} preemption(s) done"))
            };
            let left = max_time.map_or(String::new(), |t| format!(" of {:.0}s", t.as_secs_f64()));
            let _ = write!(
                std::io::stderr(),
                "\r  {} schedules, {} distinct states{bound}, {elapsed:.1}s{left}   ",
                crate::explore::run::thousands(c.schedules),
                crate::explore::run::thousands(c.distinct_states),
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
    let report = guarded(|| {
        let report = search.report();
        let mut v = serde_json::to_value(&report).map_err(|e| CoreError::Internal(e.to_string()))?;
        // A counterexample's token expects its property at its step; a race's, a race.
        let token = |cx: &serde_json::Value| {
            let choices: Vec<u32> = serde_json::from_value(cx["choices"].clone()).unwrap_or_default();
            let property = cx["property"].as_str().unwrap_or("race").to_string();
            let step = cx["steps"].as_u64().map(|s| s as u32);
            serde_json::Value::String(token::encode(search.scenario(), &choices, Some(Expected { property, step })))
        };
        v["vcpus"] = serde_json::Value::from(search.scenario().vm.vcpus);
        let obj = v.as_object_mut().ok_or_else(|| CoreError::Internal("a report is an object".into()))?;
        let mut places: Vec<&mut serde_json::Value> = Vec::new();
        for (k, x) in obj.iter_mut() {
            match k.as_str() {
                "counterexample" => places.push(x),
                "properties" => places.extend(x.as_array_mut().into_iter().flatten().map(|p| &mut p["counterexample"])),
                "races" => places.extend(x.as_array_mut().into_iter().flatten()),
                _ => {}
            }
        }
        for cx in places {
            if cx.is_object() {
                cx["token"] = token(cx);
            }
        }
        Ok(v)
    })?;
    to_py(py, &report)
}

/// Replay a token with tracing: {hits, unfinished, end, trace, results, decisions, steps,
/// preemptions, design_rules, scenario, token}. Refuses a token that was edited, made by
/// another model version, or whose replay does not show what it recorded.
#[pyfunction]
pub fn replay_token<'py>(py: Python<'py>, token_text: &str) -> PyResult<Bound<'py, PyAny>> {
    let replayed = py.detach(|| {
        guarded(|| {
            let (scenario, choices, expect) = token::decode(token_text)?;
            let e = replay(&scenario, &choices)?;
            if let Some(expect) = &expect {
                token::verify(expect, &e.hits)?;
            }
            let hits: Vec<serde_json::Value> = e
                .hits
                .iter()
                .map(|h| {
                    let mut v = serde_json::to_value(h).unwrap_or_default();
                    v["code"] = serde_json::Value::String(h.code());
                    v["class"] = serde_json::to_value(h.property.spec().class).unwrap_or_default();
                    v["summary"] = serde_json::Value::String(h.violation.summary(scenario.vm.vcpus));
                    v
                })
                .collect();
            Ok(serde_json::json!({
                "hits": hits,
                "unfinished": e.unfinished,
                "end": e.end,
                "trace": e.trace,
                "results": e.results,
                "decisions": e.decisions,
                "steps": e.steps,
                "preemptions": e.preemptions,
                "design_rules": e.design_rules,
                "scenario": scenario,
                "token": token::encode(&scenario, &choices, expect),
            }))
        })
    })?;
    to_py(py, &replayed)
}
