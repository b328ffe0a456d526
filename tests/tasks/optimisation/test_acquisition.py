"""Initial design and batch proposals (tasks/optimisation/acquisition.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from botorch.models import SingleTaskGP

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.acquisition import cmaes_maximize, propose_batch, sobol_design
from instructzero.tasks.optimisation.similarity import instruction_similarity
from instructzero.tasks.optimisation.surrogate import fit_surrogate
from tests.plugins.gp import toy

pytestmark = pytest.mark.usefixtures("single_torch_thread")

D = 4
N = 16
FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 64, "optimizer": "optimize_acqf"}


@pytest.fixture(scope="module")
def X() -> torch.Tensor:
    return sobol_design(N, D, seed=0)


@pytest.fixture(scope="module")
def models(X) -> dict[str, SingleTaskGP]:
    y = toy(X)
    scores = (y.unsqueeze(-1) > torch.linspace(-3.0, -0.1, 10, dtype=torch.float64)).to(torch.float64)
    return {
        "matern": fit_surrogate(X, y, kernel="matern"),
        "coupled": fit_surrogate(X, y, kernel="coupled", similarity=instruction_similarity(scores)),
        "coupled+matern": fit_surrogate(X, y, kernel="coupled+matern", similarity=instruction_similarity(scores)),
    }


def _best(X: torch.Tensor) -> float:
    return float(toy(X).max())


def _assert_valid(cands: torch.Tensor, values: torch.Tensor, b: int, exclude: torch.Tensor | None = None) -> None:
    assert cands.shape == (b, D) and cands.dtype == torch.float64
    assert values.shape == (b,) and torch.isfinite(values).all()
    assert cands.min() >= -1 and cands.max() <= 1
    if b > 1:
        dist = torch.cdist(cands, cands) + torch.eye(b, dtype=torch.float64)
        assert dist.min() >= 1e-4
    if exclude is not None:
        assert torch.cdist(cands, exclude).min() >= 1e-4


def test_sobol_design_in_box_and_deterministic():
    a = sobol_design(32, 5, seed=1)
    assert a.shape == (32, 5) and a.dtype == torch.float64
    assert a.min() >= -1 and a.max() <= 1
    assert a.min() < -0.8 and a.max() > 0.8  # covers the box, not [0, 1]
    torch.testing.assert_close(a, sobol_design(32, 5, seed=1), rtol=0, atol=0)
    assert not torch.allclose(a, sobol_design(32, 5, seed=2))
    with pytest.raises(ConfigError, match="got 0"):
        sobol_design(0, 5, seed=0)
    with pytest.raises(ConfigError, match="got 0"):
        sobol_design(4, 0, seed=0)


@pytest.mark.parametrize(
    ("kernel", "acquisition", "b"),
    [("matern", "logei", 3), ("coupled", "logei", 3), ("matern", "ei", 2), ("coupled", "ei", 2)],
)
def test_optimize_acqf_batch_is_valid_and_deterministic(models, X, kernel, acquisition, b):
    model = models[kernel]
    kwargs = dict(best_f=_best(X), batch_size=b, dim=D, acquisition=acquisition, exclude=X, **FAST)
    rng_before = torch.random.get_rng_state()
    cands, values = propose_batch(model, seed=0, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # caller's RNG untouched
    _assert_valid(cands, values, b, exclude=X)
    again, again_values = propose_batch(model, seed=0, **kwargs)
    torch.testing.assert_close(cands, again, rtol=0, atol=0)
    torch.testing.assert_close(values, again_values, rtol=0, atol=0)
    other, _ = propose_batch(model, seed=1, **kwargs)
    assert not torch.allclose(cands, other)


def test_logei_values_are_log_of_ei(models, X):
    kwargs = dict(best_f=_best(X), batch_size=2, dim=D, seed=0, **FAST)
    cands, log_values = propose_batch(models["matern"], acquisition="logei", **kwargs)
    from instructzero.tasks.optimisation.acquisition import _analytic_values

    ei = _analytic_values(models["matern"], cands, _best(X), "ei")
    torch.testing.assert_close(log_values.exp(), ei, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("kernel", ["matern", "coupled"])
def test_cmaes_batch_is_valid_and_deterministic(models, X, kernel):
    kwargs = dict(
        best_f=_best(X),
        batch_size=2,
        dim=D,
        optimizer="cmaes",
        exclude=X,
        num_restarts=2,
        raw_samples=32,
        cmaes_maxiter=15,
    )
    cands, values = propose_batch(models[kernel], seed=0, **kwargs)
    _assert_valid(cands, values, 2, exclude=X)
    again, _ = propose_batch(models[kernel], seed=0, **kwargs)
    torch.testing.assert_close(cands, again, rtol=0, atol=0)
    other, _ = propose_batch(models[kernel], seed=1, **kwargs)
    assert not torch.allclose(cands, other)


def test_exclude_replaces_already_evaluated_points(models, X):
    kwargs = dict(best_f=_best(X), batch_size=2, dim=D, seed=0, **FAST)
    first, _ = propose_batch(models["matern"], **kwargs)
    taken = torch.cat([X, first])
    second, values = propose_batch(models["matern"], exclude=taken, **kwargs)
    _assert_valid(second, values, 2, exclude=taken)


def test_bad_arguments(models, X):
    model = models["matern"]
    base = dict(best_f=0.0, batch_size=2, dim=D, seed=0)
    with pytest.raises(ConfigError, match="dim=5"):
        propose_batch(model, optimizer="optimize_acqf", **{**base, "dim": 5})
    with pytest.raises(ConfigError, match="'ucb'"):
        propose_batch(model, acquisition="ucb", optimizer="optimize_acqf", **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'adam'"):
        propose_batch(model, optimizer="adam", **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got 0"):
        propose_batch(model, optimizer="optimize_acqf", **{**base, "batch_size": 0})
    with pytest.raises(ConfigError, match=r"\(16, 3\)"):
        propose_batch(model, exclude=X[:, :3], optimizer="optimize_acqf", **base)


def test_cmaes_maximize_finds_box_optimum():
    centre = np.array([0.3, -0.2, 0.5, 0.1, 0.9, -0.6])
    f = lambda x: -((x - centre) ** 2).sum(-1)  # noqa: E731
    x, v = cmaes_maximize(f, np.zeros((2, 6)), sigma0=0.3, lower=-1, upper=1, rng=np.random.default_rng(0))
    np.testing.assert_allclose(x, centre, atol=1e-3)
    corner = lambda x: x.sum(-1)  # noqa: E731  optimum at the upper corner
    x, v = cmaes_maximize(corner, np.zeros(3), sigma0=0.3, lower=-1, upper=1, rng=np.random.default_rng(0))
    assert x.min() >= -1 and x.max() <= 1 and v > 2.99


@pytest.mark.parametrize("kernel", ["matern", "coupled", "coupled+matern"])
def test_every_cmaes_pick_is_an_acquisition_optimum(models, X, kernel):
    """Kriging believer + CMA-ES: each of 4 picks has analytic LogEI close to the best single pick.

    Sequential `optimize_acqf` on qLogEI leaves picks 2-4 where the joint acquisition's gradient vanished: on d=10
    toy fits (benchmarks/README.md) their LogEI was -5 to -11000, against -0.5 to +0.6 for the first pick.
    """
    kwargs = dict(best_f=_best(X), dim=D, exclude=X, seed=0, num_restarts=3, raw_samples=64, cmaes_maxiter=30)
    cands, values = propose_batch(models[kernel], batch_size=4, optimizer="cmaes", **kwargs)
    _assert_valid(cands, values, 4, exclude=X)
    _, single = propose_batch(models[kernel], batch_size=1, optimizer="cmaes", **kwargs)
    assert float(values.min()) >= float(single[0]) - 1.0
    assert float(values[0]) == pytest.approx(float(single[0]), abs=1e-9)  # pick 1 is the single best pick


def test_a_failed_kriging_believer_still_fills_the_batch(models, X, monkeypatch):
    """When conditioning on a pick's fantasy fails (a NaN Schur complement, seen at n = 1000 with the coupled
    kernel, which crashed the proposal), the rest of the batch comes from the acquisition's best free Sobol
    points: b distinct valid points, the first the CMA-ES pick, and a warning instead of a crash."""
    from botorch.exceptions.warnings import NumericsWarning
    from linear_operator.utils.errors import NanError

    import instructzero.tasks.optimisation.acquisition as acquisition

    kwargs = dict(
        best_f=_best(X),
        batch_size=3,
        dim=D,
        optimizer="cmaes",
        exclude=X,
        num_restarts=2,
        raw_samples=32,
        cmaes_maxiter=15,
        seed=0,
    )
    reference, _ = propose_batch(models["coupled"], **kwargs)

    def nan_fantasy(*args, **kw):
        raise NanError("cholesky_cpu: 1 of 1 elements of the torch.Size([1, 1]) tensor are NaN.")

    monkeypatch.setattr(acquisition, "_believe", nan_fantasy)
    with pytest.warns(NumericsWarning, match="Kriging believer failed after pick 1 of 3"):
        cands, values = propose_batch(models["coupled"], **kwargs)
    _assert_valid(cands, values, 3, exclude=X)
    torch.testing.assert_close(cands[0], reference[0], rtol=0, atol=0)
