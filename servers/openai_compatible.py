"""A small OpenAI-compatible server: the offline black box for tests, benchmarks and laptops.

It implements what the `openai` SDK calls for zero-shot scoring (POST /v1/chat/completions, POST /v1/completions,
GET /v1/models) plus GET /health and /admin endpoints (stats, reset, fault config). Two backends:

* ``rule`` (alias ``echo``): a deterministic *test* backend, no model. It reads the zero-shot prompt
  ("Instruction: ...\\n\\nInput: ...\\nOutput:", with or without the template's answer-only line; a system message
  is read as the instruction of a user turn "Input: ...\\nOutput:") and answers by keyword rules on the instruction,
  so that scores depend on the instruction: "sum"/"add"/"plus"/"total" + numbers in the input -> their sum;
  "upper"/"capital" -> the input upper-cased; "reverse" -> the input's words reversed; otherwise it echoes the input.
  Tokens are whitespace words.
* ``transformers``: a causal LM (default the packaged Qwen2.5-Coder-0.5B-Instruct, the embedded black box), greedy,
honouring max_tokens and stop, with
  real token counts. One worker thread owns the model; requests are queued to it and optionally micro-batched
  (``max_batch`` > 1, left padding), so concurrent requests are safe.

Faults (latency, 429, 500, hangs, malformed bodies, empty choices; scripted 400, 401 and HTML pages) come from
`instructzero.servers.faults`.

Run: ``python -m instructzero.servers.openai_compatible --backend transformers --port 8011 --latency 0.2
--fault-rate-429 0.1``.
In Python: ``with serve(backend="rule") as base_url: ...`` or ``start_server_in_thread(...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from instructzero.servers.faults import FaultConfig, FaultInjector, ServerStats
from instructzero.tasks.prompts import ANSWER_ONLY

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions when the request gives none
MAX_TOKENS_CAP = 1024  # refuse absurd requests instead of generating for minutes


@dataclass(frozen=True)
class GenRequest:
    """One generation job, already reduced to a prompt string."""

    prompt: str
    max_tokens: int
    stop: tuple[str, ...]
    chat: bool  # True when `prompt` is the user message of a chat request (the backend adds its chat format)
    system: str = ""  # the system message of a chat request ("" when it sent none)


@dataclass(frozen=True)
class GenOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class Backend(Protocol):
    name: str
    model_name: str

    def generate(self, requests: Sequence[GenRequest]) -> list[GenOutput]: ...


def _apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop sequence (the stop itself is not returned, as in the OpenAI API)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# --------------------------------------------------------------------------------------------- rule backend
_PROMPT_RE = re.compile(
    r"Instruction:\s*(?P<instruction>.*?)\s*\n\s*\nInput:\s*(?P<input>.*?)\s*(?:\n\s*\n"
    + re.escape(ANSWER_ONLY)
    + r")?\s*\nOutput:",
    re.S,
)
_INT_RE = re.compile(r"-?\d+")


class RuleBackend:
    """Deterministic keyword-rule "model" for fast tests; see the module docstring for the rules."""

    name = "rule"

    def __init__(self, model_name: str = "rule-based") -> None:
        self.model_name = model_name

    @staticmethod
    def answer(prompt: str, system: str = "") -> str:
        """The rule-based answer for one prompt (public so tests can state expectations); a system message is the
        instruction of the user turn `prompt`."""
        if system:
            prompt = f"Instruction: {system}\n\n{prompt}"
        matches = list(_PROMPT_RE.finditer(prompt))
        if not matches:  # a user turn without its instruction line (the empty instruction in the system role)
            matches = list(_PROMPT_RE.finditer(f"Instruction:\n\n{prompt}"))
        if not matches:
            lines = [ln for ln in prompt.strip().splitlines() if ln.strip()]
            return lines[-1].strip() if lines else ""
        instruction = matches[-1]["instruction"].lower()
        text = matches[-1]["input"]
        numbers = [int(n) for n in _INT_RE.findall(text)]
        if any(w in instruction for w in ("sum", "add", "plus", "total")) and len(numbers) >= 2:
            return str(sum(numbers))
        if "upper" in instruction or "capital" in instruction:
            return text.upper()
        if "reverse" in instruction:
            return " ".join(reversed(text.split()))
        return text

    def generate(self, requests: Sequence[GenRequest]) -> list[GenOutput]:
        outputs = []
        for req in requests:
            words = self.answer(req.prompt, req.system).split()
            finish = "stop"
            if len(words) > req.max_tokens:
                words, finish = words[: req.max_tokens], "length"
            text, stopped = _apply_stop(" ".join(words), req.stop)
            n_prompt = len(req.prompt.split()) + len(req.system.split())
            outputs.append(GenOutput(text, n_prompt, len(text.split()), "stop" if stopped else finish))
        return outputs


# ------------------------------------------------------------------------------------- transformers backend
class TransformersBackend:
    """Greedy generation with a local causal LM; only ever called from the batcher's single worker thread."""

    name = "transformers"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        model_name: str | None = None,
        device: str = "cpu",
        torch_threads: int | None = None,
        dtype: str = "float32",
    ) -> None:
        """`torch_threads` caps intra-op threads of the generating thread only (OpenMP/MKL settings are
        per-thread): on a busy machine one thread is several times faster than oversubscribed spinning.
        `dtype`: "float32", or "bfloat16" (the weights and the arithmetic; answers may differ from float32's by
        round-off; measured 0.38x float32's requests/s in this server so far, see benchmarks/README.md)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from instructzero.tasks.generation.model_assets import DEFAULT_BLACK_BOX, resolve_model_path

        model = model or DEFAULT_BLACK_BOX
        path = resolve_model_path(str(model))
        self.model_name = model_name or str(model)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        self.dtype = dtype
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
        self.device = device
        self.torch_threads = torch_threads
        tok = self.tokenizer
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = {tok.eos_token_id}
        end_turn = tok.convert_tokens_to_ids("<end_of_turn>")
        self._gemma_turns = isinstance(end_turn, int) and end_turn != tok.unk_token_id
        if self._gemma_turns:
            eos.add(end_turn)
        self._eos_ids = sorted(i for i in eos if i is not None)

    def _encode(self, req: GenRequest) -> list[int]:
        tok = self.tokenizer
        if req.chat and tok.chat_template:
            system = [{"role": "system", "content": req.system}] if req.system else []
            text = tok.apply_chat_template(
                [*system, {"role": "user", "content": req.prompt}], add_generation_prompt=True, tokenize=False
            )
            return tok(text, add_special_tokens=False)["input_ids"]
        # no chat template: a system message opens the user turn, as Gemma's own template does
        prompt = f"{req.system}\n\n{req.prompt}" if req.system else req.prompt
        if req.chat and self._gemma_turns:  # the packaged GGUF ships no template; Gemma's turn format is known
            text = f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
            return tok(text)["input_ids"]
        return tok(prompt)["input_ids"]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenOutput]:
        torch = self._torch
        if self.torch_threads is not None and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)  # affects the calling (worker) thread only
        encoded = [self._encode(r) for r in requests]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):  # left padding: generation continues from the right edge
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        extra: dict[str, Any] = {}
        if any(r.stop for r in requests) or len({r.max_tokens for r in requests}) > 1:
            extra["stopping_criteria"] = [_RowLimits(self.tokenizer, width, requests)]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max(r.max_tokens for r in requests),
                do_sample=False,
                eos_token_id=self._eos_ids,
                pad_token_id=self._pad_id,
                **extra,
            )
        return [
            self._finish(req, len(ids), out[row, width:].tolist())
            for row, (req, ids) in enumerate(zip(requests, encoded))
        ]

    def _finish(self, req: GenRequest, n_prompt: int, generated: list[int]) -> GenOutput:
        finish = "length"
        for i, t in enumerate(generated):
            if t in self._eos_ids:
                generated, finish = generated[:i], "stop"
                break
        if len(generated) > req.max_tokens:
            generated, finish = generated[: req.max_tokens], "length"
        n_tokens = len(generated)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        cut, stopped = _apply_stop(text, req.stop)
        if stopped:  # count the tokens actually needed to reach the stop sequence
            finish = "stop"
            for k in range(1, len(generated) + 1):
                if _apply_stop(self.tokenizer.decode(generated[:k], skip_special_tokens=True), req.stop)[1]:
                    n_tokens = k
                    break
        return GenOutput(cut, n_prompt, n_tokens, finish)


class _RowLimits:
    """Finishes each row of a batch at its own max_tokens or once its continuation contains one of its stops.

    Used instead of `generate(stop_strings=...)`, whose vocabulary-wide precomputation takes seconds for Gemma's
    262k-token vocabulary on every call; decoding a few dozen new tokens per step is cheap in comparison.
    """

    def __init__(self, tokenizer: Any, prompt_width: int, requests: Sequence[GenRequest]) -> None:
        self.tokenizer, self.width, self.requests = tokenizer, prompt_width, requests

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        n_new = input_ids.shape[1] - self.width
        done = []
        for row, req in enumerate(self.requests):
            hit = n_new >= req.max_tokens
            if not hit and req.stop:
                text = self.tokenizer.decode(input_ids[row, self.width :], skip_special_tokens=True)
                hit = _apply_stop(text, req.stop)[1]
            done.append(hit)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _Batcher:
    """Feeds a backend from one worker thread; collects up to `max_batch` queued requests per call."""

    def __init__(self, backend: Backend, max_batch: int, wait_s: float) -> None:
        self._backend, self._max_batch, self._wait_s = backend, max(1, max_batch), wait_s
        self._queue: queue.Queue[tuple[GenRequest, asyncio.Future[GenOutput], asyncio.AbstractEventLoop] | None]
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="oai-server-generate", daemon=True)
        self._thread.start()

    async def submit(self, req: GenRequest) -> GenOutput:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[GenOutput] = loop.create_future()
        self._queue.put((req, fut, loop))
        return await fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            deadline = time.monotonic() + self._wait_s
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get(timeout=max(deadline - time.monotonic(), 1e-4))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            batch = [b for b in batch if not b[1].cancelled()]  # the client gave up while it waited: skip it
            if not batch:
                continue
            try:
                outs: list[GenOutput] | BaseException = self._backend.generate([b[0] for b in batch])
            except Exception as exc:  # delivered to every waiting request as a 500
                log.exception("generation failed")
                outs = exc
            for i, (_, fut, loop) in enumerate(batch):
                result = outs if isinstance(outs, BaseException) else outs[i]
                loop.call_soon_threadsafe(_resolve, fut, result)


async def _unless_disconnected(request: Request, job: Any, poll_s: float = 0.25) -> GenOutput | None:
    """Await a queued generation, but give it up (cancelling it, so the batcher skips it) once the client has
    disconnected: a client that timed out and retried must not leave its abandoned request in the queue, or a slow
    CPU server falls ever further behind."""
    task = asyncio.ensure_future(job)
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll_s)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            return None


def _resolve(fut: asyncio.Future[GenOutput], result: GenOutput | BaseException) -> None:
    if fut.done():  # the client went away and the handler was cancelled
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


# ------------------------------------------------------------------------------------------------------ app
def _error(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}}, status_code=status)


def _parse_stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise ValueError(f"stop must be a string or a list of strings, got {value!r}")


def _parse_max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_tokens", body.get("max_completion_tokens"))
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS_CAP:
        raise ValueError(f"max_tokens must be an integer in [1, {MAX_TOKENS_CAP}], got {value!r}")
    return value


def _chat_prompt(messages: Any) -> tuple[str, str, list[str]]:
    """(system text, the other messages' text, every message's role): each joined in order (the zero-shot prompt is
    one user message, or a system message with the instruction and a user turn with the input)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    system: list[str] = []
    parts: list[str] = []
    roles: list[str] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError(f"message content must be text, got {content!r}")
        role = m.get("role")
        roles.append(role if isinstance(role, str) else "?")
        (system if role in ("system", "developer") else parts).append(content)
    return "\n\n".join(system), "\n\n".join(parts), roles


