"""The Hugging Face / tokenizers environment defaults, in one place.

Why: nothing may reach a model hub (tiny models are built offline, real ones come from the
local cache), and library chatter (progress bars, advisory warnings, tokenizers' fork
warning) must not bury the harness's own output or a worker's protocol. The CLI, the runner's
workers, the validator study's workers and the test suite all start from these; a value the
user already set is kept (``setdefault``).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

LIBRARY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
}


def apply_library_env(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Fill the defaults into ``env`` (``os.environ`` when None) where unset; returns ``env``."""
    target = os.environ if env is None else env
    for key, value in LIBRARY_ENV.items():
        target.setdefault(key, value)
    return target
