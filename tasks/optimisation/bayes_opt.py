"""The two BO steps of an InstructZero iteration: GP-update over the run's history, and propose-prompt.

Both are pure functions of the stored history and the seed, so a resumed run re-derives exactly the state an
uninterrupted one had: nothing about the GP is persisted except the evaluated points themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from instructzero.storage.entities import CandidateRecord
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.acquisition import propose_batch, sobol_design

Phase = Literal["init", "bo", "uniform"]


@dataclass(frozen=True)
class SurrogateState:
    """A GP fitted to all evaluated soft prompts so far.

    Attributes:
        model: the fitted botorch model.
        X: (n x d) float64 evaluated soft prompts.
        best_f: best dev score observed (the EI incumbent).
    """

    model: object
    X: torch.Tensor
    best_f: float


@dataclass(frozen=True)
class Proposal:
    """Soft prompts to try next. `z`: (b x d) float64 numpy array in [-1, 1]^d."""

    iteration: int
    phase: Phase
    z: np.ndarray
    acquisition_values: tuple[float | None, ...]


def history_arrays(
    history: Sequence[CandidateRecord], dev_ids: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the history into tensors.

    Returns:
        X: (n x d) soft prompts, y: (n,) dev scores, S: (n x m) per-example dev scores in `dev_ids` order.
    """
    usable = [c for c in history if c.z is not None and c.dev_score is not None]
    if not usable:
        raise ConfigError("no evaluated soft prompts in the history: the GP has nothing to fit")
    X = torch.tensor([list(c.z) for c in usable], dtype=torch.float64)
    y = torch.tensor([c.dev_score for c in usable], dtype=torch.float64)
    S = torch.tensor([[c.dev_example_scores.get(i, 0.0) for i in dev_ids] for c in usable], dtype=torch.float64)
    return X, y, S


def gp_update(
    history: Sequence[CandidateRecord],
    dev_ids: Sequence[str],
    *,
    kernel: Literal["coupled", "coupled+matern", "matern"],
    similarity: Literal["scores", "embedding"],
    seed: int,
    latent_weight: float = 0.25,
) -> SurrogateState:
    """Fit the surrogate on every evaluated candidate (the paper's instruction-coupled kernel by default).

    `latent_weight` is the share of prior variance the "coupled+matern" kernel keeps far from the data.
    """
    from instructzero.tasks.optimisation.similarity import embedding_similarity, instruction_similarity
    from instructzero.tasks.optimisation.surrogate import COUPLED_KERNELS, fit_surrogate

    X, y, S = history_arrays(history, dev_ids)
    K_S = None
    if kernel in COUPLED_KERNELS:
        if similarity == "scores":
            K_S = instruction_similarity(S)
        else:
            texts = [c.instruction for c in history if c.z is not None and c.dev_score is not None]
            K_S = embedding_similarity(texts)
    model = fit_surrogate(X, y, kernel=kernel, similarity=K_S, seed=seed, latent_weight=latent_weight)
    return SurrogateState(model=model, X=X, best_f=float(y.max()))


def propose_prompts(
    state: SurrogateState | None,
    *,
    iteration: int,
    n_init: int,
    batch_size: int,
    dim: int,
    seed: int,
    acquisition: Literal["logei", "ei"],
    optimizer: Literal["optimize_acqf", "cmaes"],
    num_restarts: int = 5,
    raw_samples: int = 128,
    strategy: Literal["bo", "uniform"] = "bo",
    attempt: int = 0,
    known: Sequence[tuple[Sequence[float], float]] = (),
    pending: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> Proposal:
    """Iteration 0: a scrambled Sobol design over the searched box. Later: a q-batch maximising (Log)EI.

    With `strategy="uniform"` later iterations draw soft prompts uniformly from the same box instead (the
    no-BO baseline), seeded by (seed, iteration) so the baseline is reproducible and resumable too.

    Re-proposal (`propose_distinct`, attempt > 0) asks for `batch_size` replacement soft prompts: the initial
    design continues its Sobol sequence past the points already drawn, "uniform" draws from a stream seeded by
    (seed, iteration, attempt), and BO conditions the GP on `known` ((z, dev score) pairs of soft prompts that
    decoded to an already scored instruction: their score is known, so they are data) and chooses the batch
    jointly with the `pending` ((p x d) kept picks of this batch) away from `exclude` ((m x d) soft prompts
    already tried), with a seed that differs per attempt.
    """
    if iteration == 0 or (state is None and strategy == "bo"):
        # attempt k > 0 takes up to n_init points from block k of the Sobol sequence (disjoint from the design)
        drawn = n_init * attempt
        count = n_init if attempt == 0 else min(batch_size, n_init)
        z = sobol_design(drawn + count, dim, seed=seed).numpy()[drawn:]
        return Proposal(iteration=iteration, phase="init", z=z, acquisition_values=(None,) * len(z))
    if strategy == "uniform":
        rng = np.random.default_rng([seed, iteration] if attempt == 0 else [seed, iteration, attempt])
        z = rng.uniform(-1.0, 1.0, size=(batch_size, dim))
        return Proposal(iteration=iteration, phase="uniform", z=z, acquisition_values=(None,) * batch_size)
    model = state.model
    best_f = state.best_f
    taken = state.X
    if known:
        Xk = torch.tensor([list(z) for z, _ in known], dtype=torch.float64)
        yk = torch.tensor([[float(y)] for _, y in known], dtype=torch.float64)
        with torch.no_grad():
            model.posterior(Xk)  # fills the prediction caches that conditioning extends
        model = model.condition_on_observations(X=Xk, Y=yk)  # real observations: the fitted noise applies
        best_f = max(best_f, float(yk.max()))
        taken = torch.cat([taken, Xk])
    if exclude is not None and len(exclude):
        taken = torch.cat([taken, torch.as_tensor(np.asarray(exclude), dtype=torch.float64)])
    candidates, values = propose_batch(
        model,
        best_f=best_f,
        batch_size=batch_size,
        dim=dim,
        acquisition=acquisition,
        optimizer=optimizer,
        seed=seed * 100_003 + iteration + 7_919 * attempt,
        num_restarts=num_restarts,
        raw_samples=raw_samples,
        exclude=taken,
        pending=None if pending is None or not len(pending) else torch.as_tensor(pending, dtype=torch.float64),
    )
    return Proposal(
        iteration=iteration,
        phase="bo",
        z=candidates.detach().numpy().astype(np.float64),
        acquisition_values=tuple(float(v) for v in values),
    )


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


ProposeFn = Callable[[int, int, Sequence[tuple[Sequence[float], float]], np.ndarray, np.ndarray], Proposal]


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
