"""The black box's settings, in one place: what a run records (`BlackBoxConfig`, the run config's `black_box`
section, every field with its default, help and flag) and what the client uses (`BlackBoxSettings`: that config
resolved for one endpoint - its URL, answer cap, cache identity, prices - plus the client's own protections).

Light on purpose (pydantic only): `instructzero --help` builds its flags from these fields, and the client module
(`blackbox.py`) pulls in openai.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_serializer, field_validator, model_validator

from instructzero.storage.redaction import redact_secrets
from instructzero.tasks.config_flag import FROZEN, Flag, one_line_error
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.answer_length import answer_token_cap
from instructzero.tasks.evaluation.pricing import Prices, resolve_prices
from instructzero.tasks.generation.model_assets import DEFAULT_BLACK_BOX
from instructzero.tasks.prompts import SYSTEM_ROLE_TEMPLATE, ZERO_SHOT_TEMPLATE, ZeroShotFormat, validate_template

ApiKind = Literal["chat", "completions"]
EngineKind = Literal["auto", "llama.cpp", "transformers", "transformers-bf16", "echo"]
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)
"""What can serve a local black box: `echo` is the rule-based test backend (no model), `auto` is `AUTO_ENGINE`,
`transformers-bf16` our server computing in bfloat16 (its answers are cached under their own identity, never mixed
with float32's). Measured so far in our server: 0.38x float32's requests/s on this CPU, identical answers
(benchmarks/README.md, "Local black-box engines"): selectable for measurement, not faster yet."""

AUTO_ENGINE: Literal["transformers"] = "transformers"
"""What the engine "auto" means. Measured on the same 200 requests (benchmarks/README.md, "Local black-box engines"):
our transformers server answered 4.02 requests/s against llama.cpp's 3.07 here (it micro-batches concurrent
requests), needs no source build, and is what the tests check; llama.cpp stays one flag away."""


def local_endpoint_id(kind: str, model: str) -> str:
    """The cache identity of a local engine serving `model`: "local:<engine>:<model>". Its URL gets a new port at
    every start, so responses are cached under this instead (`BlackBoxConfig.endpoint_id`)."""
    return f"local:{kind}:{model}"


EMBEDDED_TIMEOUT_S = 600.0
"""Per-request timeout for the embedded local black box (at least this; a remote API keeps `timeout_s`)."""


class BlackBoxConfig(BaseModel):
    """The black-box LLM that scores instructions zero-shot. The API key itself is never stored: only its env var."""

    model_config = FROZEN
    base_url: Annotated[str | None, Flag("--black-box-url")] = Field(
        None,
        description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1; unset: the packaged chat model "
        "is served locally on 127.0.0.1 for the run",
    )
    endpoint_id: str | None = Field(
        None,
        description="who answers at base_url, for the response-cache key, when its URL changes between runs (a "
        "benchmark's own local server gets a new port each invocation); unset: the URL itself",
    )
    model: Annotated[str, Flag("--black-box-model")] = Field(
        DEFAULT_BLACK_BOX,
        description="model name sent to the black-box API; with no --black-box-url, the packaged model to serve",
    )
    engine: Annotated[Literal["auto", "transformers", "transformers-bf16", "llama.cpp"], Flag("--engine")] = Field(
        "auto",
        description="what serves the embedded black box when no --black-box-url is given (transformers-bf16: in "
        "bfloat16, cached apart from float32's; measured slower than float32 in our server so far)",
    )
    api_key_env: Annotated[str, Flag("--api-key-env")] = Field(
        "OPENAI_API_KEY",
        description="env var holding the API key (a dummy is used when unset); the key itself is never stored",
    )
    api: Annotated[ApiKind, Flag("--black-box-api")] = Field(
        "chat", description="chat for chat models (their own template), completions for base models"
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature of the black box")
    max_tokens: Annotated[int | None, Flag("--max-tokens", int)] = Field(
        None,
        ge=1,
        le=4096,
        description="answer cap per black-box call; unset: from the task's longest accepted answer, so none is "
        "cut; not a spend limit, see --max-total-tokens",
    )
    concurrency: Annotated[int, Flag("--concurrency", int)] = Field(
        8, ge=1, le=1024, description="black-box requests in flight at once"
    )
    max_retries: int = Field(
        4, ge=0, le=20, description="retries per request, on 429/5xx/timeouts/malformed bodies only"
    )
    timeout_s: Annotated[float, Flag("--timeout", float, metavar="S")] = Field(
        60.0,
        gt=0,
        description="per-request timeout in seconds; a local engine of this project (the embedded black box, a "
        f"benchmark's own server) waits at least {EMBEDDED_TIMEOUT_S:g}: on a busy CPU it is slow, not down",
    )
    stop: tuple[str, ...] = Field(
        ("\n",), description="stop sequences: answers are one line; base models would otherwise ramble on"
    )
    template: Annotated[str, Flag("--template", metavar="TEXT")] = Field(
        ZERO_SHOT_TEMPLATE,
        description="zero-shot prompt, the same for dev and test, with {instruction} and {input} (only {input} "
        "with --instruction-role system, whose default is then SYSTEM_ROLE_TEMPLATE); literal braces as {{ }}",
    )
    instruction_role: Annotated[Literal["user", "system"], Flag("--instruction-role")] = Field(
        "user",
        description="where the instruction goes: in the user message, with the template (default), or as the "
        "system message, the template being the user turn (chat API only)",
    )
    price_in_per_mtok: Annotated[float | None, Flag("--price-in", metavar="USD")] = Field(
        None,
        ge=0.0,
        description="black-box input price in USD per million tokens; unset: the shipped table "
        "(tasks/evaluation/pricing.py) for hosted models, 0 on local endpoints",
    )
    price_out_per_mtok: Annotated[float | None, Flag("--price-out", metavar="USD")] = Field(
        None, ge=0.0, description="black-box output price in USD per million tokens; unset: as --price-in"
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, url: str | None) -> str | None:
        """An unparsable URL (`http://[::1`, a bad port) is one config error naming it, not a ValueError from deep
        inside urllib once the task data is loaded. Shown redacted: a URL may carry a key."""
        if url is None:
            return None
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
        except ValueError as exc:
            raise ValueError(f"black-box URL {redact_secrets(url)!r} cannot be parsed: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"black-box URL {redact_secrets(url)!r} must start with http:// or https:// and name a host"
            )
        return url

    @field_validator("api_key_env")
    @classmethod
    def _check_api_key_env(cls, name: str) -> str:
        """The name of a variable, not the key: a key given here by mistake would be stored with the run (the
        error does not repeat the value: `one_line_error` hides `NOT_ECHOED` fields)."""
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", name):
            raise ValueError(
                "--api-key-env takes the NAME of the environment variable holding the key (capitals, digits, _; "
                "e.g. OPENAI_API_KEY), never the key itself"
            )
        return name

    @field_validator("model")
    @classmethod
    def _check_model(cls, model: str) -> str:
        if not model.strip():
            raise ValueError("black-box model name is empty")
        return model

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: tuple[str, ...]) -> tuple[str, ...]:
        if not all(stop):  # the type already made them strings in a tuple
            raise ValueError(f"stop sequences must be non-empty strings, got {stop!r}")
        return stop

    @model_validator(mode="before")
    @classmethod
    def _system_role_template(cls, data: Any) -> Any:
        """With the instruction in the system message and no template given, the user turn is the default
        template without its instruction line (recorded as such)."""
        if isinstance(data, dict) and data.get("instruction_role") == "system" and "template" not in data:
            return {**data, "template": SYSTEM_ROLE_TEMPLATE}
        return data

    @model_validator(mode="after")
    def _check_prompt(self) -> BlackBoxConfig:
        """A bad template or role fails here, in one line (ConfigError), before anything is sent."""
        if self.instruction_role == "system" and self.api == "completions":
            raise ConfigError(
                "instruction role 'system' needs the chat API: the completions API sends one text, "
                "with no system message; use --black-box-api chat, or put the instruction in the "
                "template with --instruction-role user"
            )
        validate_template(self.template, self.instruction_role)
        return self

    @property
    def zero_shot(self) -> ZeroShotFormat:
        """How each (instruction, input) pair becomes a request: the template and the instruction's role."""
        return ZeroShotFormat(self.template, self.instruction_role)

    @field_serializer("base_url", when_used="json")
    def _redact_base_url(self, url: str | None) -> str | None:
        """JSON (runs.config, Prefect parameters) never carries credentials written into the URL (`user:pass@`,
        `?api_key=`); pass the key through `api_key_env` instead, which is never stored."""
        return None if url is None else redact_secrets(url)

    def prices(self) -> Prices:
        """The prices this black box is charged at (ConfigError for a hosted model without a known price)."""
        return resolve_prices(self.model, self.base_url, self.price_in_per_mtok, self.price_out_per_mtok)

    def client_settings(
        self, base_url: str, *, answers: Sequence[Sequence[str]] = (), **overrides: Any
    ) -> BlackBoxSettings:
        """This config resolved for an endpoint (the embedded server's URL is only known at run time).

        `answers`: the accepted answers of the task's examples (`Splits.answers()`); with `max_tokens` unset the
        answer cap is derived from them (`answer_token_cap`), so no accepted answer can be cut. `overrides`:
        fields of this config (a changed copy, validated) or of the client's protections (`BlackBoxSettings`' own
        fields).
        """
        changed = {k: v for k, v in overrides.items() if k in type(self).model_fields}
        try:
            config = type(self).model_validate({**self.model_dump(), **changed}) if changed else self
        except ValidationError as exc:
            raise one_line_error(exc) from None
        runtime = {k: v for k, v in overrides.items() if k not in changed}
        prices = config.prices()
        embedded = config.base_url is None  # the embedded black box: a new port each run, one stable identity
        # served by this project's own local engine (embedded, or a benchmark's server named by its identity)
        ours = embedded or (config.endpoint_id or "").startswith("local:")
        resolved: dict[str, Any] = dict(
            base_url=base_url,
            max_tokens=config.max_tokens if config.max_tokens is not None else answer_token_cap(answers),
            endpoint_id=local_endpoint_id(resolve_engine(config.engine), config.model)
            if embedded
            else config.endpoint_id,
            # on a busy CPU a batch of long answers can take minutes: it is slow, not down
            timeout_s=max(config.timeout_s, EMBEDDED_TIMEOUT_S) if ours else config.timeout_s,
            price_in_per_mtok=prices.in_per_mtok,
            price_out_per_mtok=prices.out_per_mtok,
        )
        return BlackBoxSettings(config=config, **{**resolved, **runtime})


