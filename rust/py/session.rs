//! The `Session` class: one VM driven one operation at a time. Arguments are converted by name
//! (args.rs); results cross as Python dicts and lists made from the model's typed values
//! (pythonize), which `tdxcore.vm` wraps.

use parking_lot::Mutex;
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;

use super::args::{AcceptLevel, End, GfnArg, Npages, PageLevel, Private, Start, TableLevel, Vcpu};
use super::errors::guarded;
use super::form::from_py;
use super::to_py;
use crate::abi::Seamcall;
use crate::abi::{Errno, Gfn, PG_LEVEL_2M, errno_name};
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

/// The report of an operation that returns 0 or an errno: "ok" or the errno's name.
fn unit(r: OpReport<Result<(), Errno>>) -> CoreResult<(OpReport<Result<(), Errno>>, String, serde_json::Value)> {
    let result = errno_name(&r.value);
    Ok((r, result, serde_json::Value::Null))
}

/// A guest operation's report: the result the guest saw and the exits it took.
fn guest(r: OpReport<GuestOutcome>) -> CoreResult<(OpReport<GuestOutcome>, String, serde_json::Value)> {
    let extra = serde_json::json!({"exits": r.value.exits, "userspace_exits": r.value.userspace_exits});
    let result = r.value.result.name();
    Ok((r, result, extra))
}

/// An operation's report with its value rendered as a string plus extra fields.
fn report<T>(r: OpReport<T>, result: String, extra: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "result": result,
        "extra": extra,
        "trace": r.trace,
        "findings": r.findings,
    })
}

/// What an operation or an inspection returns: Python data.
type Report<'py> = PyResult<Bound<'py, PyAny>>;

#[pyclass(frozen, module = "tdxcore._core")]
pub struct Session {
    inner: Mutex<session::Session>,
    config: VmConfig,
}

