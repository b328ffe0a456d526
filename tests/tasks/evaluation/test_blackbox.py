"""tasks/prompts.py and tasks/evaluation/blackbox.py against the real local OpenAI-compatible server (rule backend)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from instructzero.servers.faults import FaultConfig
from instructzero.servers.openai_compatible import RuleBackend, ServerHandle
from instructzero.storage.records import BlackBoxCall, Example
from instructzero.tasks.errors import BlackBoxError, ConfigError
from instructzero.tasks.evaluation.blackbox import (
    BlackBoxClient,
    BlackBoxSettings,
    InMemoryResponseCache,
    StoreResponseCache,
    evaluate_instructions,
    evaluate_instructions_async,
    request_hash,
)
from instructzero.tasks.prompts import ZERO_SHOT_TEMPLATE, format_exemplars, render_zero_shot, validate_template

KEY_ENV = "INSTRUCTZERO_TEST_BLACKBOX_KEY"
SUM_EXAMPLES = (
    Example("s1", "2 3", ("5",)),
    Example("s2", "10 7", ("17",)),
    Example("s3", "1 1", ("2",)),
    Example("s4", "4 0", ("4",)),
)


def settings(base_url: str, **kw: Any) -> BlackBoxSettings:
    """Fast retries for tests; the rule server's model id."""
    defaults: dict[str, Any] = dict(
        model="rule-based", api_key_env=KEY_ENV, retry_base_delay_s=0.01, retry_max_delay_s=0.05, timeout_s=5.0
    )
    return BlackBoxSettings.at(base_url, **{**defaults, **kw})


def prompt(instruction: str, x: str) -> str:
    return render_zero_shot(instruction, x)


def completion_requests(server: ServerHandle) -> int:
    return int(server.stats()["completion_requests"])


# ------------------------------------------------------------------------------------------------- prompts
def test_zero_shot_template_renders_instruction_and_input() -> None:
    assert render_zero_shot(" Add them. ", "2 3\n") == (
        "Instruction: Add them.\n\nInput: 2 3\n\nAnswer with the output only.\nOutput:"
    )
    # braces in values are safe
    assert render_zero_shot("a {b}", "{x}").startswith("Instruction: a {b}\n\nInput: {x}\n\n")
    assert render_zero_shot("i", "x", "Q: {input} ({instruction}) A:") == "Q: x (i) A:"


@pytest.mark.parametrize("bad", ["{instruction} only", "{instruction} {input} {other}", "{instruction {input}"])
def test_bad_template_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="template"):
        validate_template(bad)


