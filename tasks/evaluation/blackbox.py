"""Zero-shot scoring of instructions by a black-box LLM behind any OpenAI-compatible API.

Every candidate instruction costs (#dev examples) calls, so the client is built for many small requests: bounded
concurrency across all instructions at once, bounded retries on transient failures only (429, 5xx, timeouts,
connection errors, malformed bodies), de-duplication of identical prompts, and a response cache keyed by a hash of
everything that determines the answer. The API key is read from the environment at request time and never stored
on any object here, so it cannot leak into the store, logs or reprs.

The black box is not trusted: it may be a proxy, a misconfigured server or hostile. Every field of a response the
client reads is checked before anything reaches the ledger (the llm_calls table that spend limits sum): usage is kept
only when it is non-negative integers, otherwise the call is charged the client's own bound (see `usage_bound`); a
body that is not a well-formed completion is a transient failure (retried, counted, then one BlackBoxError); one
attempt may read at most `max_response_bytes` within `timeout_s` in all; and what is stored and scored of an answer
is capped at `max_answer_chars`, the cut recorded in the call's status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx2  # the HTTP library of the pinned openai SDK: its errors surface while we read a streamed body
import openai

from instructzero.storage.records import BlackBoxCall, Evaluation, Example, ExampleScore
from instructzero.storage.redaction import redact_secrets
from instructzero.tasks import interrupts
from instructzero.tasks.errors import BlackBoxError, ConfigError
from instructzero.tasks.evaluation.blackbox_settings import ApiKind, BlackBoxSettings
from instructzero.tasks.evaluation.budget import CHAT_OVERHEAD_TOKENS
from instructzero.tasks.evaluation.rate_limit import shared_limiter
from instructzero.tasks.prompts import (
    ZERO_SHOT_TEMPLATE,
    Prompt,
    SystemPrompt,
    ZeroShotFormat,
    prompt_messages,
    render_zero_shot,
    validate_template,
)

if TYPE_CHECKING:
    from instructzero.tasks.evaluation.metrics import MetricName, Scorer

log = logging.getLogger(__name__)


class _RedactedRecords(logging.Filter):
    """The HTTP client logs every request's URL ("HTTP Request: POST http://user:key@host/v1/..."): credentials
    written into the black-box URL are masked before any handler (Prefect's, the user's) sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


for _name in ("httpx", "httpx2", "openai"):
    logging.getLogger(_name).addFilter(_RedactedRecords())

NO_KEY = "not-needed"
"""Sent when the key env var is unset: local servers (vLLM, llama.cpp, Ollama, ours) ignore the key."""

_T = TypeVar("_T")


class ResponseCache(Protocol):
    """Persistent answers keyed by `request_hash` (implemented over the store by `StoreResponseCache`)."""

    def get(self, request_hash: str) -> BlackBoxCall | None: ...

    def put(self, call: BlackBoxCall) -> None: ...


def request_hash(model: str, prompt: Prompt, params: Mapping[str, Any]) -> str:
    """sha256 over canonical JSON of (model, prompt, params): the response-cache key.

    `params` should be `BlackBoxSettings.request_params()` (endpoint, api kind, temperature, max_tokens, stop): two
    servers answering to one model name are different black boxes, so they never share answers. The prompt is
    what is sent (the template filled in), so another template is another key; a `SystemPrompt` is keyed by its
    messages, so the same texts sent as one user message and as system + user never share an answer.
    """
    sent: dict[str, Any] = {"messages": prompt.messages()} if isinstance(prompt, SystemPrompt) else {"prompt": prompt}
    payload = {"model": model, **sent, "params": dict(params)}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Transient(Exception):
    """A failure worth retrying; the message is what the final BlackBoxError reports."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


MAX_TOKEN_COUNT = 2**31 - 1
"""Largest token count believed from a server: what the ledger's INTEGER columns hold on every supported database."""


@dataclass(frozen=True)
class _Answer:
    """One attempt's parsed answer: the text as stored and scored, and usage when the server reported a valid one."""

    text: str
    truncated: bool
    usage: tuple[int, int] | None  # (prompt_tokens, completion_tokens); None: absent or not believable


