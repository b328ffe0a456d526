"""Errors a user can act on. The CLI prints them as one line and exits non-zero.

Everything raised for bad input (task files, settings, endpoints) derives from `InstructZeroError`, so callers
never see a stack trace from deep inside a library for a problem they can fix themselves.
"""

from __future__ import annotations


class InstructZeroError(Exception):
    """Base class of every user-facing error of the pipeline."""


class TaskDataError(InstructZeroError):
    """A task cannot be found or its files cannot be read or parsed."""


class SplitError(InstructZeroError):
    """The task has too few distinct examples for the requested exemplar/dev/test split."""


class ConfigError(InstructZeroError):
    """A setting is invalid (out of range, unknown choice, unparsable)."""


class GeneratorError(InstructZeroError):
    """The instruction-generator model cannot be loaded or run."""


class BlackBoxError(InstructZeroError):
    """The black-box LLM endpoint is unreachable or keeps failing after bounded retries.

    `transient` says whether trying again later may help (timeouts, 429/5xx, connection refused) as opposed to a
    request that can never succeed (401, 404, a bad model name); orchestration retries only transient failures.
    `status`: the HTTP status of a rejected request (None: no answer, or the retries ran out), so the CLI can tell
    a bad key (401, fixed outside the run) from a bad model or request (404/400, part of the run's settings).
    """

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        from instructzero.storage.redaction import redact_secrets

        # stored as the run's error, logged by Prefect, printed: a URL in it (ours or one an SDK or server quoted)
        # never carries its credentials
        super().__init__(redact_secrets(message))
        self.transient = transient
        self.status = status


class NumericalWarning(UserWarning):
    """Numerical trouble that was handled (added jitter, clamped values) but is worth knowing about."""
