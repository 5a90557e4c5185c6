"""Where the generator starts: a node's warm start (seeded just before generating) or cold one
(seeded before loading the model, whose loading may draw from it).

Why kept per process: the cold state is found by seeding and loading the model once, which
costs a load; a replay tries both starts and a run replays many candidates of one task.
"""

from __future__ import annotations

from typing import Any

from harness.engines.draws import warm_state

_COLD: dict[tuple[Any, ...], Any] = {}


def start_state(kind: str, task: Any, device: str, start: str) -> Any:
    """The CPU generator's state when sampling begins, for a node that started ``start``."""
    import torch

    from harness.execution.execute import task_seed

    seed = task_seed(task)
    if start == "warm":
        return warm_state(seed)
    if start != "cold":
        raise ValueError(f"unknown start {start!r}; expected warm or cold")
    from harness.engines.base import cache_key, get_engine

    key = (kind, cache_key(task, device), seed)
    if key not in _COLD:
        from harness.determinism import seed_everything

        with torch.random.fork_rng(devices=[]):
            seed_everything(seed)
            get_engine(kind).load(task, device)  # a node's first task: seed, then load (draws for MusicGen)
            _COLD[key] = torch.get_rng_state()
        while len(_COLD) > 64:
            _COLD.pop(next(iter(_COLD)))
    return _COLD[key]


def cold_differs(kind: str, task: Any, device: str) -> bool:
    """Whether loading this task's model draws from the generator (so cold != warm)."""
    import torch

    return not torch.equal(start_state(kind, task, device, "cold"), start_state(kind, task, device, "warm"))
