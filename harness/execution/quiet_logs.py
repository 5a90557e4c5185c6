"""Worker logs that count repeated library messages instead of repeating them.

Why: bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." through ``logging`` on every
quantized matmul; with no handler configured Python's last-resort handler printed all
20,688 copies into each worker log (1.7 MB per worker for the smoke matrix). Here every
log record goes through one stderr handler whose filter lets the first occurrence of a
message through and counts the rest; ``flush_repeats`` (called by the worker after each
cell and before it exits) writes one ``(repeated N more times)`` line per message whose
count grew, so the log stays small and a crash loses at most one cell's counts.
Python warnings raised outside a cell's ``capture_warnings`` are routed through logging
(``logging.captureWarnings``) and counted the same way.

The line format is parsed back by ``harness.analysis.logs``: ``LEVEL logger: message`` and
``LEVEL logger: message (repeated N more times)``.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

REPEAT_SUFFIX = " (repeated {n} more times)"
LINE = re.compile(
    r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>[^\s:]+): (?P<message>.*?)"
    r"(?: \(repeated (?P<repeats>\d+) more times\))?$"
)


def one_line(record: logging.LogRecord) -> str:
    """``LEVEL logger: message`` on one line (a Python warning keeps only its first line,
    which names file, line and category; the second is the source line)."""
    message = record.getMessage().strip()
    if record.name == "py.warnings":
        message = message.splitlines()[0] if message else message
    return f"{record.levelname} {record.name}: {' '.join(message.split())}"


class RepeatCounter(logging.Filter):
    """Passes the first record of each distinct line; counts the others."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        line = one_line(record)
        if line in self.totals:
            self.totals[line] += 1
            self.pending[line] = self.pending.get(line, 0) + 1
            return False
        self.totals[line] = 1
        return True

    def flush_repeats(self, stream: TextIO) -> None:
        """One ``(repeated N more times)`` line per message repeated since the last flush."""
        pending, self.pending = self.pending, {}
        for line, n in pending.items():
            stream.write(line + REPEAT_SUFFIX.format(n=n) + "\n")
        stream.flush()


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = one_line(record)
        if record.exc_info:  # keep tracebacks: they are evidence, and rare
            text += "\n" + self.formatException(record.exc_info)
        return text


_installed: tuple[RepeatCounter, TextIO] | None = None


def counting_handler(stream: TextIO) -> tuple[logging.Handler, RepeatCounter]:
    """A stream handler writing one-line records through a fresh RepeatCounter."""
    counter = RepeatCounter()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLineFormatter())
    handler.addFilter(counter)
    return handler, counter


def install(stream: TextIO | None = None, level: int = logging.WARNING) -> RepeatCounter:
    """Route root logging (and stray Python warnings) through one counting stderr handler.
    Idempotent: a second call returns the first counter."""
    global _installed
    if _installed is not None:
        return _installed[0]
    stream = stream or sys.stderr
    handler, counter = counting_handler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    logging.captureWarnings(True)
    _installed = (counter, stream)
    return counter


def flush_repeats() -> None:
    """Write the pending repeat counts (no-op when ``install`` was never called)."""
    if _installed is not None:
        counter, stream = _installed
        counter.flush_repeats(stream)
