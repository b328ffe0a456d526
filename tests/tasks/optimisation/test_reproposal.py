"""Re-proposal of soft prompts that decode to already scored instructions (tasks/optimisation/reproposal.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.acquisition import sobol_design
from instructzero.tasks.optimisation.gp_bo import SurrogateState
from instructzero.tasks.optimisation.proposer import Proposal, ProposerContext, make_proposer
from instructzero.tasks.optimisation.reproposal import propose_distinct, proposing
from instructzero.tasks.optimisation.settings import BOSettings
from instructzero.tasks.optimisation.sobol import SobolDesign
from instructzero.tasks.optimisation.surrogate import fit_surrogate
from tests.plugins.gp import toy

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def quadrant(z: np.ndarray) -> list[str]:
    """A fake generator: the instruction only depends on the signs of z_0 and z_1 (4 instructions)."""
    return [f"q{int(row[0] > 0)}{int(row[1] > 0)}" for row in np.asarray(z)]


def point(a: float, b: float) -> list[float]:
    return [a, b, 0.0, 0.0]


class Scripted:
    """A proposal function that returns scripted batches and records what it was told."""

    def __init__(self, *batches: list[list[float]]) -> None:
        self.batches = list(batches)
        self.calls: list[tuple[int, int, tuple, np.ndarray, np.ndarray]] = []

    def __call__(self, n, attempt, known, pending, tried) -> Proposal:
        self.calls.append((n, attempt, tuple(known), np.array(pending), np.array(tried)))
        z = np.array(self.batches[min(attempt, len(self.batches) - 1)][:n], dtype=np.float64)
        return Proposal(iteration=1, phase="bo", z=z, acquisition_values=tuple(float(-attempt - i) for i in range(n)))


def test_duplicate_slots_are_proposed_again_with_known_scores_as_data() -> None:
    scored = {"q00": 0.1}
    propose = Scripted(
        [point(-0.5, -0.5), point(0.5, 0.5), point(0.6, 0.6)],  # q00 (scored), q11, q11 (repeat in batch)
        [point(-0.5, 0.5), point(0.5, -0.5)],  # q01, q10
    )
    out = propose_distinct(propose, quadrant, scored, batch_size=3)
    assert out.instructions == ["q01", "q11", "q10"]
    assert (out.attempts, out.rejected, out.unique_new) == (2, 2, 3)
    np.testing.assert_array_equal(out.proposal.z, [point(-0.5, 0.5), point(0.5, 0.5), point(0.5, -0.5)])
    assert out.proposal.acquisition_values == (-1.0, -1.0, -2.0)  # slot 1 kept its first-round value
    n, attempt, known, pending, tried = propose.calls[1]
    assert (n, attempt) == (2, 1)
    assert known == ((tuple(point(-0.5, -0.5)), 0.1),)  # only the scored duplicate is data; the repeat is not
    np.testing.assert_array_equal(pending, [point(0.5, 0.5), point(0.6, 0.6)])  # kept slot, then the repeat
    assert tried.shape == (3, 4)


def test_hopeless_slots_keep_their_first_soft_prompt_after_max_attempts() -> None:
    scored = {"q00": 0.1, "q01": 0.2, "q10": 0.3}
    propose = Scripted([point(-0.5, -0.5), point(0.5, 0.5)], [point(-0.4, -0.4)])  # always q00 again
    out = propose_distinct(propose, quadrant, scored, batch_size=2, max_attempts=3)
    assert out.instructions == ["q00", "q11"]
    np.testing.assert_array_equal(out.proposal.z[0], point(-0.5, -0.5))
    assert (out.attempts, out.rejected, out.unique_new) == (3, 2, 1)
    assert len(propose.calls[2][2]) == 2  # both rejected copies of q00 are known data by the last round


def test_one_attempt_turns_reproposal_off() -> None:
    propose = Scripted([point(-0.5, -0.5), point(-0.6, -0.6)])
    out = propose_distinct(propose, quadrant, {}, batch_size=2, max_attempts=1)
    assert out.instructions == ["q00", "q00"] and len(propose.calls) == 1
    assert (out.attempts, out.rejected, out.unique_new) == (1, 0, 1)
    with pytest.raises(ConfigError, match="max_attempts"):
        propose_distinct(propose, quadrant, {}, batch_size=2, max_attempts=0)


@pytest.mark.parametrize(("strategy", "unique_without", "unique_with"), [("bo", 0, 2), ("uniform", 2, 3)])
def test_real_proposals_find_more_new_instructions(strategy: str, unique_without: int, unique_with: int) -> None:
    """A coarse fake generator (z_0, z_1 rounded to halves: 25 instructions, 11 of them scored) makes the GP's
    batch of 3 land on scored instructions; re-proposal (known duplicates conditioning the GP) finds new ones."""
    d = 4
    X = sobol_design(12, d, seed=0)
    y = toy(X)
    grid = lambda z: [f"g{np.round(np.asarray(r[:2]) * 2).astype(int).tolist()}" for r in np.asarray(z)]  # noqa: E731
    scored = dict(zip(grid(X.numpy()), y.tolist()))
    settings = BOSettings(strategy=strategy, n_init=12, optimizer="cmaes", num_restarts=2, raw_samples=32)
    proposer = make_proposer(strategy, ProposerContext(dim=d, seed=0), settings)
    if strategy == "bo":  # the GP `observe` would fit on these 12 points, without the records around them
        proposer.state = SurrogateState(model=fit_surrogate(X, y, kernel="matern"), X=X, best_f=float(y.max()))
    propose = proposing(proposer, 1)
    without = propose_distinct(propose, grid, scored, batch_size=3, max_attempts=1)
    out = propose_distinct(propose, grid, scored, batch_size=3, max_attempts=6)
    assert (without.unique_new, out.unique_new) == (unique_without, unique_with)
    assert out.rejected > 0 and out.proposal.z.shape == (3, d) and np.abs(out.proposal.z).max() <= 1.0
    again = propose_distinct(propose, grid, scored, batch_size=3, max_attempts=6)
    np.testing.assert_array_equal(again.proposal.z, out.proposal.z)  # deterministic, hence resumable


def test_init_reproposal_continues_the_sobol_sequence() -> None:
    design = SobolDesign(ProposerContext(dim=3, seed=0), BOSettings(n_init=4))
    first = design.propose(0, 4)
    more = design.propose(0, 2, attempt=1)
    full = sobol_design(10, 3, seed=0).numpy()
    np.testing.assert_array_equal(first.z, full[:4])
    np.testing.assert_array_equal(more.z, full[4:6])
    assert torch.cdist(torch.as_tensor(first.z), torch.as_tensor(more.z)).min() > 0
