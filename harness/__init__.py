"""consensus-harness: does the same task give the same output on every node, and at what cost?

The public Python API (run a matrix, analyse a run, compare, certify, assert reproducibility,
load a run's records) is ``harness.api``, re-exported here by name. The names resolve on first
use (PEP 562), so ``import harness`` imports nothing heavy: the pytest plugin and every worker
import this package. Type checkers: import from ``harness.api``, where every name is typed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: the public names, each a lazy "module:object" reference into harness.api (the package root is
#: a registry: it may name the top stage without importing it)
PUBLIC = {
    "analyze_run": "harness.api:analyze_run",
    "assert_reproducible": "harness.api:assert_reproducible",
    "calibrate": "harness.api:calibrate",
    "certify": "harness.api:certify",
    "compare_runs": "harness.api:compare_runs",
    "load_run": "harness.api:load_run",
    "reproducibility_matrix": "harness.api:reproducibility_matrix",
    "run_matrix": "harness.api:run_matrix",
}

__all__ = ["__version__", *PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in PUBLIC:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    module, _, attr = PUBLIC[name].partition(":")
    return getattr(import_module(module), attr)
