"""Errors of the SQL store. Kept inside `storage/` so that storage depends on nothing above it."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be opened, is at the wrong schema version, or refused a write. User-facing."""


class RunNotFoundError(StoreError):
    """No run with that id or name exists in the store."""


class RunLeasedError(StoreError):
    """Another live process holds the run (its lease has a fresh heartbeat)."""


class RunExistsError(StoreError):
    """A run of that name exists already (a claimed creation lost the race to another process)."""
