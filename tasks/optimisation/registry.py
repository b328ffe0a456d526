"""The search's choices by name: strategies (proposers), GP kernels, instruction similarities, acquisition
functions and acquisition optimisers. Each is a small registry, name -> constructor, instead of if/elif at every
use (as BoTorch's `acquisition/input_constructors.py` maps acquisition classes to their input constructors).

Entries are "module:attribute" references resolved on first use: `settings.py` builds the `Literal` of each
`BOSettings` field from these keys (its validation, the CLI's choices and the JSON schema of deployments) without
importing torch or botorch. Add a choice here, one line, next to its constructor's module; a name registered at
run time (a test) is usable through the registry (`make_proposer`) but not through `BOSettings`, whose choices
are fixed when settings.py is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from instructzero.tasks.errors import ConfigError

if TYPE_CHECKING:  # the constructors' types only: importing their modules is what the strings defer
    from torch import Tensor

    from instructzero.tasks.optimisation.acquisition import AcquisitionSpec, BatchProblem
    from instructzero.tasks.optimisation.proposer import ProposerFactory
    from instructzero.tasks.optimisation.surrogate import KernelSpec

T = TypeVar("T")

__all__ = ["Registry", "PROPOSERS", "KERNELS", "SIMILARITIES", "ACQUISITIONS", "OPTIMIZERS"]


class Registry(MutableMapping[str, T], Generic[T]):
    """Name -> constructor; a string entry "package.module:attribute" is imported when first looked up.

    `in`, iteration and `names()` never import anything."""

    def __init__(self, what: str, entries: Mapping[str, T | str]) -> None:
        self.what = what  # for messages: "strategy", "kernel", ...
        self._entries: dict[str, T | str] = dict(entries)

    def __getitem__(self, name: str) -> T:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry

    def __setitem__(self, name: str, entry: T | str) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def resolve(self, name: str) -> T:
        """The constructor registered as `name`; ConfigError naming the choices otherwise."""
        if name not in self._entries:
            raise ConfigError(f"{self.what} must be one of {', '.join(map(repr, self._entries))}, got {name!r}")
        return self[name]

    def literal(self) -> Any:
        """`Literal[<the names>]`, the annotation of the config field that picks one."""
        return Literal[self.names()]


_OPT = "instructzero.tasks.optimisation"

PROPOSERS: Registry[ProposerFactory] = Registry(
    "strategy",
    {
        "bo": f"{_OPT}.gp_bo:GpBoProposer",  # the GP and (Log)EI: InstructZero
        "uniform": f"{_OPT}.uniform:UniformProposer",  # random soft prompts, no GP: the no-BO baseline
    },
)
"""bo.strategy -> `ProposerFactory` ((ProposerContext, BOSettings) -> Proposer); see proposer.py."""

KERNELS: Registry[KernelSpec] = Registry(
    "kernel",
    {
        "coupled": f"{_OPT}.surrogate:COUPLED",  # the paper's instruction-coupled kernel
        "coupled+matern": f"{_OPT}.surrogate:COUPLED_PLUS_MATERN",  # + a share of its latent Matern (explores)
        "matern": f"{_OPT}.surrogate:MATERN",  # Matern-5/2 on z (ablation of the coupling)
    },
)
"""bo.kernel -> `surrogate.KernelSpec`."""

SIMILARITIES: Registry[Callable[[Tensor, Sequence[str]], Tensor]] = Registry(
    "similarity",
    {
        "scores": f"{_OPT}.similarity:by_scores",  # how alike instructions behave on dev
        "embedding": f"{_OPT}.similarity:by_embedding",  # how alike they read (MiniLM)
    },
)
"""bo.similarity -> (per-example dev scores (n x m), instruction texts) -> K_S (n x n)."""

ACQUISITIONS: Registry[AcquisitionSpec] = Registry(
    "acquisition",
    {"logei": f"{_OPT}.acquisition:LOG_EI", "ei": f"{_OPT}.acquisition:EI"},
)
"""bo.acquisition -> `acquisition.AcquisitionSpec` (its q-batch and analytic botorch classes)."""

OPTIMIZERS: Registry[Callable[[BatchProblem], Tensor]] = Registry(
    "optimizer",
    {"optimize_acqf": f"{_OPT}.acquisition:optimize_acqf_batch", "cmaes": f"{_OPT}.acquisition:cmaes_batch"},
)
"""bo.optimizer -> (BatchProblem) -> (b x d) candidates; see acquisition.propose_batch."""

if TYPE_CHECKING:
    StrategyName: TypeAlias = str
    KernelName: TypeAlias = str
    SimilarityName: TypeAlias = str
    AcquisitionName: TypeAlias = str
    OptimizerName: TypeAlias = str
else:  # the config fields' annotations: the registered names, fixed when this module is imported
    StrategyName = PROPOSERS.literal()
    KernelName = KERNELS.literal()
    SimilarityName = SIMILARITIES.literal()
    AcquisitionName = ACQUISITIONS.literal()
    OptimizerName = OPTIMIZERS.literal()
