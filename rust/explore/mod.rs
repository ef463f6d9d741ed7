//! The interleaving explorer: the deterministic runtime (sim.rs), one execution (run.rs),
//! scenarios as data (scenario.rs) and the search strategies (search.rs).

pub mod race;
pub mod run;
pub mod scenario;
pub mod search;
pub mod sim;
pub mod token;