def _malformed(what: str) -> _Transient:
    return _Transient(f"malformed response: {what}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _token_count(value: object) -> int | None:
    """A reported token count if it is one: an int (not a bool), 0 <= n <= MAX_TOKEN_COUNT."""
    if type(value) is not int or not 0 <= value <= MAX_TOKEN_COUNT:
        return None
    return value


def parse_completion_body(payload: object, api: ApiKind, max_answer_chars: int) -> _Answer:
    """Check every field the client reads of a decoded chat/completions response body.

    Raises:
        _Transient: the body is not a completion with a text answer (no choices, a null choice, no message/text,
            non-string content): transient, like a truncated or non-JSON body.
    """
    if not isinstance(payload, dict):
        raise _malformed(f"body is a JSON {_kind(payload)}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list):
        raise _malformed(f"choices is {_kind(choices)}, not a list")
    if not choices:
        raise _malformed("no choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _malformed(f"choices[0] is {_kind(choice)}, not an object")
    if api == "chat":
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _malformed(f"choices[0].message is {_kind(message)}, not an object")
        text, field = message.get("content"), "choices[0].message.content"
    else:
        text, field = choice.get("text"), "choices[0].text"
    if not isinstance(text, str):
        raise _malformed(f"choice without text ({field} is {_kind(text)})")
    truncated = len(text) > max_answer_chars
    if truncated:
        text = text[:max_answer_chars]
    usage = payload.get("usage")
    counts: tuple[int, int] | None = None
    if isinstance(usage, dict):
        p_tok, c_tok = _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))
        if p_tok is not None and c_tok is not None:
            counts = (p_tok, c_tok)
    if counts is None and usage is not None:
        log.warning("black box reported unusable usage %.200r: charging the client's bound instead", usage)
    return _Answer(text, truncated, counts)


def run_sync(coro: Awaitable[_T]) -> _T:
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop.

    Prefect tasks run in worker threads that may or may not have a loop; with one running we cannot block it,
    so the coroutine gets a fresh loop in a short-lived worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="blackbox") as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


