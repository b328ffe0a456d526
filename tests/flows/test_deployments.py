"""Deployments: `deployments/prefect.yaml` is valid for the flows it names, and a real Prefect server + process
worker run a deployment whose rows reach the store (exactly the documented commands, on 127.0.0.1); the server's
scheduler creates the nightly cron's runs, and a scheduled run is executed by a worker when it comes due."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from instructzero.flows.deploy import load_definitions, to_deployments
from instructzero.storage.repository import RunStore
from tests.plugins.prefect import store_integrity_problems, tiny_run_overrides

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def test_prefect_yaml_defines_the_documented_deployments() -> None:
    definitions = {d["name"]: d for d in load_definitions()}
    assert set(definitions) == {"benchmark-nightly", "run-task-gpu", "run-task-cpu", "resume"}
    nightly = definitions["benchmark-nightly"]
    assert nightly["entrypoint"] == "flows/suite.py:benchmark_suite"
    assert [s["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    # Tasks on which the default generator/black-box pair finds instructions above the empty one (README).
    assert nightly["parameters"]["tasks"] == ["sentiment", "sum"]
    gpu = definitions["run-task-gpu"]
    assert gpu["entrypoint"] == "flows/instruction_search.py:instructzero_flow"
    assert gpu["work_pool"]["name"] == "instructzero-gpu"
    assert gpu["work_pool"]["job_variables"]["env"]["INSTRUCTZERO_GENERATOR__DEVICE"] == "cuda"
    assert definitions["run-task-cpu"]["work_pool"]["name"] == "instructzero-cpu"
    assert definitions["resume"]["entrypoint"] == "flows/suite.py:resume_run"
    # Every entrypoint loads and its parameters validate against the flow's signature (what `instructzero.flows.deploy`
    # serves).
    served = {d.name: d for d in to_deployments()}
    assert set(served) == {f"{name}-served" for name in definitions}  # never a name `prefect deploy` registers
    assert served["benchmark-nightly-served"].schedules and served["resume-served"].parameters == {}


def test_job_variables_route_generation_to_the_gpu(monkeypatch) -> None:
    """The GPU pool's env fills what a run's parameters leave out: here the generator's device."""
    from instructzero.flows.instruction_search import instructzero_flow

    for key, value in {d["name"]: d for d in load_definitions()}["run-task-gpu"]["work_pool"]["job_variables"][
        "env"
    ].items():
        monkeypatch.setenv(key, value)
    config = instructzero_flow.validate_parameters({"config": {"data": {"task": "diff"}}})["config"]
    assert (config.generator.device, config.data.task, config.generator.batch_size) == ("cuda", "diff", 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@dataclass(frozen=True)
class DeployedServer:
    """A `prefect server start` on 127.0.0.1 with `deployments/bootstrap.sh` applied; `env` for CLI subprocesses."""

    api: str
    env: dict[str, str] = field(repr=False)  # the caller's environment: kept out of assertion messages
    log: Path
    timings: dict[str, float]

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture(scope="module")
def deployed(prefect_home, cli_env, tmp_path_factory) -> Iterator[DeployedServer]:
    """One server start and one bootstrap for the module's tests: together they are most of each test's time."""
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(cli_env)
    pythonpath = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])  # the caller's kept
    env.update(
        PREFECT_API_URL=api,
        PREFECT_HOME=str(prefect_home),
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=pythonpath,
        PREFECT=PREFECT,
        PREFECT_LOCAL_STORAGE_PATH=str(tmp / "results"),
        PATH=f"{Path(PREFECT).parent}:{env['PATH']}",
    )
    timings: dict[str, float] = {}
    log = tmp / "server.log"
    start = time.monotonic()
    with log.open("w") as out:  # a file, not a pipe: a scheduler failing every loop would fill a pipe and block
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    handle = DeployedServer(api, env, log, timings)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, handle.log_tail()
            time.sleep(0.25)
        timings["server"] = time.monotonic() - start

        t = time.monotonic()
        done = subprocess.run(
            ["bash", "deployments/bootstrap.sh"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        timings["bootstrap"] = time.monotonic() - t
        yield handle
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def _client(api: str) -> Iterator[Any]:
    """An in-process sync client of the test's server (saves a CLI start-up per call)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


def _scheduled_runs(client: Any, deployment_id: Any) -> list[Any]:
    """The deployment's flow runs still in a Scheduled state."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
    )


def _run_worker_once(env: dict[str, str]) -> str:
    """One polling round of a process worker on the CPU pool: it runs every flow run due within its prefetch
    window (default 10 s) to its end."""
    return _prefect(
        ["worker", "start", "--pool", "instructzero-cpu", "--type", "process", "--run-once"], env, timeout=240
    )


@pytest.mark.slow
def test_deployment_runs_on_a_process_worker_and_reaches_the_store(
    deployed, make_server, tiny_generator_dir, sqlite_url
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    echo = make_server("rule", model_name="rule-based")
    config = {**tiny_run_overrides(sqlite_url, echo.base_url, tiny_generator_dir), "name": "deployed"}
    t = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: deployed.api}):  # in-process client: saves a CLI start-up
        scheduled = run_deployment(
            "instructzero/run-task-cpu", parameters={"config": config}, timeout=0, as_subflow=False
        )
    flow_run_id = str(scheduled.id)
    # One polling round: the worker picks the scheduled run and executes it in a subprocess to its end.
    worker = _run_worker_once(deployed.env)
    run_s = time.monotonic() - t
    with _client(deployed.api) as client:
        state = client.read_flow_run(scheduled.id).state
    assert state is not None and state.is_completed(), f"{state}\n{worker[-3000:]}"

    store = RunStore(sqlite_url)
    run = store.find_run_by_name("deployed")
    assert run is not None and run.status == "completed", worker[-3000:]
    assert run.prefect_flow_run_id == flow_run_id  # the store row points at the deployment's flow run
    assert [(c.iteration, c.index) for c in store.load_candidates(run.id)] == [(0, 0), (0, 1), (1, 0)]
    assert store_integrity_problems(sqlite_url) == {}
    print(
        f"\ndeployment: server up {deployed.timings['server']:.1f}s, pools + deploy "
        f"{deployed.timings['bootstrap']:.1f}s (shared by the module), run + worker {run_s:.1f}s; "
        f"flow run {flow_run_id} -> store run {run.id} completed"
    )


