"""The run config's `data` section, beside the data it names: which task, where its files live, how it is split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from instructzero.tasks.config_flag import FROZEN, Flag


class DataSettings(BaseModel):
    """Which task, where its files live, and how it is split (seeded by `RunConfig.seed`)."""

    model_config = FROZEN
    task: Annotated[str, Flag("--task")] = Field(
        "sentiment",
        description="task name (see `instructzero tasks`: a built-in, instruction-induction or BIG-bench task) "
        "or a .jsonl/.csv file",
    )
    data_dir: Annotated[Path | None, Flag("--data-dir")] = Field(
        None, description="root holding instruction-induction/ and/or bigbench-ii/; unset: the built-in tasks only"
    )
    n_exemplars: Annotated[int, Flag("--n-exemplars", int)] = Field(
        5, ge=1, le=50, description="input/output pairs shown to the generator"
    )
    n_dev: Annotated[int, Flag("--n-dev", int)] = Field(
        10, ge=1, le=10_000, description="examples every candidate is scored on: the BO objective"
    )
    n_test: Annotated[int, Flag("--n-test", int)] = Field(
        30, ge=1, le=100_000, description="examples of the final paired report only"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, data_dir: Path | None) -> Path | None:
        """Recorded as an absolute path, so the run names its data wherever it is resumed or re-read from (a
        relative `../shared/data` means another folder from another working directory)."""
        return None if data_dir is None else Path(data_dir).expanduser().resolve()
