"""tdxcore: check and measure locking policies for KVM TDX 2MB private mappings.

The Rust core models KVM's TDP MMU (mirror page table, lpage_info, the fault path, the split
engine, conversions) and the TDX module's S-EPT; `Vm` drives it one operation at a time.
"""

from tdxcore._core import MODEL_VERSION, __version__
from tdxcore.errors import (
    ArgumentTypeError,
    ConfigError,
    DeadlockError,
    InternalError,
    Interrupted,
    InvalidOperation,
    ResourceError,
    TdxError,
)
from tdxcore.bench import BenchResult, bench
from tdxcore.check import CheckResult, Counterexample, PropertyResult, Replay, check, properties, replay
from tdxcore.policy import Policy
from tdxcore.scenario import Scenario, accept, access, host, punch_hole, set_memory_attributes, vcpu
from tdxcore.vm import Finding, Outcome, Vm, accept_table, invariants

__all__ = [
    "bench",
    "BenchResult",
    "CheckResult",
    "Counterexample",
    "Policy",
    "PropertyResult",
    "Replay",
    "Scenario",
    "accept",
    "access",
    "check",
    "host",
    "properties",
    "punch_hole",
    "replay",
    "set_memory_attributes",
    "vcpu",
    "MODEL_VERSION",
    "__version__",
    "ArgumentTypeError",
    "ConfigError",
    "DeadlockError",
    "Finding",
    "InternalError",
    "Interrupted",
    "InvalidOperation",
    "Outcome",
    "ResourceError",
    "TdxError",
    "Vm",
    "accept_table",
    "invariants",
]
