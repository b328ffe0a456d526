"""servers/openai_compatible.py and servers/faults.py: endpoints, rule backend, faults, the transformers backend."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from instructzero.servers.faults import FaultConfig, FaultInjector
from instructzero.servers.openai_compatible import GenRequest, RuleBackend, ServerHandle, main, serve
from instructzero.tasks.prompts import render_zero_shot


def post(url: str, payload: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=raw if raw is not None else json.dumps(payload).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ------------------------------------------------------------------------------------------------ rule backend
@pytest.mark.parametrize(
    ("instruction", "x", "expected"),
    [
        ("Add the two numbers.", "2 3", "5"),
        ("Output the total.", "1, 2, -4", "-1"),
        ("Make it UPPERcase.", "ab c", "AB C"),
        ("Reverse the words.", "a b c", "c b a"),
        ("Copy the input.", "a b c", "a b c"),
        ("Add the numbers.", "just one 1", "just one 1"),  # fewer than two numbers: echo
    ],
)
def test_rule_backend_rules(instruction: str, x: str, expected: str) -> None:
    assert RuleBackend.answer(render_zero_shot(instruction, x)) == expected


def test_rule_backend_honours_max_tokens_and_stop() -> None:
    backend = RuleBackend()
    p = render_zero_shot("Copy.", "one two three four")
    [cut, stopped] = backend.generate([GenRequest(p, 2, (), False), GenRequest(p, 10, (" three",), False)])
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("one two", "length", 2)
    assert (stopped.text, stopped.finish_reason) == ("one two", "stop")
    assert RuleBackend.answer("no template here\nlast line") == "last line"


# ---------------------------------------------------------------------------------------------- endpoints
def test_endpoints_through_the_sdk(echo_server_url: str) -> None:
    client = openai.OpenAI(base_url=echo_server_url, api_key="not-needed", max_retries=0)
    assert [m.id for m in client.models.list()] == ["rule-based"]
    chat = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": render_zero_shot("Upper.", "a b c d")}], max_tokens=2
    )
    assert chat.choices[0].message.content == "A B" and chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 2 and chat.usage.prompt_tokens > 0
    comp = client.completions.create(model="x", prompt=render_zero_shot("Add.", "1 2"), max_tokens=3, stop=["\n"])
    assert comp.choices[0].text == "3" and comp.model == "rule-based"
    with urllib.request.urlopen(echo_server_url.removesuffix("/v1") + "/health", timeout=5) as resp:
        assert json.loads(resp.read())["backend"] == "rule"


def test_completions_accepts_a_prompt_list_and_rejects_bad_requests(echo_server_url: str) -> None:
    payload = {"model": "m", "prompt": [render_zero_shot("Add.", "1 1"), "x"]}
    status, body = post(echo_server_url + "/completions", payload)
    assert status == 200 and [c["text"] for c in body["choices"]] == ["2", "x"]
    assert post(echo_server_url + "/completions", None, raw=b"{not json")[0] == 400
    status, body = post(echo_server_url + "/chat/completions", {"model": "m", "messages": [], "max_tokens": 3})
    assert status == 400 and "messages" in body["error"]["message"]
    assert post(echo_server_url + "/completions", {"model": "m", "prompt": "x", "max_tokens": 0})[0] == 400


def test_admin_stats_reset_and_fault_config(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server()
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    server.set_faults(FaultConfig(script=("500",)))
    with pytest.raises(openai.InternalServerError):
        client.completions.create(model="m", prompt="x", max_tokens=1)
    client.completions.create(model="m", prompt="x", max_tokens=1)
    stats = server.stats()
    assert stats["completion_requests"] == 2 and stats["completions"] == 1 and stats["faults"] == {"500": 1}
    server.reset_stats()
    stats = server.stats()
    assert stats["completion_requests"] == 0 and stats["faults"] == {} and stats["max_in_flight"] == 0
    status, body = post(server.root_url + "/admin/faults", {"rate_429": 2.0})
    assert status == 400 and "rates" in body["error"]["message"]


def test_concurrent_requests_overlap_with_latency(make_server: Callable[..., ServerHandle]) -> None:
    server = make_server(faults=FaultConfig(latency_s=0.1))

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            calls = [
                client.completions.create(model="m", prompt=render_zero_shot("Add.", f"{i} 1"), max_tokens=3)
                for i in range(5)
            ]
            return [r.choices[0].text for r in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == ["1", "2", "3", "4", "5"]
    assert server.stats()["max_in_flight"] == 5


def test_serve_context_manager_starts_and_stops() -> None:
    with serve("echo", model_name="ctx") as base_url:
        assert openai.OpenAI(base_url=base_url, api_key="k", max_retries=0).models.list().data[0].id == "ctx"
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=2).models.list()


# ------------------------------------------------------------------------------------------------- faults
def test_fault_injector_is_seeded_and_follows_rates() -> None:
    config = FaultConfig(rate_429=0.2, rate_500=0.1, rate_malformed=0.1, seed=7)
    a, b = FaultInjector(config), FaultInjector(config)
    seq_a, seq_b = [a.draw() for _ in range(2000)], [b.draw() for _ in range(2000)]
    assert seq_a == seq_b
    a.configure(config)  # reconfiguring restarts the RNG
    assert [a.draw() for _ in range(50)] == seq_a[:50]
    counts = Counter(seq_a)
    assert abs(counts["429"] / 2000 - 0.2) < 0.04 and abs(counts["500"] / 2000 - 0.1) < 0.03
    assert counts["timeout"] == 0 and counts["empty"] == 0


def test_fault_script_comes_first_and_config_is_validated() -> None:
    injector = FaultInjector(FaultConfig(script=("429", "ok", "timeout")))
    assert [injector.draw() for _ in range(4)] == ["429", None, "timeout", None]
    with pytest.raises(ValueError, match="rates"):
        FaultConfig(rate_429=0.6, rate_500=0.6)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultConfig(script=("418",))  # type: ignore[arg-type]


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--backend", "nope"])
    with pytest.raises(SystemExit):
        main(["--backend", "echo", "--api-key-env", "INSTRUCTZERO_SURELY_UNSET_VAR"])
    assert "environment variable is empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- transformers backend
@pytest.mark.slow
def test_transformers_backend_serves_real_text_and_usage(gemma_server_url: str) -> None:
    client = openai.OpenAI(base_url=gemma_server_url, api_key="not-needed", max_retries=0, timeout=120)
    comp = client.completions.create(model="gemma3-270m", prompt="The capital of France is", max_tokens=4)
    text = comp.choices[0].text
    assert isinstance(text, str) and text.strip()
    assert comp.usage is not None and comp.usage.prompt_tokens >= 5 and 1 <= comp.usage.completion_tokens <= 4
    chat = client.chat.completions.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "Count: one, two,"}], max_tokens=3, stop=["\n"]
    )
    content = chat.choices[0].message.content
    assert isinstance(content, str) and "\n" not in content
    assert chat.usage is not None and chat.usage.completion_tokens <= 3


@pytest.mark.slow
def test_transformers_backend_serves_concurrent_requests(gemma_server_url: str) -> None:
    async def both() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=gemma_server_url, api_key="k", max_retries=0, timeout=120) as client:
            calls = [client.completions.create(model="m", prompt=p, max_tokens=2) for p in ("1, 2, 3,", "a, b, c,")]
            return await asyncio.gather(*calls)

    first, second = asyncio.run(both())
    assert first.choices[0].text and second.choices[0].text
    assert stats_ok(gemma_server_url)


def stats_ok(base_url: str) -> bool:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/admin/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    return stats["completions"] >= 2 and stats["in_flight"] == 0


@pytest.mark.slow
def test_transformers_micro_batch_matches_single_requests(gemma_server: ServerHandle) -> None:
    """Left-padded batches give each row its own max_tokens and stop (run off the main thread: torch_threads)."""
    backend = gemma_server.app.state.backend
    add = GenRequest(render_zero_shot("Add the two numbers.", "3 4"), 6, ("\n",), False)
    short = GenRequest("The capital of France is", 2, (), False)
    with ThreadPoolExecutor(1) as pool:
        batched = pool.submit(backend.generate, [add, short]).result()
        single = [pool.submit(backend.generate, [r]).result()[0] for r in (add, short)]
    assert [o.text for o in batched] == [o.text for o in single]
    assert "\n" not in batched[0].text and batched[1].completion_tokens == 2 and batched[1].finish_reason == "length"


# --------------------------------------------------------------------------------- the packaged chat black boxes
@pytest.mark.slow
@pytest.mark.parametrize(
    ("server_fixture", "model"),
    [
        ("default_black_box_url", "qwen2.5-coder-0.5b-instruct"),  # the default: Qwen2.5-Coder-0.5B-Instruct, ChatML
        ("smollm2_server_url", "smollm2-135m-instruct"),  # the other packaged chat model, through the same code path
    ],
)
def test_packaged_chat_model_follows_an_instruction_over_http(
    server_fixture: str, model: str, request: pytest.FixtureRequest
) -> None:
    """A packaged black box: real HTTP, /v1/chat/completions, the model in its own chat template.

    For the default black box: the hand-written sentiment instruction gets the right label; the same input without
    an instruction does not get a label at all: the model is instruction-sensitive, which is what makes the default
    run meaningful. SmolLM2 (135M) goes through the same server and template but answers this one in a sentence
    with the project's template ("the sentiment of the sentence is positive."), so only the label's presence is
    asserted for it.
    """
    from instructzero.tasks.data.builtin_tasks import HUMAN_INSTRUCTIONS

    client = openai.OpenAI(
        base_url=request.getfixturevalue(server_fixture), api_key="not-needed", max_retries=0, timeout=120
    )

    def ask(instruction: str, text: str) -> Any:
        return client.chat.completions.create(
            model=model,
            max_tokens=16,
            stop=["\n"],
            temperature=0,
            messages=[{"role": "user", "content": render_zero_shot(instruction, text)}],
        )

    instruction = HUMAN_INSTRUCTIONS["sentiment"][0]
    answer = ask(instruction, "The movie was wonderful.").choices[0].message.content.strip().lower()
    assert answer == "positive" if model.startswith("qwen") else "positive" in answer
    bare = ask("", "The movie was wonderful.")
    assert "positive" not in bare.choices[0].message.content.lower()
    # The server applied the model's own chat template (system turn + user turn + assistant header), so the
    # prompt it counted is longer than the user message alone.
    from transformers import AutoTokenizer

    from instructzero.tasks.generation.model_assets import resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(model)))
    message = render_zero_shot("", "The movie was wonderful.")
    templated = tok.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
    templated = templated["input_ids"] if isinstance(templated, dict) or hasattr(templated, "keys") else templated
    assert bare.usage.prompt_tokens == len(templated) > len(tok(message)["input_ids"])
    if model.startswith("qwen"):  # ChatML: the server's prompt is the template's, turn markers and all
        text = tok.apply_chat_template(
            [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False
        )
        assert text.count("<|im_start|>") >= 2 and text.endswith("<|im_start|>assistant\n")


class _SlowBackend(RuleBackend):
    """The rule backend, 2 s per generate call, recording what it was asked to generate."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.seen: list[str] = []

    def generate(self, requests):
        import time

        time.sleep(2.0)  # long against the hasty client's 0.3 s timeout and the server's 0.25 s disconnect poll
        self.seen.extend(r.prompt for r in requests)
        return super().generate(requests)


def test_requests_abandoned_by_a_timed_out_client_are_not_generated(
    make_server: Callable[..., ServerHandle],
) -> None:
    """A client that times out while its request waits in the queue leaves nothing behind: the server skips it,
    so a slow CPU server does not fall further behind with every client retry."""
    import time

    backend = _SlowBackend()
    server = make_server(backend, max_batch=1)
    patient = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=30)
    hasty = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.3)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(patient.completions.create, model="m", prompt="first", max_tokens=2)
        time.sleep(0.2)  # "first" is being generated; "abandoned" queues behind it and times out
        with pytest.raises(openai.APITimeoutError):
            hasty.completions.create(model="m", prompt="abandoned", max_tokens=2)
        assert first.result().choices[0].text == "first"
    time.sleep(0.5)  # the batcher has reached (and skipped) the queued, cancelled request by now
    patient.completions.create(model="m", prompt="last", max_tokens=2)
    assert backend.seen == ["first", "last"]