@pytest.mark.slow
def test_schedules_create_flow_runs_that_a_worker_executes(
    deployed, make_server, tiny_generator_dir, sqlite_url
) -> None:
    """The server's scheduler service, not the test, creates the runs: the nightly cron's upcoming 02:00 UTC runs,
    and the run of a schedule due in a few seconds, which a worker then executes into the store."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    t = time.monotonic()
    with _client(deployed.api) as client:
        nightly = client.read_deployment_by_name("instructzero-suite/benchmark-nightly")
        # deadline past the scheduler's 60 s loop, in case its 5 s loop for new deployments missed it
        runs = _poll(lambda: _scheduled_runs(client, nightly.id), deadline_s=65)
        assert runs, f"the scheduler created no runs for benchmark-nightly; server log:\n{deployed.log_tail()}"
        starts = sorted(r.expected_start_time for r in runs)
        assert all(r.auto_scheduled for r in runs)
        assert all((s.hour, s.minute, s.utcoffset()) == (2, 0, timedelta(0)) for s in starts), starts
        assert all(b - a == timedelta(days=1) for a, b in zip(starts, starts[1:], strict=False)), starts
        nightly_s = time.monotonic() - t

        # run-task-cpu as deployed, under another name, with a schedule that comes due in a few seconds and a
        # CI-sized config. A new deployment, because the scheduler's 5 s loop looks only at deployments just
        # created or updated (adding a schedule to an existing one waits for its 60 s loop).
        t = time.monotonic()
        echo = make_server("rule", model_name="rule-based")
        config = {**tiny_run_overrides(sqlite_url, echo.base_url, tiny_generator_dir), "name": "scheduled"}
        cpu = client.read_deployment_by_name("instructzero/run-task-cpu")
        due = datetime.now(UTC) + timedelta(seconds=15)  # time for the scheduler's 5 s loop under load
        soon = client.create_deployment(
            flow_id=cpu.flow_id,
            name="scheduled-soon",
            entrypoint=cpu.entrypoint,
            path=cpu.path,
            pull_steps=cpu.pull_steps,
            work_pool_name=cpu.work_pool_name,
            work_queue_name=cpu.work_queue_name,
            job_variables=cpu.job_variables,
            parameter_openapi_schema=cpu.parameter_openapi_schema,
            parameters={"config": config},
            schedules=[
                DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(hours=1), anchor_date=due))
            ],
        )
        try:
            runs = _poll(
                lambda: [
                    r for r in _scheduled_runs(client, soon) if abs(r.expected_start_time - due) < timedelta(seconds=1)
                ],
                deadline_s=45,
            )
            assert runs, f"the scheduler created no run for the due schedule; server log:\n{deployed.log_tail()}"
            [flow_run] = runs
            assert flow_run.auto_scheduled
            # The worker's start-up overlaps the wait: its one poll takes the run early (prefetch), and the server
            # holds the run in Pending until its scheduled time.
            worker = _run_worker_once({**deployed.env, "PREFECT_WORKER_PREFETCH_SECONDS": "60"})
            flow_run = client.read_flow_run(flow_run.id)
            state = flow_run.state
        finally:
            client.delete_deployment(soon)  # and its later runs, so no other worker round finds them
        run_s = time.monotonic() - t
    assert state is not None and state.is_completed(), f"{state}\n{worker[-3000:]}"
    assert flow_run.start_time >= due - timedelta(seconds=1), (flow_run.start_time, due)  # not before its time

    store = RunStore(sqlite_url)
    run = store.find_run_by_name("scheduled")
    assert run is not None and run.status == "completed", worker[-3000:]
    assert run.prefect_flow_run_id == str(flow_run.id)
    assert store_integrity_problems(sqlite_url) == {}
    print(
        f"\nschedules: {len(starts)} nightly runs scheduled from {starts[0]:%Y-%m-%d %H:%M} UTC after "
        f"{nightly_s:.1f}s; schedule -> run due at +15 s -> worker -> store run {run.id} completed in "
        f"{run_s:.1f}s (started {(flow_run.start_time - due).total_seconds():+.1f}s after its time)"
    )


def _poll(read: Callable[[], list[Any]], *, deadline_s: float, every_s: float = 0.5) -> list[Any]:
    """`read()` until it returns something or the deadline passes (then its last, empty, answer)."""
    deadline = time.monotonic() + deadline_s
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(every_s)
    return found


@pytest.mark.slow
def test_served_deployments_leave_the_deployed_ones_alone(deployed) -> None:
    """`python -m instructzero.flows.deploy serve` registers `<name>-served`; what `prefect deploy` made keeps its
    pool."""
    with _client(deployed.api) as client:
        before = client.read_deployment_by_name("instructzero-resume/resume")
        for deployment in to_deployments(["resume"]):
            deployment.apply()  # what `serve` registers, without staying up to execute runs
        served = client.read_deployment_by_name("instructzero-resume/resume-served")
        after = client.read_deployment_by_name("instructzero-resume/resume")
    assert served.id != before.id and served.work_pool_name is None
    assert (after.id, after.work_pool_name, after.pull_steps, after.path, after.updated) == (
        before.id,
        "instructzero-cpu",
        before.pull_steps,
        before.path,
        before.updated,
    )
