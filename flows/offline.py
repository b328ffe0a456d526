"""Quiet, offline process defaults shared by every entry point (`instructzero ...`, `instructzero bench`, the
benchmark scripts).

It lives in its own module, below both `flows/cli.py` and `benchmarks/cli.py`, so that neither command line has to
import the other for it: `benchmarks/` depends on `flows/`, and `flows/cli.py` reaches `benchmarks/` only lazily for
`instructzero bench` (docs/ARCHITECTURE.md). It imports nothing heavy: it must run before Prefect, transformers or
Hugging Face read their settings.
"""

from __future__ import annotations

import os
import warnings

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TOKENIZERS_PARALLELISM": "false",
    # A first impression without walls of text: the progress bar and the final report say what matters;
    # Prefect's per-task INFO lines and model-loading bars are one variable away (PREFECT_LOGGING_LEVEL=INFO).
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}
"""Set only where the user has not set them: a user's own settings win."""


def offline_defaults() -> None:
    """Quiet, offline defaults for Prefect and Hugging Face (a user's own settings win)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # gpytorch rounds tiny negative posterior variances up to 1e-10 and says so on every proposal; expected.
    warnings.filterwarnings("ignore", message="Negative variance values detected")
