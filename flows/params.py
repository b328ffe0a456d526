"""The one configuration object of a run. It is stored as JSON with every run, so every result can be reproduced.

Defaults are chosen so that `instructzero run` finishes offline on a 2-core CPU in a few minutes and shows what
the method is for: the packaged instruction-tuned Qwen2.5-Coder-0.5B-Instruct writes instructions and, when no
black-box URL is given, the same packaged model is served on 127.0.0.1 as the OpenAI-compatible chat black box
(the paper's open-model generator + chat black box, at laptop size; README's model table lists the others). Environment
variables `INSTRUCTZERO_<FIELD>`
(nested with `__`, e.g. `INSTRUCTZERO_BLACK_BOX__BASE_URL`) override defaults; CLI flags override both.

This module is the one table of settings: each field carries its default, its help (`description`) and, where the
command line has one, its flag (`Annotated[..., Flag("--soft-tokens", int)]`); the env name follows from its
place. `instructzero.flows.cli` generates the `run`/`estimate`/`resume` flags and the flag -> field map from it
(`config_options`), so a new knob is one field here.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Collection
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, ValidationError, field_serializer, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from instructzero.tasks.config_flag import FROZEN, Flag, one_line_error
from instructzero.tasks.data.settings import DataSettings
from instructzero.tasks.data.splits import Splits
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.blackbox_settings import BlackBoxConfig
from instructzero.tasks.evaluation.budget import Limits
from instructzero.tasks.evaluation.metrics import Scorer
from instructzero.tasks.evaluation.normalization import AUTO, Normalization, parse_normalization
from instructzero.tasks.generation.model_assets import (
    default_cache_dir,
)
from instructzero.tasks.generation.settings import GeneratorSettings
from instructzero.tasks.optimisation.settings import BOSettings

if TYPE_CHECKING:  # imported where used (as are storage.session's helpers): `instructzero --help` builds its flags
    # from this module, and openai, SQLAlchemy and Alembic would more than double its start-up time
    from instructzero.tasks.evaluation.blackbox_settings import BlackBoxSettings
    from instructzero.tasks.prefect_tasks import GeneratorSpec

DEFAULT_STORE_URL = "sqlite:///instructzero.db"
"""A SQLite file in the working directory; any SQLAlchemy URL (PostgreSQL for teams) works."""

RECORDED_PACKAGES = (
    "instructzero",
    "torch",
    "transformers",
    "botorch",
    "gpytorch",
    "prefect",
    "openai",
    "sqlalchemy",
    "duckdb",
    "numpy",
    "sentence-transformers",
)


RESUME_IGNORED = ("name", "store_url", "budget")
"""Recorded settings a run resumed under its name may change: the limits bound the spending, not the result."""


class ScoringSettings(BaseModel):
    """How each answer is scored. The defaults are the scores every stored run has: the task's own metric, after
    the instruction-induction normalisation (which lower-cases: a task about case needs `no-lowercase`)."""

    model_config = FROZEN
    metric: Annotated[str, Flag("--metric", metavar="NAME")] = Field(
        "auto",
        description="how an answer is scored: auto (the task's own: metric_for_task, exact_match but for a few "
        "instruction-induction tasks), exact_match, contains, f1, exact_set, or python:module:function (your "
        "(prediction, target) -> score in [0, 1])",
    )
    normalize: Annotated[Normalization, Flag("--normalize", metavar="SPEC")] = Field(
        AUTO,
        description="what prediction and answer go through first: auto (default: lower-case, drop punctuation, "
        "first line, cut at the first '.'), none, or comma-separated steps on/off from auto, e.g. no-lowercase or "
        "none,whitespace (steps: fillers, first-line, first-period, lowercase, punctuation, whitespace); in a "
        "config also the switches of instructzero.tasks.evaluation.normalization.Normalization",
    )

    @field_validator("metric")
    @classmethod
    def _check_metric(cls, metric: str) -> str:
        """A custom metric is imported now, so a bad name is one line before anything runs."""
        if metric != "auto":
            Scorer(metric)
        return metric

    @field_validator("normalize", mode="before")
    @classmethod
    def _parse_spec(cls, value: Any) -> Any:
        return parse_normalization(value) if isinstance(value, str) else value

    def scorer(self, task_metric: str) -> Scorer:
        """The run's scorer; `task_metric` is the task's own metric (what `auto` means)."""
        return Scorer(task_metric if self.metric == "auto" else self.metric, self.normalize)


class ReportSettings(BaseModel):
    """What the found instruction is compared with on the same test examples, and how."""

    model_config = FROZEN
    baselines: Annotated[tuple[str, ...], Flag("--baseline-instruction", metavar="TEXT")] = Field(
        (), description="your current instruction, scored on the same test examples as the found one (repeatable)"
    )
    empty_baseline: Annotated[bool, Flag("--no-empty-baseline")] = Field(
        True, description="score the empty instruction (the zero-shot floor) as a baseline too"
    )
    n_bootstrap: int = Field(
        10_000, ge=100, le=1_000_000, description="bootstrap resamples for the intervals and paired tests"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="level of the bootstrap intervals")

    def labelled_baselines(self) -> dict[str, str]:
        """label -> instruction of the baselines, in report order (`baseline_labels`)."""
        from instructzero.tasks.evaluation.comparison import baseline_labels  # scipy: not at `--help` time

        return baseline_labels(self.baselines, empty=self.empty_baseline)


class BudgetSettings(BaseModel):
    """Spend limits (unset: unlimited). Not part of a run's identity: `resume --max-cost` raises them."""

    model_config = FROZEN
    max_cost_usd: Annotated[float | None, Flag("--max-cost", metavar="USD")] = Field(
        None, ge=0.0, description="most USD the run may spend on the black box"
    )
    max_total_tokens: Annotated[int | None, Flag("--max-total-tokens", metavar="N")] = Field(
        None, ge=1, description="most input + output tokens of paid calls"
    )
    max_calls: Annotated[int | None, Flag("--max-calls", metavar="N")] = Field(
        None, ge=1, description="most paid black-box calls"
    )
    stop_at_limit: Annotated[bool, Flag("--stop-at-limit")] = Field(
        False, description="start although the worst case crosses a limit; stop at an iteration boundary"
    )
    requests_per_minute: Annotated[int | None, Flag("--rpm", metavar="N")] = Field(
        None,
        ge=1,
        description="the black-box API's requests-per-minute limit, kept by the client (429 Retry-After is "
        "honoured too); it paces the requests, it does not change a result",
    )
    tokens_per_minute: Annotated[int | None, Flag("--tpm", metavar="N")] = Field(
        None,
        ge=1,
        description="the black-box API's tokens-per-minute limit (prompt estimate + max_tokens per request), kept "
        "by the client",
    )

    def limits(self) -> Limits:
        return Limits(self.max_cost_usd, self.max_total_tokens, self.max_calls)


