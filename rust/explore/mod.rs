//! The interleaving explorer: the deterministic runtime (sim.rs) with its locks
//! (model_lock.rs), one execution (run.rs), the properties (properties.rs) and the search
//! strategies (search.rs); scenarios are crate::program.

pub mod escape;
pub mod model_lock;
pub mod properties;
pub mod race;
pub mod run;
pub mod search;
pub mod sim;
pub mod token;

/// The hasher for state keys and histories: fast, and the same in every run (fixed seed).
pub fn state_hasher() -> impl std::hash::Hasher {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x7d_c0_4e).build_hasher()
}