impl Session {
    /// Run one operation with the GIL released; panics become InternalError.
    fn operation<'py, T>(
        &self,
        py: Python<'py>,
        op: impl FnOnce(&mut session::Session) -> CoreResult<(OpReport<T>, String, serde_json::Value)> + Send,
    ) -> Report<'py> {
        let outcome = py.detach(|| {
            guarded(|| {
                let (r, result, extra) = op(&mut self.inner.lock())?;
                Ok(report(r, result, extra))
            })
        })?;
        to_py(py, &outcome)
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
            Ok(Session { inner: Mutex::new(session), config: cfg })
        })
    }

    /// The VM's whole configuration, every option with its value.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> Report<'py> {
        to_py(py, &self.config)
    }

    fn guest_accept<'py>(&self, py: Python<'py>, vcpu: Vcpu, gfn: GfnArg, level: AcceptLevel) -> Report<'py> {
        self.operation(py, |s| guest(s.guest_accept(vcpu.0, gfn.0, level.0)?))
    }

    fn guest_access<'py>(&self, py: Python<'py>, vcpu: Vcpu, gfn: GfnArg) -> Report<'py> {
        self.operation(py, |s| guest(s.guest_access(vcpu.0, gfn.0)?))
    }

    fn tdcall_accept<'py>(&self, py: Python<'py>, vcpu: Vcpu, gfn: GfnArg, level: AcceptLevel) -> Report<'py> {
        self.operation(py, |s| {
            let r = s.tdcall_accept(vcpu.0, gfn.0, level.0)?;
            let res = r.value.name().to_string();
            Ok((r, res, serde_json::Value::Null))
        })
    }

    #[pyo3(signature = (vcpu, gfn, accept_level=None))]
    fn handle_ept_violation<'py>(
        &self,
        py: Python<'py>,
        vcpu: Vcpu,
        gfn: GfnArg,
        accept_level: Option<AcceptLevel>,
    ) -> Report<'py> {
        self.operation(py, |s| {
            let r = s.handle_ept_violation(vcpu.0, gfn.0, accept_level.map(|l| l.0))?;
            let res = match r.value {
                ExitOutcome::Reenter(pf) => format!("reenter:{}", pf.name()),
                ExitOutcome::ToUserspace(e) => format!("userspace:{}", e.name()),
            };
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn honor_guest_accept_level<'py>(
        &self,
        py: Python<'py>,
        vcpu: Vcpu,
        gfn: GfnArg,
        level: AcceptLevel,
    ) -> Report<'py> {
        self.operation(py, |s| unit(s.honor_guest_accept_level(vcpu.0, gfn.0, level.0)?))
    }

    fn fault<'py>(&self, py: Python<'py>, vcpu: Vcpu, gfn: GfnArg, max_level: PageLevel) -> Report<'py> {
        self.operation(py, |s| {
            let r = s.fault(vcpu.0, gfn.0, max_level.0)?;
            let res = pf_name(&r.value);
            Ok((r, res, serde_json::Value::Null))
        })
    }

    fn init_mem_region<'py>(&self, py: Python<'py>, gfn: GfnArg, npages: Npages) -> Report<'py> {
        self.operation(py, |s| unit(s.init_mem_region(gfn.0, npages.0)?))
    }

    fn finalize(&self) -> PyResult<()> {
        guarded(|| self.inner.lock().finalize())
    }

    fn set_memory_attributes<'py>(&self, py: Python<'py>, start: Start, end: End, private: Private) -> Report<'py> {
        self.operation(py, |s| unit(s.set_memory_attributes(start.0, end.0, private.0)?))
    }

    fn punch_hole<'py>(&self, py: Python<'py>, start: Start, end: End) -> Report<'py> {
        self.operation(py, |s| unit(s.punch_hole(start.0, end.0)?))
    }

    fn split_cross_boundary_leafs<'py>(&self, py: Python<'py>, start: Start, end: End) -> Report<'py> {
        self.operation(py, |s| unit(s.split_cross_boundary_leafs(start.0, end.0)?))
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
    fn mapping(&self, gfn: GfnArg) -> PyResult<Option<(String, u64)>> {
        let gfn = gfn.0;
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            Ok(mapping_level(&s.vm, gfn).map(|l| (l.name().to_string(), s.vm.mmu.lookup(gfn).1)))
        })
    }

    /// (kind, value) of the mirror SPTE at `level` covering `gfn`, or None if no table holds it.
    fn spte(&self, gfn: GfnArg, level: TableLevel) -> PyResult<Option<(String, u64)>> {
        let gfn = gfn.0;
        let l = level.0;
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            Ok(s.vm.mmu.peek(gfn, l).map(|c| {
                let v = c.load(SeqCst);
                (describe(v, l).to_string(), v)
            }))
        })
    }

    /// (level, state) of the S-EPT leaf mapping `gfn`, or (None, "FREE").
    fn sept_entry(&self, gfn: GfnArg) -> PyResult<(Option<&'static str>, &'static str)> {
        let gfn = gfn.0;
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            let tdx = s.vm.tdx.lock();
            Ok(match tdx.leaf_for(gfn) {
                Some((l, e)) => (Some(l.name()), e.state.name()),
                None => (None, crate::abi::SeptState::Free.name()),
            })
        })
    }

    /// disallow_lpage of `gfn` at a huge level ("2M" or "1G").
    fn lpage_info(&self, gfn: GfnArg, level: PageLevel) -> PyResult<u32> {
        let gfn = gfn.0;
        let l = level.0;
        guarded(|| {
            let s = self.inner.lock();
            check_gfn(&s, gfn)?;
            if l < PG_LEVEL_2M {
                return Err(CoreError::Config(format!("lpage_info exists for the huge levels 2M and 1G, not {l}")));
            }
            Ok(s.vm.memslot(gfn).map_or(0, |slot| slot.lpage_info_slot(gfn, l).load(SeqCst)))
        })
    }

    fn is_private(&self, gfn: GfnArg) -> PyResult<bool> {
        let gfn = gfn.0;
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

    /// Page statistics and the session's counters.
    fn stats<'py>(&self, py: Python<'py>) -> Report<'py> {
        let stats = guarded(|| {
            let s = self.inner.lock();
            let st = &s.vm.mmu.stats;
            Ok(serde_json::json!({
                "pages_4k": st[1].load(SeqCst),
                "pages_2m": st[2].load(SeqCst),
                "pages_1g": st[3].load(SeqCst),
                "counters": s.counters(),
            }))
        })?;
        to_py(py, &stats)
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

    /// The state invariants, checked now, as findings.
    fn check_invariants<'py>(&self, py: Python<'py>) -> Report<'py> {
        to_py(py, &guarded(|| Ok(self.inner.lock().check_invariants()))?)
    }

    /// Every finding the operations so far produced.
    fn findings<'py>(&self, py: Python<'py>) -> Report<'py> {
        to_py(py, self.inner.lock().findings())
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
