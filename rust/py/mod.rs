//! PyO3 bindings: argument conversion, error mapping and the `_core` module. No model logic.

mod args;
mod bench;
mod check;
mod errors;
mod form;
mod session;

/// JSON text, for the one export that is JSON (`Scenario.to_json`, what tokens carry).
fn json<T: serde::Serialize>(v: &T) -> crate::error::CoreResult<String> {
    serde_json::to_string(v).map_err(|e| crate::error::CoreError::Internal(e.to_string()))
}

/// A typed value as Python data (dicts, lists, str, int, None): the form every result crosses
/// the boundary in.
fn to_py<'py>(
    py: pyo3::Python<'py>,
    v: &(impl serde::Serialize + ?Sized),
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
    pythonize::pythonize(py, v).map_err(|e| {
        errors::to_pyerr(crate::error::CoreError::Internal(format!("tdxcore internal error (please report): {e}")))
    })
}

#[pyo3::pymodule(name = "_core")]
mod core_module {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::session::Session;

    #[pymodule_export]
    use super::bench::{bench_plan, guarded_noop, native_run, noop, workload_plan};

    #[pymodule_export]
    use super::check::{check, replay_token};

    #[pymodule_export]
    use super::form::{check_policy, check_policy_fields, policy_locks, read_toml, scenario_json};

    /// The full TDG.MEM.PAGE.ACCEPT outcome table.
    #[pyfunction]
    fn accept_table(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        super::to_py(py, &crate::model::accept::accept_table())
    }

    /// I1-I11 with their conditions.
    #[pyfunction]
    fn invariants(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        super::to_py(py, crate::model::invariants::INVARIANTS)
    }

    /// The model's names: their one home, which tdxcore.vocabulary reads (honour
    /// steps, split allocation modes, planted mutations, SEAMCALLs, page levels, the levels a
    /// guest may ACCEPT at, lpage_info's flags).
    #[pyfunction]
    fn vocabulary(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        use crate::abi::{PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K};
        use crate::model::config::SplitAlloc;
        use crate::model::honor_policy::HonorStep;
        use crate::model::lpage_info::{KVM_LPAGE_GUEST_INHIBIT_FLAG, KVM_LPAGE_MIXED_FLAG};
        use crate::model::mutation::Mutation;
        let names = serde_json::json!({
            "honor_steps": HonorStep::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "split_alloc": SplitAlloc::ALL.map(|m| serde_json::json!(m)),
            "mutations": Mutation::ALL.map(|m| serde_json::json!(m)),
            "seamcalls": crate::abi::Seamcall::ALL.iter().map(|c| c.key()).collect::<Vec<_>>(),
            "levels": ([PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G].map(|l| l.to_string())),
            "accept_levels": ([PG_LEVEL_4K, PG_LEVEL_2M].map(|l| l.to_string())),
            "lpage_info_flags": {"MIXED": KVM_LPAGE_MIXED_FLAG, "GUEST_INHIBIT": KVM_LPAGE_GUEST_INHIBIT_FLAG},
            "split_alloc_meaning": SplitAlloc::ALL.map(|m| (m, m.meaning())).into_iter()
                .map(|(m, text)| (serde_json::json!(m).as_str().unwrap_or_default().to_string(), text))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "policy_presets": super::errors::guarded(crate::form::presets::policy_presets)?,
        });
        super::to_py(py, &names)
    }

    /// The preset scenarios' fields, each in its file's order (presets/scenarios/).
    #[pyfunction]
    fn scenario_presets(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        super::to_py(py, &super::errors::guarded(crate::form::presets::scenario_presets)?)
    }

    /// The properties a check answers, worst first, with their class.
    #[pyfunction]
    fn properties(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        super::to_py(py, &crate::explore::properties::PROPERTIES)
    }

    /// TDX status codes the model returns, by value: {0: "TDX_SUCCESS", ...}.
    #[pyfunction]
    fn status_names(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        use crate::abi::*;
        let codes = [
            TDX_SUCCESS,
            TDX_OPERAND_BUSY,
            TDX_INTERRUPTED_RESTARTABLE,
            TDX_PAGE_SIZE_MISMATCH,
            TDX_PAGE_ALREADY_ACCEPTED,
            TDX_GPA_RANGE_NOT_BLOCKED,
            TDX_TLB_TRACKING_NOT_DONE,
            TDX_EPT_ENTRY_STATE_INCORRECT,
            TDX_EPT_WALK_FAILED,
            ACCEPT_EXIT,
        ];
        let map: std::collections::BTreeMap<u64, &str> = codes.iter().map(|&c| (c, status_name(c))).collect();
        super::to_py(py, &map)
    }

    /// A value a traced step read or wrote on an object of kind `obj` ("spte", "lpage_info",
    /// "attributes", "sept", ...) at `level`, as reports show it.
    #[pyfunction]
    #[pyo3(signature = (obj, value, level=None))]
    fn value_text(obj: &str, value: u64, level: Option<super::args::TableLevel>) -> String {
        crate::model::trace_value::value_text(obj, value, level.map(|l| l.0))
    }

    /// Put a fresh module's S-EPT in one cell of the ACCEPT table (gfn 0x201) and run
    /// TDG.MEM.PAGE.ACCEPT there; returns the outcome name.
    #[pyfunction]
    fn accept_in_state(state: &str, leaf: bool, position: &str, level: &str) -> PyResult<String> {
        use crate::error::CoreError;
        use crate::model::accept::AcceptKey;
        use crate::model::sept::TdxModule;
        super::errors::guarded(|| {
            fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T, CoreError> {
                serde_json::from_value(serde_json::Value::String(v.to_string()))
                    .map_err(|e| CoreError::Config(format!("{what}: {e}")))
            }
            let key = AcceptKey {
                state: parse("state", state)?,
                leaf,
                position: parse("position", position)?,
                level: parse("level", level)?,
            };
            let mut m = TdxModule::with_cell(key)
                .ok_or_else(|| CoreError::Config(format!("cell {key:?} is structural: it cannot occur")))?;
            Ok(m.tdg_mem_page_accept(0x201, key.level, false).0.name().to_string())
        })
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("MODEL_VERSION", crate::MODEL_VERSION)
    }
}
