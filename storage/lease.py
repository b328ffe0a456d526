"""The run lease: one process holds a run at a time, proven by a heartbeat on its runs row.

Kept next to the store, as Optuna keeps its heartbeat in `storages/_heartbeat.py`: the SQL is
`RunStore.claim_run/heartbeat/release_run`, this module is the holder's side of it (the beating thread, and
whether a holder seen in the row is a dead process of this host).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from instructzero.storage.records import Run
from instructzero.storage.repository import RunStore, lease_timeout_s

__all__ = ["RunLease", "holder_is_dead"]


class RunLease:
    """One process's hold on one run: claimed (or created claimed), renewed every quarter of the lease timeout
    by a daemon thread, released at the end. A killed process stops beating, so its run goes stale and can be
    resumed by another process."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.timeout_s = lease_timeout_s()
        self.run_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, run_id: str) -> Run:
        """Take the run (RunLeasedError while another live process holds it) and start beating. A holder on this
        host whose process is gone (kill -9) is taken over at once instead of after the timeout."""
        holder = self.store.get_run(run_id).lease_owner
        dead = holder if holder and holder_is_dead(holder) else None
        return self.created(self.store.claim_run(run_id, self.owner, timeout_s=self.timeout_s, take_over=dead))

    def created(self, run: Run) -> Run:
        """Start beating for a run created already claimed by `owner`."""
        self.run_id = run.id
        self._thread = threading.Thread(target=self._beat, args=(run.id,), name=f"lease-{run.id[:8]}", daemon=True)
        self._thread.start()
        return run

    def _beat(self, run_id: str) -> None:
        log = logging.getLogger("instructzero.lease")
        while not self._stop.wait(self.timeout_s / 4):
            try:
                if not self.store.heartbeat(run_id, self.owner):
                    log.warning("run %s: lease lost (another process took the stale run over)", run_id)
                    return
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not kill the run; the next beat retries
                log.warning("run %s: heartbeat failed: %s", run_id, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.run_id is not None:
            self.store.release_run(self.run_id, self.owner)


def holder_is_dead(owner: str) -> bool:
    """Whether a lease owner ("host:pid:nonce") is a process of this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False
