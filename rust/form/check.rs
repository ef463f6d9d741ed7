//! A check's options as the user gives them (`tdxcore.check(...)`, `tdxcore check`): the
//! search strategy and its parameters, the budget and the properties asked about.

use serde::Deserialize;
use std::time::Duration;

use crate::error::{CoreError, CoreResult};
use crate::explore::properties::Property;
use crate::explore::search::{Budget, Strategy};

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StrategyName {
    Exhaustive,
    Random,
    Pct,
    Choices,
}

/// The longest a search may be given (about eleven days).
pub const MAX_SECONDS: f64 = 1e6;

/// Every option is given (None where the user gave none): the defaults are the Python
/// signature's (`tdxcore.check`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckForm {
    strategy: StrategyName,
    /// Exhaustive: the preemption bound (None: none).
    bound: Option<u32>,
    /// Exhaustive: cache visited states.
    cache: bool,
    /// Random and PCT.
    seed: u64,
    runs: u64,
    /// PCT.
    depth: u32,
    /// Choices: the schedule's choices.
    choices: Option<Vec<u32>>,
    max_schedules: u64,
    /// Seconds.
    max_time: Option<f64>,
    /// Bytes of state cache (None: a quarter of the machine's memory).
    max_memory: Option<u64>,
    /// The properties asked about (None or empty: every one).
    properties: Option<Vec<String>>,
}

/// A check's options, checked.
#[derive(Debug)]
pub struct CheckOptions {
    pub strategy: Strategy,
    pub budget: Budget,
    pub asked: Vec<Property>,
}

impl CheckForm {
    pub fn into_options(self) -> CoreResult<CheckOptions> {
        fn refuse<T>(path: &str, message: String) -> CoreResult<T> {
            Err(CoreError::Field { path: path.into(), message })
        }
        let at_least_1 = |path: &str, v: u64| if v == 0 { refuse(path, "must be at least 1".into()) } else { Ok(v) };
        let strategy = match self.strategy {
            StrategyName::Exhaustive => {
                if let Some(b) = self.bound
                    && b > 1000
                {
                    return refuse("bound", format!("{b} is out of range: allowed are 0 to 1000 preemptions"));
                }
                Strategy::Exhaustive { bound: self.bound, cache: self.cache }
            }
            StrategyName::Random => Strategy::Random { seed: self.seed, runs: at_least_1("runs", self.runs)? },
            StrategyName::Pct => {
                if !(1..=64).contains(&self.depth) {
                    return refuse("depth", format!("{} is out of range: allowed are 1 to 64", self.depth));
                }
                Strategy::Pct { seed: self.seed, depth: self.depth, runs: at_least_1("runs", self.runs)? }
            }
            StrategyName::Choices => match self.choices {
                Some(choices) => Strategy::Choices { choices },
                None => return refuse("choices", "strategy \"choices\" needs choices=[int, ...]".into()),
            },
        };
        let max_time = match self.max_time {
            Some(t) if t > 0.0 && t <= MAX_SECONDS => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return refuse(
                    "max_time",
                    format!("{t:?}: a number of seconds above 0 and at most {MAX_SECONDS:e} is allowed"),
                );
            }
            None => None,
        };
        let budget = Budget {
            max_schedules: at_least_1("max_schedules", self.max_schedules)?,
            max_time,
            max_cache_bytes: match self.max_memory {
                Some(b) => at_least_1("max_memory", b)?,
                None => Budget::default().max_cache_bytes,
            },
        };
        let asked = self.properties.unwrap_or_default().iter().map(|p| Property::parse(p)).collect::<CoreResult<_>>();
        Ok(CheckOptions { strategy, budget, asked: asked.map_err(|e| e.at("properties"))? })
    }
}
