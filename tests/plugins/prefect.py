"""One Prefect test harness per test session (a fresh PREFECT_HOME costs ~14 s of migrations)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PREFECT_HOME shared by the CLI subprocesses of this session (migrated once, then reused)."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def prefect_harness(prefect_home: Path) -> Iterator[None]:
    """An ephemeral Prefect API for in-process flow runs, started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def cli_env(prefect_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for `instructzero` subprocesses: offline, own PREFECT_HOME, shared model cache."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_API_URL="",
        HF_HUB_OFFLINE="1",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("PREFECT_API_URL")
    return env


# ------------------------------------------------------------------------------------------------------------
# Added for the deployment / reliability / suite tests.


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The harness API's URL: subprocesses given PREFECT_API_URL=<this> skip starting their own ephemeral server."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "prefect_test_harness did not set PREFECT_API_URL"
    return url


@pytest.fixture
def isolated_results(tmp_path: Path) -> Iterator[Path]:
    """A per-test Prefect result store, so persisted task results (the cached generation and evaluation tasks)
    never leak between tests and every test really calls the generator and the black box."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    path = tmp_path / "prefect-results"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: path}):
        yield path


TINY_GENERATOR_SIZES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    query_pre_attn_scalar=16,
    layer_types=["full_attention"],
)


@pytest.fixture(scope="session")
def tiny_generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real but tiny Gemma-3 causal LM (1 layer, width 32, seeded random weights) with the packaged tokenizer.

    For tests about orchestration, storage and reliability that must run the whole flow many times: it loads and
    generates in well under a second, deterministically (greedy), and writes varied (meaningless) instructions.
    Passed as `generator.model` (a local folder), so no production code knows about it.
    """
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from instructzero.tasks.generation.model_assets import PACKAGED_GEMMA, default_cache_dir, resolve_model_path

    source = resolve_model_path(PACKAGED_GEMMA, default_cache_dir())
    target = tmp_path_factory.mktemp("tiny-generator")
    config = AutoConfig.from_pretrained(source)
    for key, value in TINY_GENERATOR_SIZES.items():
        setattr(config, key, value)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    return target


def tiny_run_overrides(
    store_url: str,
    base_url: str,
    generator_dir: Path,
    *,
    task: str = "sum",
    n_init: int = 2,
    iterations: int = 1,
    batch_size: int = 1,
    max_retries: int = 4,
    timeout_s: float = 30.0,
    seed: int = 0,
) -> dict:
    """Nested `RunConfig` overrides for a CI-sized run: tiny generator, rule-based black box, 3 dev examples."""
    return dict(
        store_url=store_url,
        seed=seed,
        data=dict(task=task, n_exemplars=2, n_dev=3, n_test=3),
        generator=dict(model=str(generator_dir), max_new_tokens=8, batch_size=4, device="cpu"),
        black_box=dict(
            base_url=base_url,
            model="rule-based",
            api="completions",
            max_tokens=8,
            max_retries=max_retries,
            timeout_s=timeout_s,
            concurrency=4,
        ),
        bo=dict(n_init=n_init, iterations=iterations, batch_size=batch_size, num_restarts=2, raw_samples=16),
    )


def tiny_run_args(
    store_url: str,
    base_url: str,
    generator_dir: Path,
    *,
    task: str = "sum",
    name: str | None = None,
    iterations: int = 1,
) -> list[str]:
    """The CLI flags of the same CI-sized run (without the subcommand): tiny generator, rule-based black box."""
    return [
        *(("--name", name) if name else ()),
        "--task", task, "--store", store_url,
        "--black-box-url", base_url, "--black-box-model", "rule-based", "--black-box-api", "completions",
        "--generator", str(generator_dir), "--device", "cpu",
        "--n-exemplars", "2", "--n-dev", "3", "--n-test", "3", "--max-new-tokens", "8", "--max-tokens", "8",
        "--init", "2", "--iterations", str(iterations), "--batch", "1",
    ]  # fmt: skip


_INTEGRITY_CHECKS = {
    "duplicate candidates": 'SELECT run_id, iteration, "index" FROM candidates GROUP BY run_id, iteration, "index" '
    "HAVING count(*) > 1",
    "candidate without its instruction": "SELECT c.id FROM candidates c LEFT JOIN instructions i "
    "ON i.id = c.instruction_id WHERE i.id IS NULL OR i.run_id <> c.run_id",
    "candidate without its dev evaluation": "SELECT c.id FROM candidates c LEFT JOIN evaluations e "
    "ON e.id = c.dev_evaluation_id WHERE e.id IS NULL OR e.split <> 'dev' "
    "OR e.run_id <> c.run_id OR e.instruction_id <> c.instruction_id",
    "evaluation without its instruction": "SELECT e.id FROM evaluations e LEFT JOIN instructions i "
    "ON i.id = e.instruction_id WHERE i.id IS NULL OR i.run_id <> e.run_id",
    "evaluation with missing example scores": "SELECT e.id FROM evaluations e LEFT JOIN example_scores x "
    "ON x.evaluation_id = e.id GROUP BY e.id, e.n_examples "
    "HAVING count(x.id) <> e.n_examples OR count(x.id) = 0",
    "example score without evaluation": "SELECT x.id FROM example_scores x LEFT JOIN evaluations e "
    "ON e.id = x.evaluation_id WHERE e.id IS NULL",
    "orphaned instruction": "SELECT i.id FROM instructions i LEFT JOIN candidates c ON c.instruction_id = i.id "
    "LEFT JOIN evaluations e ON e.instruction_id = i.id "
    "WHERE c.id IS NULL AND e.id IS NULL",  # baselines have a test evaluation only
    "candidate or evaluation of an unknown run": "SELECT c.run_id FROM candidates c LEFT JOIN runs r "
    "ON r.id = c.run_id WHERE r.id IS NULL UNION ALL "
    "SELECT e.run_id FROM evaluations e LEFT JOIN runs r "
    "ON r.id = e.run_id WHERE r.id IS NULL",
    "duplicate llm call": "SELECT request_hash FROM llm_calls GROUP BY request_hash HAVING count(*) > 1",
}


def store_integrity_problems(url: str) -> dict[str, list]:
    """Every violated invariant of the store (duplicates, orphans, dangling references), empty when sound."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = {name: [tuple(r) for r in conn.execute(sa.text(sql))] for name, sql in _INTEGRITY_CHECKS.items()}
    finally:
        engine.dispose()
    return {name: rows for name, rows in found.items() if rows}


def store_rows(url: str, sql: str, **params) -> list[tuple]:
    """Rows of one SQL query on the store (a short-lived engine, so no pool outlives the test)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()
