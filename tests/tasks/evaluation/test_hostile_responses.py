"""A ledger that hostile answers cannot bend: tasks/evaluation/blackbox.py against a scripted hostile HTTP server.

The server below is real HTTP on 127.0.0.1 (no mocks): each request gets the next scripted reply, the last reply
repeats forever. Replies are raw JSON bodies the openai SDK would never produce itself (negative or non-integer
usage, `choices: [null]`, a 10 MB answer, an HTML page, a body trickled byte by byte...). What must hold:

* the token counts and cost recorded for a call are non-negative integers the budget can trust: usage the server
  reports is kept only when it is non-negative integers, otherwise the client's own bound is charged;
* a malformed body is transient: retried within `max_retries`, counted in `retries`, then one BlackBoxError;
* what is stored and scored of one answer is capped at `max_answer_chars`, and the cut is recorded in the status.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from instructzero.storage.records import Example
from instructzero.storage.repository import RunStore
from instructzero.tasks.errors import BlackBoxError
from instructzero.tasks.evaluation.blackbox import (
    BlackBoxClient,
    BlackBoxSettings,
    StoreResponseCache,
    evaluate_instructions,
)
from instructzero.tasks.prompts import render_zero_shot

MODEL = "hostile"
PROMPT = "Instruction: Add.\n\nInput: 2 3\nOutput:"
MAX_TOKENS = 16
RUN_ID = "run-hostile"


def settings(base_url: str, **kw: Any) -> BlackBoxSettings:
    """Fast retries, a price so that cost is visible (as in tests/tasks/evaluation/test_blackbox.py). The timeout is
    generous: on two loaded cores a 2 s one fired before a malformed body arrived, so the error named the timeout
    instead; the tests about hangs pass their own short one."""
    defaults: dict[str, Any] = dict(
        model=MODEL,
        api_key_env="INSTRUCTZERO_TEST_HOSTILE_KEY",
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.02,
        timeout_s=10.0,
        max_retries=2,
        max_tokens=MAX_TOKENS,
        price_in_per_mtok=30.0,
        price_out_per_mtok=60.0,
    )
    return BlackBoxSettings.at(base_url, **{**defaults, **kw})


def bound(prompt: str = PROMPT) -> tuple[int, int]:
    """The client's own bound of one call when usage is missing: UTF-8 bytes + 64 in, max_tokens out."""
    return len(prompt.encode("utf-8")) + 64, MAX_TOKENS


# ------------------------------------------------------------------------------------------- hostile server
Reply = Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]