class RunConfig(BaseSettings):
    """Everything that determines a run's result. Stored with the run; `resume` rebuilds the run from it."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="INSTRUCTZERO_", env_nested_delimiter="__", allow_inf_nan=False
    )
    name: Annotated[str | None, Flag("--name")] = Field(
        None, description="run name; re-running with the same name resumes an unfinished run"
    )
    seed: Annotated[int, Flag("--seed", int)] = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="seeds the splits, the projection, the Sobol design and the acquisition optimisation "
        "(numpy/torch: 32-bit)",
    )
    store_url: Annotated[str, Flag("--store")] = Field(
        DEFAULT_STORE_URL, description="SQLAlchemy URL of the store (a SQLite file; PostgreSQL for teams)"
    )
    cache_dir: Path = Field(default_factory=default_cache_dir, description="where converted models are kept")
    data: DataSettings = DataSettings()
    generator: GeneratorSettings = GeneratorSettings()
    black_box: BlackBoxConfig = BlackBoxConfig()
    scoring: ScoringSettings = ScoringSettings()
    bo: BOSettings = BOSettings()
    report: ReportSettings = ReportSettings()
    budget: BudgetSettings = BudgetSettings()

    @field_serializer("store_url", when_used="json")
    def _redact_store_url(self, url: str) -> str:
        """JSON (the store's `runs.config`, Prefect flow-run parameters, artifacts) never carries the password."""
        from instructzero.storage.session import display_url

        return display_url(url)

    def with_store_secret(self) -> RunConfig:
        """This config with a redacted store URL (one that travelled as JSON) restored from the environment."""
        resolved = resolve_store_url(self.store_url)
        return self if resolved == self.store_url else self.model_copy(update={"store_url": resolved})

    @model_validator(mode="after")
    def _check_coupled_kernel_init(self) -> RunConfig:
        """The coupled kernel standardises over the initial design: one point has no spread."""
        if self.bo.kernel != "matern" and self.bo.n_init < 2:
            raise ValueError("bo.n_init must be >= 2 for the coupled kernel")
        return self

    @property
    def total_candidates(self) -> int:
        """Instructions evaluated on dev over the whole run."""
        return self.bo.n_init + self.bo.iterations * self.bo.batch_size

    def recorded(self) -> dict[str, Any]:
        """JSON-safe dict stored with the run (no secrets: only the *name* of the API-key variable)."""
        return self.model_dump(mode="json", exclude={"cache_dir"})

    def generator_spec(self) -> GeneratorSpec:
        """The generator as the tasks load it: its settings plus the run's cache folder and seed (one hashable
        spec; it keys the per-process model cache), built here only, so every caller loads the model the run
        records."""
        from instructzero.tasks.prefect_tasks import GeneratorSpec

        return GeneratorSpec(self.generator, cache_dir=str(self.cache_dir), projection_seed=self.seed)

    def black_box_settings(self, base_url: str, splits: Splits) -> BlackBoxSettings:
        """The black box as the client uses it: the `black_box` section resolved for `base_url` (the answer cap
        from the run's splits) and paced by the budget's rate limits, which are not part of what it records."""
        rpm, tpm = self.budget.requests_per_minute, self.budget.tokens_per_minute
        return self.black_box.client_settings(
            base_url, answers=splits.answers(), requests_per_minute=rpm, tokens_per_minute=tpm
        )

    def reproducibility_key(self) -> dict[str, Any]:
        """The settings that must match for a run to be resumed under the same name (`same_settings` compares
        them, the data folder by where it is, not by how it is written)."""
        recorded = self.recorded()
        for key in RESUME_IGNORED:
            recorded.pop(key, None)
        return recorded


@dataclass(frozen=True)
class ConfigOption:
    """One flagged field of the config table: what the CLI needs to generate its flag and map it back."""

    path: tuple[str, ...]
    """Where the value goes in `RunConfig(**overrides)`: `("generator", "n_soft_tokens")`, `("seed",)`."""
    flag: Flag
    field: FieldInfo
    env: str
    """The INSTRUCTZERO_* variable that sets the same field (`INSTRUCTZERO_GENERATOR__N_SOFT_TOKENS`)."""
    section: str | None
    """The section model's name (`generator`), None for a top-level field."""


def config_options(
    config: type[BaseSettings] = RunConfig, sections: Collection[str] | None = None
) -> tuple[ConfigOption, ...]:
    """Every field of `config` that has a flag, in field order: top-level fields, then each section's. Why here:
    the flags are generated from the table, not kept beside it. `sections`: only those sections' fields (e.g.
    `("budget",)` for `resume`), no top-level ones; None: all."""
    prefix = str(config.model_config.get("env_prefix", ""))
    delimiter = str(config.model_config.get("env_nested_delimiter") or "__")
    options: list[ConfigOption] = []
    for name, field in config.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) else None
        if section is not None and issubclass(section, BaseModel):
            if sections is not None and name not in sections:
                continue
            for key, inner in section.model_fields.items():
                flag = _flag_of(inner)
                if flag is not None:
                    env = f"{prefix}{name}{delimiter}{key}".upper()
                    options.append(ConfigOption((name, key), flag, inner, env, name))
        elif sections is None and (flag := _flag_of(field)) is not None:
            options.append(ConfigOption((name,), flag, field, f"{prefix}{name}".upper(), None))
    return tuple(options)