def resolve_engine(engine: EngineKind) -> Literal["llama.cpp", "transformers", "transformers-bf16", "echo"]:
    """The engine a name stands for ("auto": `AUTO_ENGINE`); ConfigError for an unknown one."""
    if engine not in ENGINE_KINDS:
        raise ConfigError(f"unknown black-box engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}")
    return AUTO_ENGINE if engine == "auto" else engine


@dataclass(frozen=True)
class BlackBoxSettings:
    """What the client sends and how it protects itself: the recorded `config` resolved for one endpoint, plus
    limits no run records. Built by `BlackBoxConfig.client_settings`. Holds the *name* of the key's env var, never
    the key."""

    config: BlackBoxConfig  # as recorded with the run
    base_url: str  # resolved: the embedded server's URL is only known at run time
    max_tokens: int = 32  # resolved answer cap (the config's, or derived from the task's answers)
    endpoint_id: str | None = None  # who answers, for the cache key; None: base_url. The embedded black box
    # (a new port every run) names its engine and model instead, so its answers stay cached across runs.
    timeout_s: float = 60.0  # resolved per-attempt timeout (the embedded black box waits longer)
    price_in_per_mtok: float = 0.0  # resolved USD per million tokens, recorded as each paid call's cost_usd
    price_out_per_mtok: float = 0.0
    retry_base_delay_s: float = 0.5  # first backoff delay; doubles per retry, with jitter
    retry_max_delay_s: float = 8.0  # cap of one backoff delay
    max_answer_chars: int = 16_384  # most characters of one answer that are stored and scored. A server
    # that ignores max_tokens (or a hostile one) could otherwise fill the ledger: one answer is stored twice (the
    # llm_calls row and the example's prediction), so eight 10 MB answers made a 160 MB database. 16k characters are
    # 4 per token of the largest answer cap the run derives (MAX_ANSWER_TOKENS = 4096), far above any accepted answer
    # (<= 4096 bytes); a longer answer is cut here and its call stored with status "ok_truncated".
    max_response_bytes: int = 16 * 1024 * 1024  # most bytes read of one response body; beyond them the
    # body is dropped as malformed (retried, then an error), so no answer can exhaust memory. Not in the cache key.
    requests_per_minute: int | None = None  # the API's rate limits, kept by the client (rate_limit.py)
    tokens_per_minute: int | None = None  # (prompt estimate + max_tokens per request); None: off. Not in the key.
    max_retry_after_s: float = 120.0  # longest Retry-After of a 429/503 that is waited out in full

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"black-box base_url must start with http:// or https://, got {self.base_url!r}")
        object.__setattr__(self, "base_url", url)
        checks = {
            "max_tokens": self.max_tokens >= 1,
            "timeout_s": self.timeout_s > 0,
            "retry_base_delay_s": self.retry_base_delay_s >= 0,
            "retry_max_delay_s": self.retry_max_delay_s >= 0,
            "max_answer_chars": self.max_answer_chars >= 1,
            "max_response_bytes": self.max_response_bytes >= 1,
            "requests_per_minute": self.requests_per_minute is None or self.requests_per_minute >= 1,
            "tokens_per_minute": self.tokens_per_minute is None or self.tokens_per_minute >= 1,
            "max_retry_after_s": self.max_retry_after_s >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"black-box setting {name}={getattr(self, name)!r} is out of range")

    @classmethod
    def at(cls, base_url: str, **fields: Any) -> BlackBoxSettings:
        """Settings for a known endpoint (benchmarks, probes, tests): `fields` of the config or of the client's
        protections, the rest their defaults."""
        try:
            config = BlackBoxConfig(base_url=base_url)
        except ValidationError as exc:
            raise one_line_error(exc) from None
        return config.client_settings(base_url, **fields)

    # what the config says, read where the client reads it
    @property
    def model(self) -> str:
        return self.config.model

    @property
    def api(self) -> ApiKind:
        return self.config.api

    @property
    def temperature(self) -> float:
        return self.config.temperature

    @property
    def stop(self) -> tuple[str, ...]:
        return self.config.stop

    @property
    def concurrency(self) -> int:
        return self.config.concurrency

    @property
    def max_retries(self) -> int:
        return self.config.max_retries

    @property
    def api_key_env(self) -> str:
        return self.config.api_key_env

    @property
    def shown_url(self) -> str:
        """`base_url` as messages and logs show it: credentials written into it (`user:key@`) masked."""
        return redact_secrets(self.base_url)

    def call_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of one paid call's reported usage."""
        return (prompt_tokens * self.price_in_per_mtok + completion_tokens * self.price_out_per_mtok) / 1_000_000

    def request_params(self) -> dict[str, Any]:
        """The generation parameters that change the answer, normalised so equal settings hash equally."""
        return {
            "endpoint": self.endpoint_id or self.base_url,
            "api": self.api,
            "temperature": float(self.temperature),
            "max_tokens": int(self.max_tokens),
            "stop": list(self.stop),
        }