class BlackBoxClient:
    """Queries the black-box LLM through `openai.AsyncOpenAI` with our own bounded retries (SDK retries off)."""

    def __init__(self, settings: BlackBoxSettings, cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self._params = settings.request_params()
        self._rng = random.Random()  # backoff jitter only; never affects answers
        self._limiter = shared_limiter(
            settings.endpoint_id or settings.base_url,
            settings.model,
            settings.requests_per_minute,
            settings.tokens_per_minute,
        )

    def __repr__(self) -> str:
        s = self.settings
        return f"BlackBoxClient(base_url={s.shown_url!r}, model={s.model!r}, api={s.api!r})"

    def request_hash(self, prompt: Prompt) -> str:
        return request_hash(self.settings.model, prompt, self._params)

    def _api_key(self) -> str:
        return os.environ.get(self.settings.api_key_env) or NO_KEY

    # ------------------------------------------------------------------------------------------------ public
    async def complete_many(self, prompts: Sequence[Prompt]) -> list[BlackBoxCall]:
        """Answer every prompt; results are in input order, identical prompts are sent once.

        Cache hits come back with `cached=True` and cost no HTTP request; fresh answers are put into the cache as
        soon as each arrives, so a failure later in the batch keeps what was already paid for.

        Raises:
            BlackBoxError: a request was rejected (non-transient 4xx) or kept failing after `max_retries` retries.
        """
        hashes = [self.request_hash(p) for p in prompts]
        unique: dict[str, Prompt] = {}
        for h, p in zip(hashes, prompts):
            unique.setdefault(h, p)
        results: dict[str, BlackBoxCall] = {}
        todo: list[tuple[str, Prompt]] = []
        for h, p in unique.items():
            hit = self.cache.get(h) if self.cache is not None else None
            if hit is not None:
                results[h] = dataclasses.replace(hit, cached=True)
            else:
                todo.append((h, p))
        if todo:
            semaphore = asyncio.Semaphore(self.settings.concurrency)
            async with self._async_openai() as client:
                tasks = [asyncio.create_task(self._complete_one(client, semaphore, h, p)) for h, p in todo]
                try:
                    done = await _gather_unless_stopped(tasks)
                except BaseException:  # one hard failure (or a stop request): stop spending on the rest
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
            results.update((c.request_hash, c) for c in done)
        return [results[h] for h in hashes]

    def complete_many_sync(self, prompts: Sequence[Prompt]) -> list[BlackBoxCall]:
        """`complete_many` for sync callers, safe inside a running event loop (see `run_sync`)."""
        return run_sync(self.complete_many(prompts))

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Fail fast before a run: GET {base_url}/models (or, where that is missing, a 1-token completion).

        Raises:
            BlackBoxError: the endpoint is down, unhealthy (5xx) or rejects the key or the model.
        """
        url, shown = self.settings.base_url, self.settings.shown_url
        timeout = min(timeout_s, self.settings.timeout_s)
        with openai.OpenAI(base_url=url, api_key=self._api_key(), max_retries=0, timeout=timeout) as client:
            try:
                client.models.list()
                return
            except openai.APIConnectionError as exc:
                raise BlackBoxError(f"black-box endpoint {shown} unreachable: {_reason(exc)}") from exc
            except (AttributeError, TypeError, ValueError, openai.APIResponseValidationError) as exc:
                # e.g. a web server answering HTML with status 200: the SDK cannot parse it into a model list
                raise BlackBoxError(
                    f"black-box endpoint {shown} answered GET /models with a body that is not OpenAI-compatible JSON "
                    f"(is base_url the API's /v1 address?): {type(exc).__name__}"
                ) from exc
            except openai.APIStatusError as exc:
                if exc.status_code not in (404, 405):  # a server without /models: try a real request below
                    raise self._rejected(exc, what="GET /models") from exc
            try:
                self._request_sync(client, "ping")
            except openai.APIConnectionError as exc:
                raise BlackBoxError(f"black-box endpoint {shown} unreachable: {_reason(exc)}") from exc
            except openai.APIStatusError as exc:
                raise self._rejected(exc, what="a 1-token completion") from exc

    # ---------------------------------------------------------------------------------------------- internals
    def _async_openai(self) -> openai.AsyncOpenAI:
        """A fresh SDK client per call: its connection pool is bound to the event loop that uses it."""
        return openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self._api_key(),
            max_retries=0,
            timeout=self.settings.timeout_s,
        )

    def _request_kwargs(self, prompt: Prompt, max_tokens: int | None = None) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": s.model,
            "max_tokens": max_tokens or s.max_tokens,
            "temperature": s.temperature,
        }
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if s.api == "chat":
            kwargs["messages"] = prompt_messages(prompt)
        elif isinstance(prompt, SystemPrompt):
            raise ConfigError(
                "a system message needs the chat API: the completions API sends one text "
                "(use instruction role 'user' with --black-box-api completions)"
            )
        else:
            kwargs["prompt"] = prompt
        return kwargs

    def _request_sync(self, client: openai.OpenAI, prompt: str) -> None:
        kwargs = self._request_kwargs(prompt, max_tokens=1)
        if self.settings.api == "chat":
            client.chat.completions.create(**kwargs)
        else:
            client.completions.create(**kwargs)

    async def _request(self, client: openai.AsyncOpenAI, prompt: Prompt) -> _Answer:
        """One attempt, its body read and checked by us (not the SDK's lenient models); transient -> _Transient.

        The body is streamed so that reading stops at `max_response_bytes`, and the whole attempt (headers and
        body) is bounded by `timeout_s`: the SDK's timeout is per read, so a body trickled one byte at a time would
        otherwise hold the attempt open forever.
        """
        s = self.settings
        kwargs = self._request_kwargs(prompt)
        endpoint: Any = client.chat.completions if s.api == "chat" else client.completions
        try:
            async with asyncio.timeout(s.timeout_s):
                async with endpoint.with_streaming_response.create(**kwargs) as response:
                    body = await _read_capped(response, s.max_response_bytes)
        except (TimeoutError, openai.APITimeoutError, httpx2.TimeoutException) as exc:
            raise _Transient(f"timed out after {s.timeout_s}s (a slow endpoint: raise it with --timeout)") from exc
        except openai.APIConnectionError as exc:
            raise _Transient(f"connection error: {_reason(exc)}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                raise _Transient(f"HTTP {exc.status_code}: {_status_message(exc)}", _retry_after(exc)) from exc
            raise self._rejected(exc, what="the request") from exc
        except httpx2.HTTPError as exc:  # the connection broke (or the encoding was bad) while reading the body
            raise _Transient(f"connection error while reading the body: {type(exc).__name__}: {exc}") from exc
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise _malformed(
                f"body is not JSON ({type(exc).__name__}: {str(exc)[:100]}; starts {body[:60]!r})"
            ) from exc
        return parse_completion_body(payload, s.api, s.max_answer_chars)

    def rate_tokens(self, prompt: Prompt) -> int:
        """Tokens a request counts against a tokens-per-minute limit: the prompt estimated at 3 UTF-8 bytes per
        token (English runs about 4) plus max_tokens, as providers count a request before it is answered."""
        return -(-len(str(prompt).encode("utf-8")) // 3) + CHAT_OVERHEAD_TOKENS + self.settings.max_tokens

    def usage_bound(self, prompt: Prompt) -> tuple[int, int]:
        """What a call is charged when the server reports no usable usage: (UTF-8 bytes of the prompt + overhead,
        max_tokens), never below the true count for byte-level tokenizers (as `budget.byte_bound`)."""
        return len(str(prompt).encode("utf-8")) + CHAT_OVERHEAD_TOKENS, self.settings.max_tokens

    async def _complete_one(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, digest: str, prompt: Prompt
    ) -> BlackBoxCall:
        s = self.settings
        attempt = 0
        while True:
            try:
                async with semaphore:
                    if interrupts.stop_requested():  # a stop request: send nothing new (see _gather_unless_stopped)
                        raise interrupts.interrupted("before sending a black-box request")
                    if self._limiter is not None:  # every attempt is a request the provider counts
                        await self._limiter.acquire(self.rate_tokens(prompt))
                        if interrupts.stop_requested():  # the stop came while it waited for the rate limit
                            raise interrupts.interrupted("before sending a black-box request")
                    start = time.perf_counter()
                    answer = await self._request(client, prompt)
                    latency = time.perf_counter() - start
            except _Transient as exc:
                attempt += 1
                if attempt > s.max_retries:
                    raise BlackBoxError(
                        f"black-box endpoint {s.shown_url} (model {s.model!r}) failed after {attempt} attempts; "
                        f"last error: {exc}"
                    ) from exc
                delay = self._backoff(attempt, exc.retry_after_s)
                log.info(
                    "black-box %s: %s; retry %d/%d in %.2fs",
                    s.shown_url,
                    redact_secrets(str(exc)),
                    attempt,
                    s.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            usage_ok = answer.usage is not None
            # no usable usage reported: record and charge the bound (bytes + overhead in, max_tokens out), so that
            # the ledger the spend limits sum never holds a count the server made up (negative, fractional, absent)
            p_tok, c_tok = answer.usage if answer.usage is not None else self.usage_bound(prompt)
            call = BlackBoxCall(
                request_hash=digest,
                model=s.model,
                prompt=str(prompt),
                text=answer.text,
                prompt_tokens=p_tok,
                completion_tokens=c_tok,
                latency_s=latency,
                retries=attempt,
                status=BlackBoxCall.answer_status(usage_reported=usage_ok, truncated=answer.truncated),
                cost_usd=s.call_cost(p_tok, c_tok),
            )
            if self.cache is not None:
                self.cache.put(call)
            return call

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with jitter (half fixed, half random), honouring a server's Retry-After."""
        s = self.settings
        delay = min(s.retry_max_delay_s, s.retry_base_delay_s * 2 ** (attempt - 1))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        if retry_after_s is not None:  # the server knows when its window reopens: wait that long, not less
            delay = max(delay, min(retry_after_s, s.max_retry_after_s))
        return delay

    def _rejected(self, exc: openai.APIStatusError, what: str) -> BlackBoxError:
        s = self.settings
        hint = {
            401: f" (check the API key in ${s.api_key_env})",
            403: f" (check the API key in ${s.api_key_env} and its permissions)",
            404: " (is this model served there, and does base_url end in /v1?)",
        }.get(exc.status_code, "")
        return BlackBoxError(
            f"black-box endpoint {s.shown_url} rejected {what} for model {s.model!r}: "
            f"HTTP {exc.status_code}: {_status_message(exc)}{hint}",
            status=exc.status_code,
        )


async def _gather_unless_stopped(tasks: Sequence[asyncio.Task[BlackBoxCall]]) -> list[BlackBoxCall]:
    """`asyncio.gather(*tasks)`, watching for a stop request (`instructzero.tasks.interrupts`, Ctrl-C in the CLI).

    On a stop, requests not yet sent are not sent (`_complete_one` checks before each attempt) and those in flight
    get `STOP_GRACE_S` to land, each answer stored as it arrives; if every request has landed by then the batch is
    complete and returned (the caller stops at its next safe point), else RunInterrupted is raised and the caller
    cancels the rest."""
    pending: set[asyncio.Task[BlackBoxCall]] = set(tasks)
    while pending:
        if interrupts.stop_requested():
            await asyncio.wait(pending, timeout=interrupts.STOP_GRACE_S)
            if all(t.done() and not t.cancelled() and t.exception() is None for t in tasks):
                break
            raise interrupts.interrupted("while black-box requests were in flight")
        finished, pending = await asyncio.wait(pending, timeout=0.1, return_when=asyncio.FIRST_EXCEPTION)
        for t in finished:
            exc = None if t.cancelled() else t.exception()
            if exc is not None and not isinstance(exc, interrupts.RunInterrupted):
                raise exc
    return [t.result() for t in tasks]


async def _read_capped(response: Any, max_bytes: int) -> bytes:
    """The body of a streamed SDK response, refusing to read more than `max_bytes` of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _malformed(f"body longer than max_response_bytes={max_bytes} bytes (reading stopped)")
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{exc} ({type(cause).__name__}: {cause})" if cause is not None else str(exc)


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return str(exc.message)[:300]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    import math
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        value = exc.response.headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


# ------------------------------------------------------------------------------------------------- caches
class InMemoryResponseCache:
    """A dict-backed `ResponseCache` (tests, one-off scripts); the store-backed one persists across runs."""

    def __init__(self) -> None:
        self.data: dict[str, BlackBoxCall] = {}

    def get(self, request_hash: str) -> BlackBoxCall | None:
        return self.data.get(request_hash)

    def put(self, call: BlackBoxCall) -> None:
        self.data.setdefault(call.request_hash, dataclasses.replace(call, cached=False))


class StoreResponseCache:
    """`ResponseCache` over `RunStore.get_llm_call` / `put_llm_call` (the llm_calls table, the ledger).

    A call without usable server-reported usage is stored with status "ok_no_usage" so the bound charged in its
    token counts is not mistaken for a reported count; one whose answer was cut at `max_answer_chars` gets the
    suffix "_truncated" (`BlackBoxCall.answer_status`). Rows with any other status (e.g. recorded failures) are not
    cache hits.
    """

    def __init__(self, store: Any, *, run_id: str | None = None) -> None:
        self._store = store
        self._run_id = run_id  # recorded as the run that first paid for the call

    def get(self, request_hash: str) -> BlackBoxCall | None:
        call = self._store.get_llm_call(request_hash)
        if call is None or not call.is_answer:
            return None
        return dataclasses.replace(call, cached=True)

    def put(self, call: BlackBoxCall) -> None:
        self._store.put_llm_call(dataclasses.replace(call, run_id=self._run_id, cached=False))


# --------------------------------------------------------------------------------------------- evaluation
async def evaluate_instructions_async(
    client: BlackBoxClient,
    instructions: Sequence[str],
    examples: Sequence[Example],
    metric: MetricName | Scorer,
    template: str | ZeroShotFormat = ZERO_SHOT_TEMPLATE,
) -> list[Evaluation]:
    """Async `evaluate_instructions` (for callers already inside an event loop)."""
    from instructzero.tasks.evaluation.metrics import score_prediction

    if not isinstance(template, ZeroShotFormat):
        validate_template(template)
    if not examples:
        raise ConfigError("evaluate_instructions needs at least one example")
    unique = list(dict.fromkeys(instructions))
    if not unique:
        return []
    prompts = [render_zero_shot(instr, ex.input, template) for instr in unique for ex in examples]
    completions = await client.complete_many(prompts)  # one batch: concurrency spans all instructions
    m = len(examples)
    by_instruction: dict[str, Evaluation] = {}
    for k, instr in enumerate(unique):
        chunk = completions[k * m : (k + 1) * m]
        rows = tuple(
            ExampleScore(ex.id, c.text.strip(), float(score_prediction(c.text.strip(), ex.answers, metric)))
            for ex, c in zip(examples, chunk)
        )
        distinct = list({c.request_hash: c for c in chunk}.values())  # repeated inputs were one call
        fresh = [c for c in distinct if not c.cached]
        by_instruction[instr] = Evaluation(
            instruction=instr,
            model=client.settings.model,
            mean_score=sum(r.score for r in rows) / m,
            examples=rows,
            prompt_tokens=sum(c.prompt_tokens for c in fresh),
            completion_tokens=sum(c.completion_tokens for c in fresh),
            latency_s=sum(c.latency_s for c in fresh),
            n_calls=len(distinct),
            n_cached=len(distinct) - len(fresh),
        )
    return [by_instruction[i] for i in instructions]


def evaluate_instructions(
    client: BlackBoxClient,
    instructions: Sequence[str],
    examples: Sequence[Example],
    metric: MetricName | Scorer,
    template: str | ZeroShotFormat = ZERO_SHOT_TEMPLATE,
) -> list[Evaluation]:
    """Score each instruction zero-shot on `examples`, in input order; identical instructions are scored once.

    All (instruction x example) prompts go through one `complete_many`, so the concurrency bound spans
    instructions. Each prediction is scored with
    `instructzero.tasks.evaluation.metrics.score_prediction(prediction, answers, metric)`; `template` is a text with
    `{instruction}` and `{input}` or a `ZeroShotFormat` (which also says where the instruction goes).
    """
    return run_sync(evaluate_instructions_async(client, instructions, examples, metric, template))