def _flag_of(field: FieldInfo) -> Flag | None:
    """The field's `Flag` marker (pydantic keeps unknown `Annotated` metadata in `FieldInfo.metadata`)."""
    return next((m for m in field.metadata if isinstance(m, Flag)), None)


STORE_URL_ENV = "INSTRUCTZERO_STORE_URL"


def resolve_store_url(url: str) -> str:
    """`url` itself, or, when its password is redacted (`***`, as JSON of a `RunConfig` shows it), the full URL
    from $INSTRUCTZERO_STORE_URL naming the same store. Secrets travel by environment, never as parameters."""
    from sqlalchemy.engine import make_url

    from instructzero.storage.session import display_url, normalize_url

    try:
        redacted = make_url(normalize_url(url)).password == "***"
    except Exception:  # noqa: BLE001 - not a URL: the store reports it when opened
        return url
    if not redacted:
        return url
    env = os.environ.get(STORE_URL_ENV, "")
    if env and display_url(normalize_url(env)) == display_url(normalize_url(url)):
        return env
    raise ConfigError(
        f"store URL {url!r} has its password redacted: set {STORE_URL_ENV} to the full URL of "
        "this store in the environment of the process running the flow"
    )


def build_config(**overrides: Any) -> RunConfig:
    """Build a `RunConfig` from nested overrides, turning validation errors into one-line `ConfigError`s."""
    from pydantic_settings import SettingsError

    try:
        return _encodable(RunConfig(**overrides))
    except SettingsError as exc:  # e.g. INSTRUCTZERO_BO='{bad json'
        cause = exc.__cause__ or exc
        raise ConfigError(f"invalid setting from the environment: {str(exc).splitlines()[0]} ({cause})") from None
    except RecursionError:  # json.loads of an INSTRUCTZERO_* value nested thousands deep
        names = ", ".join(_too_deep_env()) or "a value"
        message = f"invalid setting from the environment: {names} is nested too deeply to read as JSON"
        raise ConfigError(message) from None
    except ValidationError as exc:
        raise one_line_error(exc) from None


