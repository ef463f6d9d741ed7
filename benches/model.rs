//! Criterion benchmarks of the model on the sequential backend (hot cache: each iteration
//! reuses one VM where it can). Run: `cargo bench --bench model -- --quick`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use tdxcore::abi::{PG_LEVEL_2M, PG_LEVEL_4K};
use tdxcore::model::config::VmConfig;
use tdxcore::session::Session;
use tdxcore::sync::sequential::FaultPlan;

fn seed_walk(c: &mut Criterion) {
    let cfg = VmConfig::default();
    c.bench_function("seed walk: 2M fault, 4K accept with split, on a fresh VM", |b| {
        b.iter(|| {
            let mut s = Session::new(&cfg, FaultPlan::default()).unwrap();
            s.fault(1, 0x200, PG_LEVEL_2M).unwrap();
            black_box(s.guest_accept(0, 0x201, PG_LEVEL_4K).unwrap().value)
        })
    });
    let mut s = Session::new(&cfg, FaultPlan::default()).unwrap();
    s.fault(1, 0x200, PG_LEVEL_2M).unwrap();
    c.bench_function("spurious 2M fault (walk under the read lock)", |b| {
        b.iter(|| black_box(s.fault(1, 0x201, PG_LEVEL_2M).unwrap().value))
    });
}

criterion_group!(benches, seed_walk);
criterion_main!(benches);
