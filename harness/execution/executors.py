"""One registry of executors: ``--executor NAME`` is looked up here, nowhere else.

Why: the executors used to be named in the CLI's ``choices`` and built by an if-chain there.
As with task kinds (harness.spec.kinds), an entry is a lazy ``"module:object"`` reference,
so listing the names never imports Ray; a new executor is one class implementing
harness.execution.executor.Executor plus one ``register`` line. Options are keyword
arguments of the class (``address`` for Ray); one the executor does not take, or an unknown
name, is refused in one line that says what there is.

The job types the executors' worker runs besides generating (a replay, a locate re-run, a
replay decision) are named here too: one typed model in harness.execution.protocol plus one
``WORK.register`` line each.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from harness.spec.kinds import Registry

if TYPE_CHECKING:
    from harness.execution.executor import Executor

EXECUTORS: Registry[Any] = Registry("executor")
EXECUTORS.register("local", "harness.execution.local:LocalProcessExecutor")
EXECUTORS.register("ray", "harness.execution.ray_executor:RayExecutor")

#: the job types a worker runs besides a generation (harness.execution.protocol.Work): each
#: ``job`` name to the "module:function" (cell, task, model cache, run store) -> record fields
WORK: Registry[Any] = Registry("job type")
WORK.register("replay", "harness.execution.replay.job:perform")
WORK.register("locate", "harness.execution.hooks:perform")
WORK.register("validate", "harness.compare.replay_job:perform")


def names() -> list[str]:
    """The executor names, in registration order (the CLI's ``--executor`` choices)."""
    return EXECUTORS.names()


def make_executor(name: str, **options: Any) -> Executor:
    """A new executor ``name`` with ``options``; options set to None are left at their
    defaults (an unset command-line flag)."""
    from harness.execution.executor import ExecutorError, require_executor  # names() stays a cheap import

    factory = EXECUTORS.get(name)
    given = {key: value for key, value in options.items() if value is not None}
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    own = [key for key, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [key for key in given if key not in own and not takes_any]
    if unknown:
        users = [other for other in names() if other != name and _takes(other, unknown[0])]
        hint = f"; {', '.join(users)} takes it" if users else ""
        raise ExecutorError(
            f"executor {name!r} takes no option {unknown[0]!r} (its options: {', '.join(own) or 'none'}){hint}"
        )
    return require_executor(factory(**given))


def _takes(name: str, option: str) -> bool:
    """Whether executor ``name`` declares ``option`` (imports its module, never starts it)."""
    try:
        return option in inspect.signature(EXECUTORS.get(name)).parameters
    except Exception:  # an executor whose module cannot be imported here (Ray not installed)
        return False