def _too_deep_env() -> list[str]:
    """The INSTRUCTZERO_* variables whose JSON is nested too deeply for the parser (to name them in the error)."""
    import json

    found: list[str] = []
    for name, value in os.environ.items():
        if name.upper().startswith("INSTRUCTZERO_") and value.lstrip()[:1] in ("{", "["):
            try:
                json.loads(value)
            except RecursionError:
                found.append(name)
            except ValueError:
                pass
    return found


def _encodable(config: RunConfig) -> RunConfig:
    """Refuse text no request or store could carry (a lone surrogate, e.g. from JSON "\\ud800") before anything runs."""
    from instructzero.storage.lossless_text import unencodable

    def walk(value: Any, where: str) -> None:
        if isinstance(value, str) and (bad := unencodable(value)) is not None:
            raise ConfigError(f"invalid setting {where}: it holds {bad}")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(config.model_dump(mode="python"), "")
    return config


def config_from_record(recorded: dict[str, Any], **overrides: Any) -> RunConfig:
    """Rebuild the config a run was started with (for `resume`)."""
    return build_config(**{**with_recorded_defaults(recorded), **overrides})


def same_settings(stored: dict[str, Any], wanted: dict[str, Any], *, ignore: Collection[str] = ()) -> bool:
    """Whether a stored run's recorded config is the wanted one, ignoring the dotted keys in `ignore` (e.g.
    "name", "black_box.base_url") and how the data folder is named: `../shared/data` recorded from one working
    directory and `/work/shared/data` given from another are the same folder, so resuming from elsewhere is not
    refused as "different settings". The one comparison behind `run`'s same-name check and the benchmarks' reuse."""

    def key(config: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(config, default=str))
        for dotted in ignore:
            *parents, last = dotted.split(".")
            section = out
            for part in parents:
                section = section.get(part, {}) if isinstance(section, dict) else {}
            if isinstance(section, dict):
                section.pop(last, None)
        data = out.get("data")
        if isinstance(data, dict) and data.get("data_dir"):
            data["data_dir"] = str(Path(data["data_dir"]).expanduser().resolve())
        return out

    return key(stored) == key(wanted)


def with_recorded_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """`recorded` with each setting it lacks at its default: a run stored before a setting existed (e.g.
    `scoring`, `black_box.instruction_role`) ran with that default, whatever the environment says now."""
    filled = dict(recorded)
    for name, field in RunConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        section = recorded.get(name, {})
        if isinstance(default, BaseModel) and isinstance(section, dict):
            filled[name] = {**default.model_dump(mode="json"), **section}
    return filled


def package_versions() -> dict[str, str]:
    """Versions of everything that shapes a result, recorded with every run."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