def test_format_exemplars_uses_canonical_answer() -> None:
    text = format_exemplars([Example("a", "2 3", ("5", "five")), Example("b", "1 1", ("2",))])
    assert text == "Input: 2 3\nOutput: 5\n\nInput: 1 1\nOutput: 2"


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "kw",
    [
        dict(base_url="localhost:8000"),
        dict(concurrency=0),
        dict(max_retries=-1),
        dict(api="responses"),
        dict(timeout_s=0),
        dict(model=" "),
    ],
)
def test_invalid_settings_raise_config_error(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        settings(kw.pop("base_url", "http://127.0.0.1:1/v1"), **kw)


def test_request_hash_is_canonical_and_covers_params() -> None:
    params = {"endpoint": "http://h/v1", "api": "chat", "temperature": 0.0, "max_tokens": 32, "stop": []}
    h = request_hash("m", "p", params)
    assert h == request_hash("m", "p", dict(reversed(list(params.items()))))
    assert (
        len(
            {
                h,
                request_hash("m2", "p", params),
                request_hash("m", "p2", params),
                request_hash("m", "p", {**params, "max_tokens": 8}),
                request_hash("m", "p", {**params, "api": "completions"}),
                request_hash("m", "p", {**params, "stop": ["\n"]}),
            }
        )
        == 6
    )
    s = settings("http://127.0.0.1:1/v1/", temperature=0)  # int 0 and 0.0 hash alike; trailing slash dropped
    assert s.base_url == "http://127.0.0.1:1/v1"
    assert BlackBoxClient(s).request_hash("p") == BlackBoxClient(settings("http://127.0.0.1:1/v1")).request_hash("p")


@pytest.mark.parametrize(
    "change",
    [
        dict(base_url="http://127.0.0.1:2/v1"),
        dict(endpoint_id="local:llama.cpp:m"),
        dict(model="other"),
        dict(api="completions"),
        dict(temperature=0.7),
        dict(max_tokens=5),
        dict(stop=("###",)),
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_setting_that_changes_the_answer_changes_the_cache_key(change: dict[str, Any]) -> None:
    """Two servers answering to one model name, or one server asked differently, never share cached answers."""
    base = dict(base_url="http://127.0.0.1:1/v1", model="m", api="chat", temperature=0.0, max_tokens=16, stop=("\n",))
    before = BlackBoxClient(settings(**base)).request_hash("p")
    assert BlackBoxClient(settings(**{**base, **change})).request_hash("p") != before


def test_endpoint_id_replaces_the_url_in_the_key() -> None:
    """The embedded black box gets a new port every run: its stable id keeps answers cached across runs."""
    a = BlackBoxClient(settings("http://127.0.0.1:1/v1", endpoint_id="local:transformers:m"))
    b = BlackBoxClient(settings("http://127.0.0.1:2/v1", endpoint_id="local:transformers:m"))
    assert a.request_hash("p") == b.request_hash("p")


# ----------------------------------------------------------------------------------------- complete_many
@pytest.mark.parametrize("concurrency", [1, 3])
def test_complete_many_keeps_order_and_bounds_concurrency(
    make_server: Callable[..., ServerHandle], concurrency: int
) -> None:
    server = make_server(faults=FaultConfig(latency_s=0.05))
    prompts = [prompt("Add the numbers.", f"{i} {i}") for i in range(9)]
    client = BlackBoxClient(settings(server.base_url, concurrency=concurrency))
    out = client.complete_many_sync(prompts)
    assert [c.text for c in out] == [str(2 * i) for i in range(9)]
    assert [c.prompt for c in out] == prompts
    stats = server.stats()
    assert stats["completion_requests"] == 9
    assert stats["max_in_flight"] <= concurrency
    if concurrency > 1:
        assert stats["max_in_flight"] > 1


def test_identical_prompts_are_sent_once(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server()
    a, b = prompt("Add.", "1 2"), prompt("Add.", "3 4")
    out = BlackBoxClient(settings(server.base_url)).complete_many_sync([a, b, a, a])
    assert [c.text for c in out] == ["3", "7", "3", "3"]
    assert out[0] is out[2] is out[3]
    assert completion_requests(server) == 2


def test_cache_hit_makes_no_http_request(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server()
    cache = InMemoryResponseCache()
    client = BlackBoxClient(settings(server.base_url), cache=cache)
    prompts = [prompt("Add.", "1 2"), prompt("Add.", "5 5")]
    first = client.complete_many_sync(prompts)
    assert not any(c.cached for c in first) and len(cache.data) == 2
    before = completion_requests(server)
    second = client.complete_many_sync(prompts)
    assert completion_requests(server) == before
    assert all(c.cached for c in second)
    assert [c.text for c in second] == [c.text for c in first]
    # a different model id (or params) is a different key: goes to the server
    BlackBoxClient(settings(server.base_url, max_tokens=5), cache=cache).complete_many_sync(prompts[:1])
    assert completion_requests(server) == before + 1


def test_transient_faults_are_retried_and_counted(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server(faults=FaultConfig(script=("429", "500", "malformed", "empty")))
    [c] = BlackBoxClient(settings(server.base_url, max_retries=4)).complete_many_sync([prompt("Add.", "2 2")])
    assert (c.text, c.retries, c.cached) == ("4", 4, False)
    stats = server.stats()
    assert stats["completion_requests"] == 5
    assert stats["faults"] == {"429": 1, "500": 1, "malformed": 1, "empty": 1}


def test_client_timeout_is_retried(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server(faults=FaultConfig(script=("timeout",), hang_s=5.0))
    start = time.perf_counter()
    [c] = BlackBoxClient(settings(server.base_url, timeout_s=0.3)).complete_many_sync([prompt("Add.", "1 1")])
    assert (c.text, c.retries) == ("2", 1)
    assert time.perf_counter() - start < 3.0


def test_retries_are_bounded_then_black_box_error(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server(faults=FaultConfig(rate_429=1.0))
    client = BlackBoxClient(settings(server.base_url, max_retries=2))
    with pytest.raises(BlackBoxError) as err:
        client.complete_many_sync([prompt("Add.", "1 1")])
    assert server.base_url in str(err.value) and "HTTP 429" in str(err.value) and "3 attempts" in str(err.value)
    assert completion_requests(server) == 3


def test_wrong_api_key_is_not_retried(
    make_server: Callable[..., ServerHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(api_key="right-key")
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    client = BlackBoxClient(settings(server.base_url, max_retries=4))
    with pytest.raises(BlackBoxError) as err:
        client.complete_many_sync([prompt("Add.", "1 1"), prompt("Add.", "2 2")])
    message = str(err.value)
    assert "HTTP 401" in message and server.base_url in message and KEY_ENV in message
    assert "wrong-key" not in message
    assert completion_requests(server) <= 2  # one attempt per prompt at most, no retries
    with pytest.raises(BlackBoxError, match="401"):
        client.check_reachable()
    monkeypatch.setenv(KEY_ENV, "right-key")
    assert client.complete_many_sync([prompt("Add.", "1 1")])[0].text == "2"


def test_unknown_model_404_is_not_retried(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server(strict_model=True)
    with pytest.raises(BlackBoxError, match=r"HTTP 404.*model") as err:
        BlackBoxClient(settings(server.base_url, model="no-such-model")).complete_many_sync([prompt("Add.", "1 1")])
    assert "no-such-model" in str(err.value)
    assert completion_requests(server) == 1


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_unreachable_endpoint_fails_fast() -> None:
    url = _dead_url()
    client = BlackBoxClient(settings(url, max_retries=1))
    start = time.perf_counter()
    with pytest.raises(BlackBoxError, match="unreachable") as err:
        client.check_reachable()
    assert url in str(err.value)
    with pytest.raises(BlackBoxError, match="2 attempts"):
        client.complete_many_sync([prompt("Add.", "1 1")])
    assert time.perf_counter() - start < 5.0


def test_check_reachable_passes_on_a_live_server(echo_server_url: str) -> None:
    BlackBoxClient(settings(echo_server_url)).check_reachable()


def test_completions_api_and_missing_usage(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server(omit_usage=True)
    client = BlackBoxClient(settings(server.base_url, api="completions"))
    [c] = client.complete_many_sync([prompt("Add.", "4 4")])
    assert c.text == "8"
    # no usage: the ledger records the client's bound (bytes + overhead in, max_tokens out), never 0
    bound = client.usage_bound(prompt("Add.", "4 4"))
    assert (c.prompt_tokens, c.completion_tokens, c.usage_reported) == (*bound, False)
    assert bound == (len(prompt("Add.", "4 4").encode()) + 64, client.settings.max_tokens)


def test_token_accounting_and_latency(echo_server_url: str) -> None:
    client = BlackBoxClient(settings(echo_server_url, max_tokens=7))
    [c] = client.complete_many_sync([prompt("Upper case it.", "a b c")])
    assert c.text == "A B C"
    assert c.prompt_tokens == len(prompt("Upper case it.", "a b c").split()) and c.completion_tokens == 3
    assert c.usage_reported and c.latency_s > 0 and c.retries == 0


async def test_sync_wrapper_works_inside_a_running_loop(echo_server_url: str) -> None:
    client = BlackBoxClient(settings(echo_server_url))
    assert asyncio.get_running_loop() is not None
    assert client.complete_many_sync([prompt("Add.", "2 5")])[0].text == "7"
    assert (await client.complete_many([prompt("Add.", "2 6")]))[0].text == "8"


# --------------------------------------------------------------------------------------------- evaluation
def test_evaluate_instructions_scores_and_dedups(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server()
    client = BlackBoxClient(settings(server.base_url, concurrency=4))
    add, echo = "Add the two numbers.", "Repeat the input."
    results = evaluate_instructions(client, [add, echo, add], SUM_EXAMPLES, "exact_match")
    assert [r.instruction for r in results] == [add, echo, add]
    assert results[0] == results[2]
    assert results[0].mean_score == 1.0
    assert results[1].mean_score < 1.0
    assert [e.example_id for e in results[0].examples] == ["s1", "s2", "s3", "s4"]
    assert [e.prediction for e in results[1].examples] == ["2 3", "10 7", "1 1", "4 0"]
    assert completion_requests(server) == 2 * len(SUM_EXAMPLES)  # the duplicate instruction cost nothing
    r = results[0]
    assert (r.n_calls, r.n_cached, r.model, r.split) == (4, 0, "rule-based", None)  # retries: in the ledger only
    assert r.prompt_tokens > 0 and r.completion_tokens == 4 and r.latency_s > 0


async def test_evaluate_with_cache_counts_cached_calls(echo_server_url: str) -> None:
    client = BlackBoxClient(settings(echo_server_url), cache=InMemoryResponseCache())
    await evaluate_instructions_async(client, ["Add them."], SUM_EXAMPLES[:2], "exact_match")
    [r] = await evaluate_instructions_async(client, ["Add them."], SUM_EXAMPLES, "exact_match")
    assert (r.n_calls, r.n_cached, r.mean_score) == (4, 2, 1.0)
    assert r.completion_tokens == 2  # only the two fresh calls are counted as spent


def test_evaluate_rejects_empty_examples(echo_server_url: str) -> None:
    with pytest.raises(ConfigError, match="example"):
        evaluate_instructions(BlackBoxClient(settings(echo_server_url)), ["x"], [], "exact_match")


def test_rule_backend_scores_depend_on_instruction() -> None:
    assert RuleBackend.answer(render_zero_shot("Compute the sum.", "3 4")) == "7"
    assert RuleBackend.answer(render_zero_shot("Say it again.", "3 4")) == "3 4"
    assert ZERO_SHOT_TEMPLATE.count("{") == 2


# --------------------------------------------------------------------------------------- caches and secrets
class FakeStore:
    """The two RunStore methods StoreResponseCache uses, over a dict."""

    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}

    def get_llm_call(self, request_hash: str) -> Any:
        return self.calls.get(request_hash)

    def put_llm_call(self, call: Any) -> None:
        self.calls.setdefault(call.request_hash, call)


def test_store_response_cache_round_trip() -> None:
    store = FakeStore()
    cache = StoreResponseCache(store, run_id="run-1")
    c = BlackBoxCall("h1", "m", "p", "text", 3, 1, 0.5, 2)
    cache.put(c)
    assert store.calls["h1"].status == "ok" and store.calls["h1"].run_id == "run-1"
    assert cache.get("h1") == dataclasses.replace(c, cached=True, run_id="run-1")
    cache.put(BlackBoxCall("h2", "m", "p", "t", 0, 0, 0.1, 0, status="ok_no_usage"))
    assert store.calls["h2"].status == "ok_no_usage" and cache.get("h2").usage_reported is False
    store.calls["h3"] = dataclasses.replace(store.calls["h1"], request_hash="h3", status="error")
    assert cache.get("h3") is None and cache.get("missing") is None


def test_api_key_never_stored(make_server: Callable[..., ServerHandle], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET-4f1c9"
    monkeypatch.setenv(KEY_ENV, secret)
    server = make_server(api_key=secret)
    store = FakeStore()
    memory = InMemoryResponseCache()
    s = settings(server.base_url)
    client = BlackBoxClient(s, cache=StoreResponseCache(store))
    out = client.complete_many_sync([prompt("Add.", "1 2")])
    BlackBoxClient(s, cache=memory).complete_many_sync([prompt("Add.", "1 2")])
    [result] = evaluate_instructions(client, ["Add."], SUM_EXAMPLES[:1], "exact_match")
    assert out[0].text == "3"  # the key was sent
    dumps = [
        repr(client),
        repr(s),
        repr(vars(client)),
        repr(out),
        json.dumps([dataclasses.asdict(c) for c in out]),
        repr(store.calls),
        json.dumps({k: dataclasses.asdict(v) for k, v in store.calls.items()}),
        repr(memory.data),
        repr(result),
        json.dumps(dataclasses.asdict(s), default=str),
        s.config.model_dump_json(),
    ]
    assert not any(secret in d for d in dumps)


def test_store_caches_on_a_real_store(make_server: Callable[..., ServerHandle], sqlite_url: str) -> None:
    """The store-backed cache serves hits without HTTP and attributes new calls to the run."""
    from instructzero.storage.repository import RunStore

    server = make_server()
    store = RunStore(sqlite_url)
    prompts = [prompt("Add.", "1 2"), prompt("Add.", "2 2")]
    for cache, max_tokens in ((StoreResponseCache(store), 8),):
        client = BlackBoxClient(settings(server.base_url, max_tokens=max_tokens), cache=cache)
        first = client.complete_many_sync(prompts)
        before = completion_requests(server)
        second = client.complete_many_sync(prompts)
        assert completion_requests(server) == before
        assert all(isinstance(c, BlackBoxCall) and c.cached for c in second)
        assert [c.text for c in second] == [c.text for c in first] == ["3", "4"]
        assert store.get_llm_call(first[0].request_hash).text == "3"


def test_a_web_page_instead_of_an_api_is_one_clear_error() -> None:
    """A server answering HTML with status 200 (a proxy's welcome page, a wrong base_url) is a BlackBoxError naming
    the URL, for the reachability check and for requests alike, not a traceback from inside the SDK."""
    import http.server
    import socketserver
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def _page(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = b"<html><body>Welcome to nginx</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _page

        def log_message(self, *args: Any) -> None:
            pass

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Html) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        client = BlackBoxClient(settings(url, max_retries=1))
        with pytest.raises(BlackBoxError, match="not OpenAI-compatible JSON"):
            client.check_reachable()
        with pytest.raises(BlackBoxError, match=r"127\.0\.0\.1.*malformed response"):
            client.complete_many_sync(["hi"])
        server.shutdown()