class _CountRequests:
    """Pure ASGI middleware counting requests per path (BaseHTTPMiddleware would hide client disconnects)."""

    def __init__(self, app: Any, stats: ServerStats) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.stats.requests[scope["path"]] += 1
        await self.app(scope, receive, send)


def create_app(
    backend: Backend,
    *,
    faults: FaultConfig | None = None,
    api_key: str | None = None,
    strict_model: bool = False,
    omit_usage: bool = False,
    max_batch: int = 1,
    batch_wait_s: float = 0.005,
) -> FastAPI:
    """Build the app around an already loaded backend.

    Args:
        api_key: when set, requests must send ``Authorization: Bearer <api_key>`` (else 401), to test auth errors.
        strict_model: answer 404 ``model_not_found`` for a model name other than ``backend.model_name``.
        omit_usage: leave ``usage`` out of responses, like some local servers do.
        max_batch: largest micro-batch handed to the backend (1 = strictly one request at a time, deterministic).
    """
    app = FastAPI(title="instructzero OpenAI-compatible test server", docs_url=None, redoc_url=None)
    stats = ServerStats()
    injector = FaultInjector(faults or FaultConfig())
    batcher = _Batcher(backend, max_batch, batch_wait_s)
    app.state.stats, app.state.injector, app.state.batcher, app.state.backend = stats, injector, batcher, backend
    counter = iter(range(1, 1 << 62))

    app.add_middleware(_CountRequests, stats=stats)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "backend": backend.name, "model": backend.model_name}

    def unauthorized(request: Request) -> JSONResponse | None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        card = {"id": backend.model_name, "object": "model", "created": 0, "owned_by": "instructzero"}
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/admin/stats")
    async def admin_stats() -> dict[str, object]:
        return stats.as_dict()

    @app.post("/admin/reset")
    async def admin_reset() -> dict[str, object]:
        stats.requests.clear()
        stats.faults.clear()
        stats.roles.clear()
        stats.completions = stats.prompt_tokens = stats.completion_tokens = 0
        stats.max_in_flight = stats.in_flight
        return stats.as_dict()

    @app.post("/admin/faults")
    async def admin_faults(request: Request) -> Response:
        try:
            body = await request.json()
            body["script"] = tuple(body.get("script", ()))
            injector.configure(FaultConfig(**body))
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad fault config: {exc}", "invalid_request_error")
        return JSONResponse(dataclasses.asdict(injector.config))

    async def handle(request: Request, chat: bool) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("request body must be a JSON object")
            model = body.get("model")
            if strict_model and model != backend.model_name:
                return _error(404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found")
            max_tokens, stop = _parse_max_tokens(body), _parse_stop(body.get("stop"))
            system = ""
            if chat:
                system, user, roles = _chat_prompt(body.get("messages"))
                prompts = [user]
                stats.roles.update(roles)
            else:
                raw = body.get("prompt")
                listed = [raw] if isinstance(raw, str) else raw
                if not isinstance(listed, list) or not listed or not all(isinstance(p, str) for p in listed):
                    raise ValueError("prompt must be a string or a non-empty list of strings")
                prompts = listed
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return _error(400, str(exc), "invalid_request_error")

        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            config = injector.config
            if config.latency_s:
                await asyncio.sleep(config.latency_s)
            fault = injector.draw()
            if fault is not None:
                stats.faults[fault] += 1
            if fault == "429":
                response = _error(429, "Rate limit reached (injected).", "rate_limit_error", "rate_limit_exceeded")
                if config.retry_after_s is not None:
                    response.headers["Retry-After"] = f"{config.retry_after_s:g}"
                return response
            if fault == "500":
                return _error(500, "Internal server error (injected).", "server_error")
            if fault == "400":
                return _error(400, "Invalid request (injected).", "invalid_request_error")
            if fault == "401":
                return _error(401, "Incorrect API key provided (injected).", "invalid_request_error", "invalid_api_key")
            if fault == "html":
                return Response("<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>", media_type="text/html")
            if fault == "timeout":  # hang, but stop once the client has given up so shutdown stays quick
                end = time.monotonic() + config.hang_s
                while time.monotonic() < end:
                    if await request.is_disconnected():
                        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
                    await asyncio.sleep(0.05)
            if fault == "malformed":
                return Response('{"id": "broken", "choices": [{"text": ', media_type="application/json")
            answered = [
                await _unless_disconnected(request, batcher.submit(GenRequest(p, max_tokens, stop, chat, system)))
                for p in prompts
            ]
            outs = [o for o in answered if o is not None]
            if len(outs) < len(answered):
                return Response(status_code=499)  # the client went away (timed out): nobody reads this
        except Exception as exc:  # noqa: BLE001 - a backend failure is the server's fault: 500, as a hosted API would
            return _error(500, f"generation failed: {exc}", "server_error")
        finally:
            stats.in_flight -= 1

        stats.completions += 1
        n = next(counter)
        if chat:
            choices = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": outs[0].text},
                    "finish_reason": outs[0].finish_reason,
                    "logprobs": None,
                }
            ]
            payload: dict[str, Any] = {"id": f"chatcmpl-{n}", "object": "chat.completion"}
        else:
            choices = [
                {"index": i, "text": o.text, "finish_reason": o.finish_reason, "logprobs": None}
                for i, o in enumerate(outs)
            ]
            payload = {"id": f"cmpl-{n}", "object": "text_completion"}
        if fault == "empty":
            choices = []
        payload.update(created=int(time.time()), model=backend.model_name, choices=choices)
        p_tok, c_tok = sum(o.prompt_tokens for o in outs), sum(o.completion_tokens for o in outs)
        stats.prompt_tokens += p_tok
        stats.completion_tokens += c_tok
        if not omit_usage:
            payload["usage"] = {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}
        return JSONResponse(payload)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await handle(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await handle(request, chat=False)

    return app


def make_backend(
    backend: str | Backend, *, model: str | None = None, model_name: str | None = None, torch_threads: int | None = None
) -> Backend:
    """`"rule"`/`"echo"`, `"transformers"` or `"transformers-bf16"` (loads the model now, in float32 or
    bfloat16), or an already built backend."""
    if not isinstance(backend, str):
        return backend
    if backend in ("rule", "echo"):
        return RuleBackend(model_name or "rule-based")
    if backend in TRANSFORMERS_DTYPES:
        return TransformersBackend(
            model, model_name=model_name, torch_threads=torch_threads, dtype=TRANSFORMERS_DTYPES[backend]
        )
    raise ValueError(f"unknown backend {backend!r}; choose 'rule' (alias 'echo'), {', '.join(TRANSFORMERS_DTYPES)}")


TRANSFORMERS_DTYPES = {"transformers": "float32", "transformers-bf16": "bfloat16"}
"""The transformers backends by name: the number type each computes in."""


# ------------------------------------------------------------------------------------------ thread runner
@dataclass
class ServerHandle:
    """A server running in a background thread; `base_url` is what `openai`/`BlackBoxSettings` take."""

    base_url: str  # http://127.0.0.1:<port>/v1
    app: FastAPI
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        return fetch_stats(self.base_url)

    def reset_stats(self) -> None:
        reset_stats(self.base_url)

    def set_faults(self, faults: FaultConfig) -> None:
        set_faults(self.base_url, faults)

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, stop the generation worker."""
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self.app.state.batcher.close()


def _admin(base_url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    url = base_url.rstrip("/").removesuffix("/v1") + path
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def fetch_stats(base_url: str) -> dict[str, Any]:
    """GET /admin/stats of a running server (base_url with or without the trailing /v1)."""
    return _admin(base_url, "/admin/stats")


def reset_stats(base_url: str) -> None:
    _admin(base_url, "/admin/reset", {})


def set_faults(base_url: str, faults: FaultConfig) -> None:
    """Swap the fault config of a running server (its RNG and script restart)."""
    _admin(base_url, "/admin/faults", dataclasses.asdict(faults))


def start_server_in_thread(
    backend: str | Backend = "rule",
    *,
    model: str | None = None,
    model_name: str | None = None,
    torch_threads: int | None = None,
    faults: FaultConfig | None = None,
    api_key: str | None = None,
    strict_model: bool = False,
    omit_usage: bool = False,
    max_batch: int = 1,
    batch_wait_s: float = 0.005,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 60.0,
) -> ServerHandle:
    """Start uvicorn in a daemon thread (port 0 = a free port) and return once /health answers."""
    app = create_app(
        make_backend(backend, model=model, model_name=model_name, torch_threads=torch_threads),
        faults=faults,
        api_key=api_key,
        strict_model=strict_model,
        omit_usage=omit_usage,
        max_batch=max_batch,
        batch_wait_s=batch_wait_s,
    )
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
    # without it every keep-alive request from a client in this process waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", loop="asyncio", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="oai-server", daemon=True)
    thread.start()
    base_url = f"http://{host}:{sock.getsockname()[1]}/v1"
    handle = ServerHandle(base_url, app, server, thread)
    deadline = time.monotonic() + startup_timeout_s
    while True:
        try:
            with urllib.request.urlopen(handle.root_url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return handle
        except OSError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"test server at {base_url} did not become healthy")
        time.sleep(0.02)


@contextlib.contextmanager
def serve(backend: str | Backend = "rule", **kwargs: Any) -> Iterator[str]:
    """Run a server for the duration of a `with` block and yield its base_url (…/v1)."""
    handle = start_server_in_thread(backend, **kwargs)
    try:
        yield handle.base_url
    finally:
        handle.stop()


BACKEND_HELP = (
    "transformers (default): a packaged model, as the embedded black box of `instructzero run` answers; "
    "transformers-bf16: the same in bfloat16 (measured slower than float32 so far: benchmarks/README.md); "
    "rule: a deterministic test model that reads the zero-shot prompt's instruction: one mentioning "
    "sum/add/plus/total answers the sum of the input's integers, upper/capital the input upper-cased, reverse its "
    "words reversed, anything else (the empty instruction too) echoes the input; "
    "echo: the input, whatever the instruction"
)


def main(argv: Sequence[str] | None = None, prog: str = "python -m instructzero.servers.openai_compatible") -> None:
    from instructzero.tasks.generation.model_assets import DEFAULT_BLACK_BOX, PACKAGED_MODELS

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=["rule", "echo", "transformers", "transformers-bf16"],
        default="transformers",
        help=BACKEND_HELP,
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"transformers: a packaged model ({', '.join(PACKAGED_MODELS)}) or a folder "
        f"(default: {DEFAULT_BLACK_BOX}, the embedded black box of `instructzero run`)",
    )
    parser.add_argument("--served-model-name", default=None, help="the model id reported to clients")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every completion request")
    for kind in ("429", "500", "timeout", "malformed", "empty"):
        parser.add_argument(f"--fault-rate-{kind}", type=float, default=0.0, dest=f"rate_{kind}")
    parser.add_argument("--hang-seconds", type=float, default=10.0, help="how long a timeout fault hangs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument("--api-key-env", default=None, help="require the key held in this env var (not on argv)")
    parser.add_argument("--strict-model", action="store_true", help="404 for a model name other than the served one")
    parser.add_argument("--no-usage", action="store_true", help="omit usage from responses")
    parser.add_argument("--torch-threads", type=int, default=None, help="intra-op threads for generation")
    parser.add_argument("--max-batch", type=int, default=1, help="micro-batch size for the transformers backend")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    faults = FaultConfig(
        latency_s=args.latency,
        rate_429=args.rate_429,
        rate_500=args.rate_500,
        rate_timeout=args.rate_timeout,
        rate_malformed=args.rate_malformed,
        rate_empty=args.rate_empty,
        hang_s=args.hang_seconds,
        seed=args.seed,
    )
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env {args.api_key_env}: that environment variable is empty")
    app = create_app(
        make_backend(
            args.backend, model=args.model, model_name=args.served_model_name, torch_threads=args.torch_threads
        ),
        faults=faults,
        api_key=api_key,
        strict_model=args.strict_model,
        omit_usage=args.no_usage,
        max_batch=args.max_batch,
        batch_wait_s=args.batch_wait_ms / 1000,
    )
    served = app.state.backend.model_name if hasattr(app.state, "backend") else args.served_model_name
    api = "completions" if args.backend in ("rule", "echo") else "chat"
    print(
        f"serving {served!r} ({args.backend}) at http://{args.host}:{args.port}/v1; point a run at it with: "
        f"instructzero run --black-box-url http://{args.host}:{args.port}/v1 --black-box-model {served} "
        f"--black-box-api {api}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
