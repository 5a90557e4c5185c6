"""consensus-harness: does the same task give the same output on every node, and at what cost?"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def load_run(path):
    """A run directory's records as a pandas DataFrame (see harness.store.run.load_run)."""
    from harness.store.run import load_run as _load_run

    return _load_run(path)
