//! The `Session` class: one VM driven one operation at a time. Results cross as JSON text that
//! `tdxcore.vm` turns into Python objects.

use parking_lot::Mutex;
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;

use super::errors::guarded;
use super::form::from_py;
use super::json;
use crate::abi::Seamcall;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_2M};
use crate::error::{CoreError, CoreResult};
use crate::form::vm::VmForm;
use crate::model::config::VmConfig;
use crate::model::guest::GuestOutcome;
use crate::model::invariants::mapping_level;
use crate::model::mmu::PfResult;
use crate::model::spte::describe;
use crate::model::tdx::ExitOutcome;
use crate::session::{self, OpReport};
use crate::sync::sequential::FaultPlan;

fn level(s: &str) -> CoreResult<Level> {
    Level::parse(s).map_err(CoreError::Config)
}

/// Injected faults as the user passes them: `Vm(alloc_failures=1, busy={"page_demote": 2})`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanForm {
    #[serde(default)]
    alloc_failures: u32,
    #[serde(default)]
    busy: BTreeMap<String, u32>,
}

fn parse_plan(plan: &Bound<'_, PyAny>, event_after_retries: u32) -> CoreResult<FaultPlan> {
    let p: PlanForm = from_py(plan)?;
    let mut busy = BTreeMap::new();
    for (k, n) in p.busy {
        busy.insert(Seamcall::parse_key(&k).map_err(|message| CoreError::Field { path: "busy".into(), message })?, n);
    }
    Ok(FaultPlan { alloc_failures: p.alloc_failures, busy, event_after_retries })
}

fn pf_name(r: &Result<PfResult, Errno>) -> String {
    match r {
        Ok(r) => r.name().into(),
        Err(e) => e.name().into(),
    }
}

fn unit_name(r: &Result<(), Errno>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.name().into(),
    }
}

/// A guest operation's report: the result the guest saw and the exits it took.
fn guest(r: OpReport<GuestOutcome>) -> CoreResult<(OpReport<GuestOutcome>, String, serde_json::Value)> {
    let extra = serde_json::json!({"exits": r.value.exits, "userspace_exits": r.value.userspace_exits});
    let result = r.value.result.name();
    Ok((r, result, extra))
}

/// An operation's report with its value rendered as a string plus extra fields.
fn report<T>(r: OpReport<T>, result: String, extra: serde_json::Value) -> CoreResult<String> {
    json(&serde_json::json!({
        "result": result,
        "extra": extra,
        "trace": r.trace,
        "findings": r.findings,
    }))
}

#[pyclass(frozen, module = "tdxcore._core")]
pub struct Session {
    inner: Mutex<session::Session>,
    config: String,
}

impl Session {
    /// Run one operation with the GIL released; panics become InternalError.
    fn operation<T>(
        &self,
        py: Python<'_>,
        op: impl FnOnce(&mut session::Session) -> CoreResult<(OpReport<T>, String, serde_json::Value)> + Send,
    ) -> PyResult<String> {
        py.detach(|| {
            guarded(|| {
                let (r, result, extra) = op(&mut self.inner.lock())?;
                report(r, result, extra)
            })
        })
    }
}

#[pymethods]
impl Session {
    /// A VM from the user's options (`tdxcore.Vm(**options)`, laid over the default VM) and
    /// injected faults (`alloc_failures`, `busy`).
    #[new]
    fn new(options: &Bound<'_, PyAny>, plan: &Bound<'_, PyAny>) -> PyResult<Self> {
        guarded(|| {
            let cfg = from_py::<VmForm>(options)?.over(VmConfig::default())?;
            let plan = parse_plan(plan, cfg.retry.event_after_retries)?;
            let session = session::Session::new(&cfg, plan)?;
            Ok(Session { inner: Mutex::new(session), config: json(&cfg)? })
        })
    }

    /// The VM's whole configuration, as JSON.
    #[getter]
    fn config_json(&self) -> String {
        self.config.clone()
    }

    fn guest_accept(&self, py: Python<'_>, vcpu: u16, gfn: Gfn, level_name: &str) -> PyResult<String> {
        self.operation(py, |s| guest(s.guest_accept(vcpu, gfn, level(level_name)?)?))
    }

    fn guest_access(&self, py: Python<'_>, vcpu: u16, gfn: Gfn) -> PyResult<String> {
        self.operation(py, |s| guest(s.guest_access(vcpu, gfn)?))
    }

