"""The run configuration: defaults, validation as one-line errors, what is recorded, env overrides."""

from __future__ import annotations

import json

import pytest

from instructzero.flows.params import RunConfig, build_config, config_from_record, package_versions
from instructzero.tasks.errors import ConfigError


def test_defaults_are_small_and_recorded_without_secrets(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    config = RunConfig()
    recorded = config.recorded()
    assert config.total_candidates == config.bo.n_init + config.bo.iterations * config.bo.batch_size
    assert "sk-secret-value" not in json.dumps(recorded)
    assert recorded["black_box"]["api_key_env"] == "OPENAI_API_KEY"
    assert config_from_record(recorded) == config.model_copy(update={"cache_dir": config.cache_dir})


def test_invalid_settings_raise_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"bo\.iterations"):
        build_config(bo={"iterations": -1})
    with pytest.raises(ConfigError, match="kernel"):
        build_config(bo={"kernel": "rbf"})
    with pytest.raises(ConfigError, match="n_dev"):
        build_config(data={"n_dev": "many"})


def test_environment_overrides(monkeypatch) -> None:
    monkeypatch.setenv("INSTRUCTZERO_BO__ITERATIONS", "7")
    monkeypatch.setenv("INSTRUCTZERO_STORE_URL", "sqlite:///x.db")
    config = build_config()
    assert config.bo.iterations == 7 and config.store_url == "sqlite:///x.db"


def test_client_settings_carry_the_run_settings() -> None:
    config = build_config(black_box={"max_tokens": 5, "concurrency": 3, "stop": ["\n", "###"]})
    settings = config.black_box.client_settings("http://127.0.0.1:1/v1")
    assert (settings.max_tokens, settings.concurrency, settings.stop) == (5, 3, ("\n", "###"))
    assert settings.config is config.black_box  # one type: the client holds the recorded section itself


def test_client_settings_resolve_the_embedded_black_box_and_validate_overrides() -> None:
    embedded = build_config().black_box  # no URL: the packaged model served on a new port each run
    settings = embedded.client_settings("http://127.0.0.1:4321/v1", answers=[("positive",), ("negative",)])
    assert settings.endpoint_id == f"local:transformers:{embedded.model}"  # stable across ports: cached answers
    assert settings.timeout_s >= 600.0 and settings.max_tokens == len("positive") + 8
    assert settings.request_params()["endpoint"] == settings.endpoint_id
    remote = build_config(black_box={"base_url": "http://127.0.0.1:9/v1", "timeout_s": 5.0}).black_box
    probe = remote.client_settings("http://127.0.0.1:9/v1", concurrency=2, retry_base_delay_s=0.0)
    assert (probe.endpoint_id, probe.timeout_s, probe.concurrency, probe.retry_base_delay_s) == (None, 5.0, 2, 0.0)
    assert probe.config.concurrency == 2 and remote.concurrency == 8  # a changed copy; the run's stays
    with pytest.raises(ConfigError, match=r"^invalid setting concurrency=0: "):
        remote.client_settings("http://127.0.0.1:9/v1", concurrency=0)


def test_package_versions_are_recorded() -> None:
    versions = package_versions()
    assert versions["torch"].startswith("2.13") and versions["prefect"] == "3.8.8"


def test_same_settings_ignores_the_named_keys_and_how_the_data_folder_is_written(tmp_path, monkeypatch) -> None:
    """Hand cases: a relative and an absolute name of one folder match; an ignored nested key may differ, any
    other may not."""
    from instructzero.flows.params import same_settings

    monkeypatch.chdir(tmp_path)
    stored = {"name": "a", "data": {"data_dir": "data", "n_dev": 5}, "black_box": {"base_url": "http://x:1/v1"}}
    wanted = {"name": "b", "data": {"data_dir": str(tmp_path / "data"), "n_dev": 5}, "black_box": {"base_url": "y"}}
    assert same_settings(stored, wanted, ignore=("name", "black_box.base_url"))
    assert not same_settings(stored, wanted, ignore=("name",))
    assert not same_settings(
        stored, {**wanted, "data": {"data_dir": "elsewhere", "n_dev": 5}}, ignore=("name", "black_box.base_url")
    )
    assert not same_settings(
        stored, {**wanted, "data": {"data_dir": "data", "n_dev": 6}}, ignore=("name", "black_box.base_url")
    )


def test_a_local_engine_of_ours_gets_the_long_timeout_and_any_endpoint_a_flag() -> None:
    """A benchmark's own server (a URL plus a `local:` identity) is as slow under load as the embedded one, so it
    waits as long; a remote API keeps its timeout, which `--timeout` sets."""
    from instructzero.tasks.evaluation.blackbox_settings import EMBEDDED_TIMEOUT_S

    url = "http://127.0.0.1:4321/v1"
    ours = build_config(black_box={"base_url": url, "endpoint_id": "local:transformers:m"}).black_box
    assert ours.client_settings(url).timeout_s == EMBEDDED_TIMEOUT_S
    remote = build_config(black_box={"base_url": url}).black_box
    assert remote.client_settings(url).timeout_s == 60.0
    from instructzero.flows.cli import _nested_overrides, build_parser

    args = build_parser().parse_args(["run", "--black-box-url", url, "--timeout", "900"])
    flagged = build_config(**_nested_overrides(args))
    assert flagged.black_box.timeout_s == 900.0 and flagged.black_box.client_settings(url).timeout_s == 900.0


@pytest.mark.parametrize("given", ["gsk_live0123456789SECRET", "sk-proj-0123456789SECRET", "my key SECRET"])
def test_a_key_given_as_its_variables_name_is_refused_and_never_repeated(given: str) -> None:
    """`--api-key-env` takes a variable's name: a key pasted there would be stored with the run; the one-line error
    says so without repeating it."""
    with pytest.raises(ConfigError, match=r"api_key_env=<not shown>: --api-key-env takes the NAME") as caught:
        build_config(black_box={"api_key_env": given})
    assert "SECRET" not in str(caught.value)
    assert build_config(black_box={"api_key_env": "GROQ_API_KEY"}).black_box.api_key_env == "GROQ_API_KEY"


def test_the_summary_names_the_black_box_without_its_credentials() -> None:
    from instructzero.flows.instruction_search import _where

    url = "http://u:SECRET@127.0.0.1:9/v1?api_key=K2SECRET"
    shown = _where(build_config(black_box={"base_url": url}).black_box.client_settings(url))
    assert "SECRET" not in shown and shown.startswith("http://u:***@127.0.0.1:9/v1")
    embedded = build_config().black_box.client_settings("http://127.0.0.1:4321/v1")
    assert _where(embedded) == f"embedded local:transformers:{embedded.model}"
