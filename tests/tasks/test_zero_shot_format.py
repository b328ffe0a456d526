"""The zero-shot request of a run: --template validation, --instruction-role system over real HTTP, cache keys that
follow the request, and runs recorded before these settings existed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instructzero.flows.cli import EXIT_USER_ERROR, main
from instructzero.flows.params import build_config, config_from_record
from instructzero.servers.openai_compatible import GenRequest, RuleBackend, ServerHandle
from instructzero.storage.records import Example
from instructzero.storage.repository import RunStore
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.blackbox import (
    BlackBoxClient,
    BlackBoxSettings,
    InMemoryResponseCache,
    evaluate_instructions,
)
from instructzero.tasks.evaluation.budget import byte_bound
from instructzero.tasks.evaluation.metrics import Scorer
from instructzero.tasks.evaluation.normalization import parse_normalization
from instructzero.tasks.prompts import (
    SYSTEM_ROLE_TEMPLATE,
    ZERO_SHOT_TEMPLATE,
    SystemPrompt,
    ZeroShotFormat,
    render_zero_shot,
    validate_template,
)

UPPER = "Convert the input to upper case."
WORDS = (Example("w1", "apple pie", ("APPLE PIE",)), Example("w2", "blue sky", ("BLUE SKY",)))
CASE_SENSITIVE = Scorer("exact_match", parse_normalization("no-lowercase"))


def settings(base_url: str, **kw: Any) -> BlackBoxSettings:
    return BlackBoxSettings.at(base_url, model="rule-based", retry_base_delay_s=0.01, timeout_s=5.0, **kw)


# ------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("template", "role", "needle"),
    [
        ("Do it: {input}", "user", "exactly the fields {instruction} and {input}"),
        ("{instruction} only", "user", "found ['instruction']"),
        ("{instruction} {input} {extra}", "user", "'extra'"),
        ("{instruction} {input} {}", "user", "''"),
        ("{instruction} {input!r}", "user", "conversion or format spec"),
        ("{instruction:>9} {input}", "user", "conversion or format spec"),
        ("{instruction} {input", "user", "not a valid format string"),
        ("I: {instruction}\nQ: {input}", "system", "the instruction is the system message"),
        ("no fields", "system", "exactly the fields {input}"),
    ],
)
def test_a_bad_template_is_one_config_error(template: str, role: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="zero-shot template") as info:
        validate_template(template, role)  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value).replace(repr(template), "")
    with pytest.raises(ConfigError, match="zero-shot template"):
        build_config(black_box={"template": template, "instruction_role": role})


def test_literal_braces_are_allowed() -> None:
    fmt = ZeroShotFormat('JSON {{"task": "{instruction}"}} {input}')
    assert fmt.render("x", "y") == 'JSON {"task": "x"} y'


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--template", "Answer: {input}"], "{instruction} and {input}"),
        (["--instruction-role", "system", "--black-box-api", "completions"], "needs the chat API"),
        (["--instruction-role", "system", "--template", "{instruction}: {input}"], "system message"),
    ],
)
def test_bad_prompt_flags_are_one_line_exit_2_before_anything_runs(
    flags: list[str], needle: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--task", "sum", *flags]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "instructzero.db").exists()


def test_system_role_defaults_to_the_template_without_its_instruction_line() -> None:
    config = build_config(black_box={"instruction_role": "system"})
    assert config.black_box.template == SYSTEM_ROLE_TEMPLATE
    assert config.recorded()["black_box"]["instruction_role"] == "system"
    assert config_from_record(config.recorded()).black_box == config.black_box
    settings = config.black_box.client_settings("http://127.0.0.1:1/v1")
    assert settings.config.zero_shot == config.black_box.zero_shot
    assert "instruction_role" not in settings.request_params()  # it shapes the prompt, which the cache key hashes


# ---------------------------------------------------------------------------------------------- requests
def test_rendering_per_role() -> None:
    user = ZeroShotFormat()
    system = ZeroShotFormat(SYSTEM_ROLE_TEMPLATE, "system")
    assert (
        user.render(UPPER, "abc")
        == render_zero_shot(UPPER, "abc")
        == ZERO_SHOT_TEMPLATE.format(instruction=UPPER, input="abc")
    )
    assert system.render(f" {UPPER} ", "abc ") == SystemPrompt(UPPER, SYSTEM_ROLE_TEMPLATE.format(input="abc"))
    assert system.render("  ", "abc") == SYSTEM_ROLE_TEMPLATE.format(input="abc")  # empty: no system message
    assert byte_bound("chat")(system.render(UPPER, "abc")) > byte_bound("chat")(system.render("", "abc"))


def test_cache_keys_follow_the_template_and_the_role() -> None:
    client = BlackBoxClient(settings("http://127.0.0.1:1/v1"))
    default = client.request_hash(ZeroShotFormat().render(UPPER, "abc"))
    assert default == client.request_hash(render_zero_shot(UPPER, "abc"))  # stored answers keep their keys
    other_template = client.request_hash(ZeroShotFormat("Q: {instruction}\n{input}\nA:").render(UPPER, "abc"))
    as_system = ZeroShotFormat(SYSTEM_ROLE_TEMPLATE, "system").render(UPPER, "abc")
    # the same two texts in one user message are another request than system + user
    joined = client.request_hash(f"{as_system.system}\n\n{as_system.user}")
    assert len({default, other_template, client.request_hash(as_system), joined}) == 4


def test_another_template_is_not_answered_from_the_cache(echo_server_url: str) -> None:
    client = BlackBoxClient(settings(echo_server_url), cache=InMemoryResponseCache())
    [first] = evaluate_instructions(client, [UPPER], WORDS, CASE_SENSITIVE)
    [again] = evaluate_instructions(client, [UPPER], WORDS, CASE_SENSITIVE)
    [other] = evaluate_instructions(
        client, [UPPER], WORDS, CASE_SENSITIVE, template="Task: {instruction}\n\nInput: {input}\nOutput:"
    )
    assert (first.n_cached, again.n_cached, other.n_cached) == (0, 2, 0)


def test_the_completions_api_refuses_a_system_message(echo_server_url: str) -> None:
    client = BlackBoxClient(settings(echo_server_url, api="completions"))
    with pytest.raises(ConfigError, match="chat API"):
        client.complete_many_sync([SystemPrompt(UPPER, "Input: a\nOutput:")])


def test_the_rule_backend_reads_a_system_message_as_the_instruction() -> None:
    user_turn = SYSTEM_ROLE_TEMPLATE.format(input="abc")
    assert RuleBackend.answer(user_turn, system=UPPER) == "ABC"
    assert RuleBackend.answer(user_turn) == "abc"  # no instruction: the echo
    [out] = RuleBackend().generate([GenRequest(user_turn, 8, (), True, UPPER)])
    assert out.text == "ABC" and out.prompt_tokens == len(user_turn.split()) + len(UPPER.split())


def test_system_role_reaches_the_server_as_a_system_message(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server("rule", model_name="rule-based")
    cache = InMemoryResponseCache()
    client = BlackBoxClient(settings(server.base_url), cache=cache)
    fmt = ZeroShotFormat(SYSTEM_ROLE_TEMPLATE, "system")
    found, empty = evaluate_instructions(client, [UPPER, ""], WORDS, CASE_SENSITIVE, template=fmt)
    assert (found.mean_score, empty.mean_score) == (1.0, 0.0)
    assert [r.prediction for r in found.examples] == ["APPLE PIE", "BLUE SKY"]
    # what the server received: one system message per example with the instruction, none for the empty one
    assert server.stats()["roles"] == {"system": 2, "user": 4}
    stored = {c.prompt.split("\n\n")[0] for c in cache.data.values()}  # the ledger keeps both messages, labelled
    assert stored == {f"[system]\n{UPPER}\n[user]\nInput: {w}" for w in ("apple pie", "blue sky")} | {
        f"Input: {w}" for w in ("apple pie", "blue sky")
    }


# ---------------------------------------------------------------------------- runs from before these fields
def _old_record(**overrides: Any) -> dict[str, Any]:
    """A run config as stored before `scoring` and `black_box.instruction_role` existed."""
    recorded = build_config(**overrides).recorded()
    del recorded["scoring"], recorded["black_box"]["instruction_role"]
    return recorded


def test_an_old_run_resumes_with_the_defaults_not_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("INSTRUCTZERO_SCORING__METRIC", "f1")
    config = config_from_record(_old_record())
    assert config.scoring.metric == "auto" and config.black_box.instruction_role == "user"
    assert config.black_box.zero_shot == ZeroShotFormat()


def test_an_old_run_is_found_again_by_its_name(sqlite_url: str) -> None:
    from instructzero.flows.instruction_search import same_name_run

    store = RunStore(sqlite_url)
    run = store.create_run(
        name="old",
        task="sentiment",
        config=_old_record(name="old", store_url=sqlite_url),
        seed=0,
        versions={},
        projection_hash=None,
        splits={},
    )
    assert same_name_run(build_config(name="old", store_url=sqlite_url)).id == run.id
    with pytest.raises(ConfigError, match="different settings"):
        same_name_run(build_config(name="old", store_url=sqlite_url, scoring={"metric": "f1"}))