    fn tdcall_accept(&self, py: Python<'_>, vcpu: u16, gfn: Gfn, level_name: &str) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.tdcall_accept(vcpu, gfn, level(level_name)?)?;
            let res = r.value.name().to_string();
            Ok((r, res, serde_json::Value::Null))
        })
    }

    #[pyo3(signature = (vcpu, gfn, accept_level=None))]
    fn handle_ept_violation(
        &self,
        py: Python<'_>,
        vcpu: u16,
        gfn: Gfn,
        accept_level: Option<String>,
    ) -> PyResult<String> {
        self.operation(py, |s| {
            let l = accept_level.as_deref().map(level).transpose()?;
            let r = s.handle_ept_violation(vcpu, gfn, l)?;
            let res = match r.value {
                ExitOutcome::Reenter(pf) => format!("reenter:{}", pf.name()),
                ExitOutcome::ToUserspace(e) => format!("userspace:{}", e.name()),
            };
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn honor_guest_accept_level(&self, py: Python<'_>, vcpu: u16, gfn: Gfn, level_name: &str) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.honor_guest_accept_level(vcpu, gfn, level(level_name)?)?;
            let res = unit_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn fault(&self, py: Python<'_>, vcpu: u16, gfn: Gfn, max_level: &str) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.fault(vcpu, gfn, level(max_level)?)?;
            let res = pf_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn init_mem_region(&self, py: Python<'_>, gfn: Gfn, npages: u64) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.init_mem_region(gfn, npages)?;
            let res = unit_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn finalize(&self) -> PyResult<()> {
        guarded(|| self.inner.lock().finalize())
    }

    fn set_memory_attributes(&self, py: Python<'_>, start: Gfn, end: Gfn, private: bool) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.set_memory_attributes(start, end, private)?;
            let res = unit_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn punch_hole(&self, py: Python<'_>, start: Gfn, end: Gfn) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.punch_hole(start, end)?;
            let res = unit_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn split_cross_boundary_leafs(&self, py: Python<'_>, start: Gfn, end: Gfn) -> PyResult<String> {
        self.operation(py, |s| {
            let r = s.split_cross_boundary_leafs(start, end)?;
            let res = unit_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    /// Add injected faults to the plan: the next `alloc_failures` allocations fail, the next
    /// busy[name] calls of each SEAMCALL return BUSY.
    fn inject(&self, plan: &Bound<'_, PyAny>) -> PyResult<()> {
        guarded(|| {
            let s = self.inner.lock();
            let current = s.plan();
            let add = parse_plan(plan, current.event_after_retries)?;
            let mut plan = current;
            plan.alloc_failures += add.alloc_failures;
            for (k, n) in add.busy {
                *plan.busy.entry(k).or_default() += n;
            }
            s.set_plan(plan);
            Ok(())
        })
    }

    // ---- inspection: nothing below changes the VM ----

    /// (level, spte) of the mirror leaf mapping `gfn`, or None.
    fn mapping(&self, gfn: Gfn) -> PyResult<Option<(String, u64)>> {
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            Ok(mapping_level(&s.vm, gfn).map(|l| (l.name().to_string(), s.vm.mmu.lookup(gfn).1)))
        })
    }

    /// (kind, value) of the mirror SPTE at `level` covering `gfn`, or None if no table holds it.
    fn spte(&self, gfn: Gfn, level_name: &str) -> PyResult<Option<(String, u64)>> {
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            let l = level(level_name)?;
            Ok(s.vm.mmu.peek(gfn, l).map(|c| {
                let v = c.load(SeqCst);
                (describe(v, l).to_string(), v)
            }))
        })
    }

    /// The S-EPT leaf mapping `gfn` as JSON {level, state}, or FREE.
    fn sept_entry(&self, gfn: Gfn) -> PyResult<String> {
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            let tdx = s.vm.tdx.lock();
            let v = match tdx.leaf_for(gfn) {
                Some((l, e)) => serde_json::json!({"level": l.name(), "state": e.state.name()}),
                None => serde_json::json!({"level": null, "state": "FREE"}),
            };
            json(&v)
        })
    }

    /// disallow_lpage of `gfn` at a huge level ("2M" or "1G").
    fn lpage_info(&self, gfn: Gfn, level_name: &str) -> PyResult<u32> {
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            let l = level(level_name)?;
            if l < PG_LEVEL_2M {
                return Err(CoreError::Config(format!("lpage_info exists for the huge levels 2M and 1G, not {l}")));
            }
            Ok(s.vm.memslot(gfn).map_or(0, |slot| slot.lpage_info_slot(gfn, l).load(SeqCst)))
        })
    }

    fn is_private(&self, gfn: Gfn) -> PyResult<bool> {
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            Ok(s.vm.is_private(gfn))
        })
    }

    fn td_runnable(&self) -> bool {
        self.inner.lock().vm.td_runnable()
    }

    fn bugged(&self) -> bool {
        self.inner.lock().vm.bugged.load(SeqCst)
    }

    /// Page statistics and the session's counters, as JSON.
    fn stats(&self) -> PyResult<String> {
        guarded(|| {
            let s = self.inner.lock();
            let st = &s.vm.mmu.stats;
            json(&serde_json::json!({
                "pages_4k": st[1].load(SeqCst),
                "pages_2m": st[2].load(SeqCst),
                "pages_1g": st[3].load(SeqCst),
                "counters": s.counters(),
            }))
        })
    }

    /// Every present mirror leaf as [(first gfn, level)].
    fn leaves(&self) -> Vec<(Gfn, String)> {
        self.inner.lock().vm.mmu.leaves().into_iter().map(|(g, l)| (g, l.name().to_string())).collect()
    }

    /// Every S-EPT leaf as [(first gfn, level, state)].
    fn sept_leaves(&self) -> Vec<(Gfn, String, String)> {
        let s = self.inner.lock();
        let tdx = s.vm.tdx.lock();
        let mut leaves: Vec<_> = tdx.sept.iter().filter(|(_, e)| e.leaf).map(|(&k, e)| (k, e.state)).collect();
        leaves.sort();
        leaves.into_iter().map(|((l, g), state)| (g, l.name().to_string(), state.name().to_string())).collect()
    }

    /// The state invariants, checked now, as JSON findings.
    fn check_invariants(&self) -> PyResult<String> {
        guarded(|| json(&self.inner.lock().check_invariants()))
    }

    /// Every finding the operations so far produced, as JSON.
    fn findings(&self) -> PyResult<String> {
        guarded(|| json(&self.inner.lock().findings()))
    }

    fn nr_vcpus(&self) -> u16 {
        self.inner.lock().vm.nr_vcpus
    }
}

fn check_gfn(s: &session::Session, gfn: Gfn) -> CoreResult<()> {
    match s.vm.memslot(gfn) {
        Some(_) => Ok(()),
        None => Err(CoreError::Config(s.vm.outside_msg(gfn))),
    }
}