def raw(body: bytes, status: int = 200, content_type: str = "application/json") -> Reply:
    def reply(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return reply


def body(payload: Any, status: int = 200) -> Reply:
    return raw(json.dumps(payload).encode("utf-8"), status)


def chat(content: Any = "5", usage: Any = "default", **extra: Any) -> Reply:
    """A chat completion body; `usage="default"` -> a plausible usage, `usage=None` -> the key is left out."""
    payload: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        **extra,
    }
    if usage == "default":
        payload["usage"] = {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
    elif usage is not None:
        payload["usage"] = usage
    return body(payload)


def hang(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Never answer (until the test ends)."""
    stop.wait(30)


def trickle(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Status and headers at once, then one byte of a long body every 0.1 s: no single read ever times out."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "1000000")
    h.end_headers()
    h.wfile.write(b'{"choices": [{"message": {"content": "')
    h.wfile.flush()
    while not stop.wait(0.1):
        try:
            h.wfile.write(b"x")
            h.wfile.flush()
        except OSError:
            return


class HostileServer:
    """Threaded http.server on a free port; every POST takes the next reply of the script (the last repeats)."""

    def __init__(self, *script: Reply) -> None:
        self.script = list(script)
        self.requests = 0
        self.stop_event = threading.Event()
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    reply = outer.script[min(outer.requests, len(outer.script) - 1)]
                    outer.requests += 1
                try:
                    reply(self, outer.stop_event)
                except OSError:  # the client hung up (a timeout): fine
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileServer]]:
    started: list[HostileServer] = []

    def start(*script: Reply) -> HostileServer:
        server = HostileServer(*script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def store(sqlite_url: str) -> RunStore:
    return RunStore(sqlite_url)


def ask(server: HostileServer, store: RunStore | None = None, prompt: str = PROMPT, **kw: Any) -> Any:
    """One prompt through a client over the store-backed cache (the ledger), with a hard wall-clock guard so that
    a client that would hang fails the test instead of hanging it."""
    cache = StoreResponseCache(store, run_id=RUN_ID) if store is not None else None
    client = BlackBoxClient(settings(server.url, **kw), cache=cache)

    async def go() -> Any:
        return await asyncio.wait_for(client.complete_many([prompt]), timeout=15)

    [completion] = asyncio.run(go())
    return completion


def assert_ledger_row_is_sane(store: RunStore, completion: Any) -> Any:
    row = store.get_llm_call(completion.request_hash)
    assert row is not None
    for value in (row.prompt_tokens, row.completion_tokens, row.retries):
        assert type(value) is int and value >= 0, row
    assert row.cost_usd is not None and row.cost_usd >= 0, row
    calls, tokens_in, tokens_out, cost = store.llm_spend(RUN_ID)
    assert calls == 1 and tokens_in >= 0 and tokens_out >= 0 and cost >= 0
    return row


# --------------------------------------------------------------------------------------------------- usage
def test_negative_usage_is_not_believed_and_the_bound_is_charged(
    hostile: Callable[..., HostileServer], store: RunStore
) -> None:
    """Reported -1,000,000 tokens used to record cost $-30 and lift --max-cost / --max-total-tokens."""
    server = hostile(chat("5", usage={"prompt_tokens": -1_000_000, "completion_tokens": 0, "total_tokens": -1}))
    c = ask(server, store)
    assert c.text == "5" and not c.usage_reported
    assert (c.prompt_tokens, c.completion_tokens) == bound()
    s = settings(server.url)
    assert c.cost_usd == pytest.approx(s.call_cost(*bound())) and c.cost_usd > 0
    row = assert_ledger_row_is_sane(store, c)
    assert row.status == "ok_no_usage" and (row.prompt_tokens, row.completion_tokens) == bound()
    assert store.llm_spend(RUN_ID)[1:3] == bound()  # what the budget sums: the bound, not -1,000,000


@pytest.mark.parametrize(
    "usage",
    [
        None,  # absent
        {"prompt_tokens": "lots", "completion_tokens": "lots"},
        {"prompt_tokens": 11.5, "completion_tokens": 1.0},
        {"prompt_tokens": True, "completion_tokens": True},
        {"prompt_tokens": None, "completion_tokens": None},
        {"prompt_tokens": 11, "completion_tokens": -1},
        {"prompt_tokens": 11},
        {"prompt_tokens": 10**30, "completion_tokens": 1},  # an int no ledger column holds
        "lots",
        [11, 1],
    ],
    ids=[
        "absent",
        "string",
        "float",
        "bool",
        "null",
        "one-negative",
        "one-missing",
        "huge",
        "usage-string",
        "usage-list",
    ],
)
def test_missing_or_bad_usage_records_the_clients_bound(
    hostile: Callable[..., HostileServer], store: RunStore, usage: Any
) -> None:
    server = hostile(chat("5", usage=usage))
    c = ask(server, store)
    assert (c.text, c.retries, c.usage_reported) == ("5", 0, False)
    assert (c.prompt_tokens, c.completion_tokens) == bound()
    assert all(type(v) is int for v in (c.prompt_tokens, c.completion_tokens))
    row = assert_ledger_row_is_sane(store, c)
    assert row.status == "ok_no_usage" and (row.prompt_tokens, row.completion_tokens) == bound()
    # served from the ledger later, the call keeps its marking and counts
    cached = ask(server, store)
    assert cached.cached and not cached.usage_reported and (cached.prompt_tokens, cached.completion_tokens) == bound()
    assert server.requests == 1


def test_valid_usage_is_recorded_as_reported(hostile: Callable[..., HostileServer], store: RunStore) -> None:
    """Control: extra usage fields are fine; reported non-negative integers are what is charged."""
    server = hostile(
        chat(
            "5",
            usage={
                "prompt_tokens": 11,
                "completion_tokens": 0,
                "total_tokens": 11,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        )
    )
    c = ask(server, store)
    assert (c.prompt_tokens, c.completion_tokens, c.usage_reported) == (11, 0, True)
    assert assert_ledger_row_is_sane(store, c).status == "ok"


# ------------------------------------------------------------------------------------------ malformed bodies
MALFORMED_CHAT = {
    "choices-null-item": {"choices": [None]},
    "choices-empty": {"choices": []},
    "choices-missing": {"object": "chat.completion"},
    "choices-string": {"choices": "5"},
    "choice-string": {"choices": ["5"]},
    "message-missing": {"choices": [{"index": 0, "finish_reason": "stop"}]},
    "message-null": {"choices": [{"message": None}]},
    "message-string": {"choices": [{"message": "5"}]},
    "content-missing": {"choices": [{"message": {"role": "assistant"}}]},
    "content-null": {"choices": [{"message": {"role": "assistant", "content": None}}]},
    "content-int": {"choices": [{"message": {"content": 5}}]},
    "content-list": {"choices": [{"message": {"content": [{"type": "text", "text": "5"}]}}]},
    "body-list": [{"choices": []}],
    "body-string": "5",
}


@pytest.mark.parametrize("payload", list(MALFORMED_CHAT.values()), ids=list(MALFORMED_CHAT))
def test_malformed_body_is_retried_and_counted(
    hostile: Callable[..., HostileServer], store: RunStore, payload: Any
) -> None:
    server = hostile(body(payload), chat("5"))
    c = ask(server, store)
    assert (c.text, c.retries, c.usage_reported) == ("5", 1, True)
    assert server.requests == 2
    assert assert_ledger_row_is_sane(store, c).retries == 1


@pytest.mark.parametrize("payload", list(MALFORMED_CHAT.values()), ids=list(MALFORMED_CHAT))
def test_malformed_body_that_persists_is_one_clear_error(
    hostile: Callable[..., HostileServer], store: RunStore, payload: Any
) -> None:
    server = hostile(body(payload))
    with pytest.raises(BlackBoxError, match=r"failed after 3 attempts; last error: malformed response") as err:
        ask(server, store)
    assert server.url in str(err.value)
    assert server.requests == 3  # max_retries=2: bounded
    assert store.count_llm_calls() == 0  # nothing half-parsed reached the ledger


@pytest.mark.parametrize(
    "payload",
    [{"choices": [None]}, {"choices": [{"text": None}]}, {"choices": [{"index": 0}]}, {"choices": [{"text": 5}]}],
    ids=["choices-null-item", "text-null", "text-missing", "text-int"],
)
def test_malformed_completions_body_is_retried(hostile: Callable[..., HostileServer], payload: Any) -> None:
    good = body(
        {
            "choices": [{"index": 0, "text": " 5", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
    )
    server = hostile(body(payload), good)
    c = ask(server, api="completions")
    assert (c.text, c.retries, c.prompt_tokens, c.completion_tokens) == (" 5", 1, 3, 1)


def test_html_page_with_status_200_is_retried_then_a_clear_error(hostile: Callable[..., HostileServer]) -> None:
    page = raw(b"<html><body>Welcome to nginx</body></html>", content_type="text/html")
    assert ask(hostile(page, chat("5")), max_retries=2).retries == 1
    server = hostile(page)
    with pytest.raises(BlackBoxError, match=r"failed after 3 attempts; last error: malformed response"):
        ask(server)
    assert server.requests == 3


def test_truncated_json_body_is_retried(hostile: Callable[..., HostileServer]) -> None:
    assert ask(hostile(raw(b'{"choices": [{"message": {"content": "5'), chat("5"))).retries == 1


# -------------------------------------------------------------------------------------------- answer size
def test_a_10_mb_answer_is_capped_and_marked(hostile: Callable[..., HostileServer], store: RunStore) -> None:
    huge = "7" * 10_000_000
    server = hostile(chat(huge, usage={"prompt_tokens": 11, "completion_tokens": 16}))
    cap = BlackBoxSettings.at(server.url, model=MODEL).max_answer_chars  # the default
    assert 0 < cap < 100_000
    c = ask(server, store)
    assert c.text == huge[:cap] and c.truncated
    row = assert_ledger_row_is_sane(store, c)
    assert len(row.text) == cap and row.status == "ok_truncated"
    cached = ask(server, store)
    assert cached.cached and cached.truncated and cached.text == huge[:cap] and server.requests == 1
    # scored (and stored as the example's prediction) capped too, with a smaller cap and no usage this time
    server2 = hostile(chat(huge, usage=None))
    client = BlackBoxClient(settings(server2.url, max_answer_chars=100), cache=StoreResponseCache(store))
    [result] = evaluate_instructions(client, ["Add."], [Example("e1", "2 3", ("5",))], "exact_match")
    assert result.examples[0].prediction == "7" * 100 and result.mean_score == 0.0
    assert result.prompt_tokens > 0 and result.completion_tokens == MAX_TOKENS  # the bound, not 0
    row2 = store.get_llm_call(client.request_hash(render_zero_shot("Add.", "2 3")))
    assert row2.status == "ok_no_usage_truncated" and row2.text == "7" * 100
    assert server2.requests == 1


def test_short_answers_are_not_marked(hostile: Callable[..., HostileServer], store: RunStore) -> None:
    c = ask(hostile(chat("x" * 50)), store, max_answer_chars=50)
    assert c.text == "x" * 50 and not c.truncated
    assert assert_ledger_row_is_sane(store, c).status == "ok"


def test_a_body_beyond_the_byte_cap_is_not_read_whole(hostile: Callable[..., HostileServer]) -> None:
    """Reading stops at `max_response_bytes`: an endless body is a malformed response, retried, then an error."""
    server = hostile(chat("7" * 200_000))
    start = time.perf_counter()
    with pytest.raises(BlackBoxError, match=r"failed after 3 attempts; last error: malformed response.*100000 bytes"):
        ask(server, max_response_bytes=100_000)
    assert server.requests == 3 and time.perf_counter() - start < 5


def test_answer_and_byte_caps_are_validated() -> None:
    from instructzero.tasks.errors import ConfigError

    for bad in (dict(max_answer_chars=0), dict(max_response_bytes=0)):
        with pytest.raises(ConfigError):
            BlackBoxSettings.at("http://127.0.0.1:1/v1", model=MODEL, **bad)


# ----------------------------------------------------------------------------------------- status and time
def test_500_forever_ends_in_a_clear_error_after_bounded_retries(hostile: Callable[..., HostileServer]) -> None:
    server = hostile(body({"error": {"message": "upstream exploded"}}, status=500))
    with pytest.raises(BlackBoxError, match=r"failed after 3 attempts; last error: HTTP 500: upstream exploded"):
        ask(server)
    assert server.requests == 3


def test_a_hang_times_out_and_is_retried(hostile: Callable[..., HostileServer]) -> None:
    start = time.perf_counter()
    c = ask(hostile(hang, chat("5")), timeout_s=0.5)
    assert (c.text, c.retries) == ("5", 1)
    server = hostile(hang)
    with pytest.raises(BlackBoxError, match=r"failed after 2 attempts; last error: timed out after 0.5s"):
        ask(server, timeout_s=0.5, max_retries=1)
    assert server.requests == 2 and time.perf_counter() - start < 5


def test_a_body_trickled_byte_by_byte_still_times_out(hostile: Callable[..., HostileServer]) -> None:
    """The SDK's timeout is per read, so a server sending one byte every 0.1 s held an attempt open forever; the
    client's own deadline bounds the whole attempt."""
    start = time.perf_counter()
    c = ask(hostile(trickle, chat("5")), timeout_s=1.0)
    assert (c.text, c.retries) == ("5", 1)
    assert time.perf_counter() - start < 5
