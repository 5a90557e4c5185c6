"""The root of every error the harness raises on purpose.

Why one root: the CLI turns an expected failure into one ``error: ...`` line (exit 2) and
anything else into a bug report; callers that must survive an unreadable artifact catch
``StoreError`` (a file that cannot be used as asked), never ``Exception``, so real bugs in
comparison or analysis code still surface. The hierarchy: ``HarnessError`` > ``StoreError``
(files: ``BundleError``, ``RunLocked``), ``WorkflowError`` (``CertifyError``, ``CrossRunError``,
``LocateError``, ``WhitelistError``), ``InputAudioError``, and the specification's own
(``TaskError``, ``MatrixError``). Each class keeps its historical builtin base
(``ValueError``, ``RuntimeError`` ...) so existing ``except`` clauses behave as before.
"""

from __future__ import annotations


class HarnessError(Exception):
    """An expected failure; ``str()`` names the input (file, field, cell) and the problem."""


class StoreError(HarnessError, RuntimeError):
    """A run directory, bundle or results file that cannot be used as asked; the message
    names the file and the problem."""


class WorkflowError(HarnessError, RuntimeError):
    """A workflow that cannot give a sound answer from what it was given (a certification, a
    comparison of two runs, a located divergence, a relay whitelist entry); the subclass names
    which, the message what is missing or inconsistent. Not a ``StoreError``: the files may be
    perfectly readable, and code that survives an unreadable artifact must not swallow these."""


class InputAudioError(HarnessError, ValueError):
    """A task's audio prompt that cannot be used (unreadable WAV, no samples, out of range);
    the message names the task field."""
