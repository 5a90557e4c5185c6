"""Software stacks a matrix names: the Python environments its cells run under.

Why its own module: a node upgrade (another transformers, another torch) is a comparison
dimension like the thread count, but what a stack *is* (pip requirements, an interpreter,
an overlay folder) is the user's input, checked here before anything runs; how a stack is
built and started is the execution stage's (harness.execution.stacks). The interpreter the
harness runs in is the implicit first stack, ``current`` (harness.vocabulary.CURRENT_STACK),
against which every other is compared.
"""

from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.vocabulary import CURRENT_STACK

#: a stack's name: it appears in cell ids (``/stack-NAME``)
STACK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
MAX_REQUIREMENTS = 64
#: packages a stack may not replace: the harness itself (its code must be the driver's)
HARNESS_DISTRIBUTION = "consensus-harness"


class StackSpec(BaseModel):
    """One stack: exactly one of ``pip`` (requirements installed into an overlay in front of
    the current environment, built and cached by the harness), ``python`` (an interpreter of
    another environment, which must have this harness installed) or ``overlay`` (a folder put
    in front of the current environment as it is: a patched package, a local build)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pip: list[str] | None = Field(None, min_length=1, max_length=MAX_REQUIREMENTS)
    python: str | None = Field(None, min_length=1)
    overlay: str | None = Field(None, min_length=1)

    @field_validator("pip")
    @classmethod
    def _requirements(cls, v: list[str] | None) -> list[str] | None:
        for text in v or []:
            try:
                req = Requirement(text)
            except InvalidRequirement as err:
                why = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ValueError(f"{text!r} is not a pip requirement ({why})") from None
            if req.url:
                raise ValueError(f"{text!r}: give a name and version (name==X.Y), not a URL")
            if canonicalize_name(req.name) == HARNESS_DISTRIBUTION:
                raise ValueError(f"{text!r}: a stack cannot replace the harness itself (its code must be the driver's)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> StackSpec:
        given = [k for k in ("pip", "python", "overlay") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of pip, python or overlay")
        return self

    @property
    def source(self) -> str:
        """Which of the three forms this stack takes."""
        return "pip" if self.pip is not None else "python" if self.python is not None else "overlay"


def stack_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a stack (None when it can)."""
    if name == CURRENT_STACK:
        return f"{CURRENT_STACK!r} is the interpreter the harness runs in; name the other stacks otherwise"
    if not re.fullmatch(STACK_NAME, name):
        return f"stack name {name!r} must be letters, digits, '_', '.', '-' (at most 32)"
    return None
