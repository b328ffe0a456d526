"""Re-proposal: a batch whose soft prompts decode, where possible, to instructions never scored before.

`propose_distinct` drives step 3 of a proposer's call order (see proposer.py) for any strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.proposer import Known, Proposal, Proposer, propose_checked

__all__ = ["DistinctProposal", "ProposeFn", "propose_distinct", "proposing"]


@dataclass(frozen=True)
class DistinctProposal:
    """A batch whose soft prompts decode, where possible, to instructions never scored before.

    Attributes:
        proposal: the final batch (b slots; z and acquisition values of the soft prompts kept per slot).
        instructions: b instructions, the one each kept soft prompt decoded to.
        attempts: proposal rounds used (1 = no slot needed a re-proposal).
        rejected: soft prompts thrown away because they decoded to a known instruction (or to one already in
            the batch).
        unique_new: distinct instructions in the final batch that were not scored before.
    """

    proposal: Proposal
    instructions: list[str]
    attempts: int
    rejected: int
    unique_new: int


ProposeFn = Callable[[int, int, Known, np.ndarray, np.ndarray], Proposal]
"""(n, attempt, known, pending, tried) -> Proposal of n soft prompts: what `propose_distinct` calls."""


def proposing(proposer: Proposer, iteration: int) -> ProposeFn:
    """`proposer` at `iteration` as the `ProposeFn` of `propose_distinct` (the flow wraps its own in a task)."""

    def propose(n: int, attempt: int, known: Known, pending: np.ndarray, tried: np.ndarray) -> Proposal:
        return propose_checked(proposer, iteration, n, attempt=attempt, known=known, pending=pending, exclude=tried)

    return propose


def propose_distinct(
    propose: ProposeFn,
    generate: Callable[[np.ndarray], Sequence[str]],
    scored: Mapping[str, float],
    *,
    batch_size: int,
    max_attempts: int = 3,
) -> DistinctProposal:
    """Propose, decode, and re-propose the slots whose instruction is already known, up to `max_attempts` rounds.

    A slot is a duplicate when its instruction was scored before (`scored`) or already decoded from an earlier
    slot of this batch. Round k > 0 asks `propose` for as many soft prompts as there are duplicate slots, telling
    it which rejected soft prompts have a *known* score (duplicates of `scored` instructions: data for the GP,
    at no black-box cost), which are pending (the kept soft prompts, and rejected ones that repeat an instruction
    of this batch: its score will be known after this batch) and which were tried (to exclude). Slots still
    duplicate after the last round keep their first soft prompt (they cost nothing: the evaluation is cached).

    Args:
        propose: (n, attempt, known, pending, tried) -> Proposal of n soft prompts. `known`: (z, dev score)
            pairs; `pending`: (p x d) kept soft prompts and
            rejected in-batch repeats; `tried`: (t x d) every soft prompt proposed so far.
            attempt 0 is the ordinary proposal of the whole batch (n = batch_size, nothing known/pending).
        generate: (n x d) soft prompts -> n instructions (deterministic for a given z).
        scored: instruction text -> its dev score, for every instruction evaluated so far in the run.
        batch_size: b, the slots of the batch.
        max_attempts: proposal rounds at most (1 turns re-proposal off).

    Returns:
        The final batch with its instructions and counts.
    """
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
    first = propose(batch_size, 0, (), np.zeros((0, 0)), np.zeros((0, 0)))
    z = np.array(first.z, dtype=np.float64, copy=True)
    values = list(first.acquisition_values)
    instructions = list(generate(z))
    n = len(instructions)
    tried = z.copy()
    known: list[tuple[tuple[float, ...], float]] = []
    rejected = 0
    attempts = 1

    def duplicate_slots() -> list[int]:
        seen: set[str] = set()
        dups = []
        for i, text in enumerate(instructions):
            if text in scored or text in seen:
                dups.append(i)
            seen.add(text)
        return dups

    originals = {i: (z[i].copy(), values[i], instructions[i]) for i in range(n)}
    dups = duplicate_slots()
    repeats: list[np.ndarray] = []  # rejected soft prompts whose instruction another slot of the batch has
    while dups and attempts < max_attempts:
        for i in dups:
            if instructions[i] in scored:
                known.append((tuple(float(v) for v in z[i]), float(scored[instructions[i]])))
            else:
                repeats.append(z[i].copy())
        rejected += len(dups)
        keep = np.array([i for i in range(n) if i not in set(dups)], dtype=int)
        pending = np.concatenate([z[keep], *(r[None] for r in repeats)]) if repeats else z[keep]
        again = propose(len(dups), attempts, tuple(known), pending, tried)
        attempts += 1
        new_texts = list(generate(again.z))
        tried = np.concatenate([tried, again.z])
        for j, i in enumerate(dups):
            z[i], values[i], instructions[i] = again.z[j], again.acquisition_values[j], new_texts[j]
        dups = duplicate_slots()
    for i in dups:  # still duplicates: keep the first soft prompt (its evaluation is cached: no cost)
        z[i], values[i], instructions[i] = originals[i]
    unique_new = len({t for t in instructions if t not in scored})
    proposal = replace(first, z=z, acquisition_values=tuple(values))
    return DistinctProposal(proposal, instructions, attempts, rejected, unique_new)
