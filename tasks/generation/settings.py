"""The generator's settings: one frozen, typed object, a section of the run's config and the generator's own spec.

The run records it (`RunConfig.generator`), the CLI makes its flags from it, and the tasks load the model from it
(`GeneratorSpec` adds only what the run decides: the cache folder and the projection's seed), so a generator knob
is one field here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from instructzero.tasks.config_flag import FROZEN, Flag
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.generation.model_assets import DEFAULT_GENERATOR, PACKAGED_MODELS

__all__ = ["GeneratorSettings"]


class GeneratorSettings(BaseModel):
    """The open LLM that turns a soft prompt plus exemplars into an instruction."""

    model_config = FROZEN
    model: Annotated[str, Flag("--generator")] = Field(
        DEFAULT_GENERATOR,
        description=f"generator model: a packaged one ({', '.join(PACKAGED_MODELS)}), a local folder, or an HF id "
        "in the local cache",
    )
    n_soft_tokens: Annotated[int, Flag("--soft-tokens", int)] = Field(
        5, ge=1, le=64, description="soft-token embeddings prepended to the generator's prompt (after BOS)"
    )
    intrinsic_dim: Annotated[int, Flag("--intrinsic-dim", int)] = Field(
        10,
        ge=1,
        le=1024,
        description="dimension d of the searched soft prompt z in [-1, 1]^d, projected to the soft tokens by a "
        "fixed random matrix",
    )
    max_new_tokens: Annotated[int, Flag("--max-new-tokens", int)] = Field(
        32, ge=4, le=512, description="length cap of a generated instruction, in generator tokens"
    )
    batch_size: Annotated[int, Flag("--generator-batch", int)] = Field(
        8, ge=1, le=512, description="soft prompts generated in one padded batch"
    )
    device: Annotated[str | None, Flag("--device")] = Field(
        None,
        pattern=r"^(cpu|cuda(:\d+)?|mps)$",
        description="cpu, cuda, cuda:1 ... or mps; unset: CUDA when present, else CPU",
    )
    template: Annotated[str | None, Flag("--meta-prompt")] = Field(
        None,
        description="generator prompt: a preset (base models: instructzero, ape, task; chat models: chat, "
        "chat-minimal) or text with {demos}; unset: instructzero, or chat for a chat model",
    )
    soft_scale: Annotated[float, Flag("--soft-scale", float)] = Field(
        1.0, gt=0.0, le=16.0, description="strength of the soft tokens (1 = the spread of real embeddings)"
    )
    temperature: Annotated[float, Flag("--generator-temperature", float)] = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="0: greedy instructions; above 0, each soft prompt samples its instruction at this temperature "
        "with its own seed (the run's seed and z), so a z always writes the same one and a resume is exact",
    )
    top_p: Annotated[float, Flag("--generator-top-p", float)] = Field(
        1.0, gt=0.0, le=1.0, description="with a temperature: sample within the top-p nucleus (1: every token)"
    )

    @field_validator("template")
    @classmethod
    def _check_template(cls, template: str | None) -> str | None:
        """A bad meta prompt (`--meta-prompt ''`) is refused with the config, not after Prefect has started and the
        model has loaded (the generator module, torch with it, is imported only when a template is given)."""
        if template is not None:
            from instructzero.tasks.generation.generator import resolve_template

            try:
                resolve_template(template)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return template
