"""GP surrogate (tasks/optimisation/surrogate.py)."""

from __future__ import annotations

import warnings

import pytest
import torch
from botorch.models import SingleTaskGP
from scipy.stats import spearmanr

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.acquisition import sobol_design
from instructzero.tasks.optimisation.similarity import instruction_similarity
from instructzero.tasks.optimisation.surrogate import fit_surrogate
from tests.plugins.gp import toy

pytestmark = pytest.mark.usefixtures("single_torch_thread")

D = 4
N = 20
THRESHOLDS = torch.linspace(-3.0, -0.1, 10, dtype=torch.float64)


def toy_scores(X: torch.Tensor) -> torch.Tensor:
    """(n x 10) per-"example" scores: example j is solved when toy(z) beats threshold j."""
    return (toy(X).unsqueeze(-1) > THRESHOLDS).to(torch.float64)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X = sobol_design(N, D, seed=0)
    return X, toy(X), instruction_similarity(toy_scores(X))


@pytest.fixture(scope="module")
def models(data) -> dict[str, SingleTaskGP]:
    X, y, S = data
    return {
        "matern": fit_surrogate(X, y, kernel="matern", seed=0),
        "coupled": fit_surrogate(X, y, kernel="coupled", similarity=S, seed=0),
        "coupled+matern": fit_surrogate(X, y, kernel="coupled+matern", similarity=S, seed=0),
    }


@pytest.mark.parametrize("kernel", ["matern", "coupled", "coupled+matern"])
def test_posterior_mean_tracks_truth_on_held_out_points(models, kernel):
    X_test = sobol_design(64, D, seed=123)
    with torch.no_grad():
        mean = models[kernel].posterior(X_test).mean.squeeze(-1)
    assert mean.dtype == torch.float64
    assert spearmanr(mean.numpy(), toy(X_test).numpy()).statistic > 0.5


@pytest.mark.parametrize("kernel", ["matern", "coupled", "coupled+matern"])
def test_q_batch_posterior_matches_pointwise(models, kernel):
    model = models[kernel]
    X_test = sobol_design(12, D, seed=5).reshape(4, 3, D)  # (b x q x d)
    with torch.no_grad():
        post = model.posterior(X_test)
        pointwise = model.posterior(X_test.reshape(12, 1, D)).mean.reshape(4, 3, 1)
        cov = post.mvn.covariance_matrix
    assert post.mean.shape == (4, 3, 1)
    torch.testing.assert_close(post.mean, pointwise, rtol=1e-6, atol=1e-8)
    assert cov.shape == (4, 3, 3)
    assert torch.linalg.eigvalsh(cov).min() >= -1e-8


def test_fit_is_deterministic(data):
    X, y, S = data
    a = fit_surrogate(X, y, kernel="coupled", similarity=S, seed=3).state_dict()
    b = fit_surrogate(X, y, kernel="coupled", similarity=S, seed=3).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("kernel", ["matern", "coupled", "coupled+matern"])
def test_degenerate_targets_do_not_crash(data, kernel):
    X, _, S = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit_surrogate(X[:6], torch.full((6, 1), 0.25), kernel=kernel, similarity=S[:6, :6])
        single = fit_surrogate(X[:1], torch.tensor([0.5]), kernel=kernel, similarity=torch.ones(1, 1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gpytorch rounds ~0 negative variances of the flat posterior
        for m, level in ((model, 0.25), (single, 0.5)):
            post = m.posterior(sobol_design(5, D, seed=9))
            assert torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all()
            torch.testing.assert_close(post.mean, torch.full_like(post.mean, level), rtol=0, atol=1e-6)


def test_bad_inputs_name_the_shapes(data):
    X, y, S = data
    with pytest.raises(ConfigError, match=r"\(20,\)"):
        fit_surrogate(X[:, 0], y, kernel="matern")
    with pytest.raises(ConfigError, match=r"20 rows.*\(19,\)"):
        fit_surrogate(X, y[:19], kernel="matern")
    with pytest.raises(ConfigError, match=r"\(20, 2\)"):
        fit_surrogate(X, torch.stack([y, y], -1), kernel="matern")
    with pytest.raises(ConfigError, match="None"):
        fit_surrogate(X, y, kernel="coupled")
    with pytest.raises(ConfigError, match=r"\(20 x 20\).*\(19, 19\)"):
        fit_surrogate(X, y, kernel="coupled", similarity=S[:19, :19])
    with pytest.raises(ConfigError, match="'rbf'"):
        fit_surrogate(X, y, kernel="rbf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="1.49"):
        fit_surrogate(X * 1.5 / X.abs().max(), y, kernel="matern")


def test_exploring_kernel_keeps_posterior_sd_far_from_the_data():
    """Fit on 20 points with z_0 in [-1, -0.2]; look at z_0 = 1 (at least 0.6 of the unit cube away).

    Measured (d=4, seed 0): posterior sd there / prior sd at the data = 0.42 for "coupled+matern" (w = 0.25) but
    0.06 for "coupled", whose prior variance k(z, Z) K_ZZ^-1 K_S K_ZZ^-1 k(Z, z) vanishes away from the anchors.
    """
    X = sobol_design(N, D, seed=0)
    X[:, 0] = -1.0 + 0.4 * (X[:, 0] + 1.0)
    y = toy(X)
    S = instruction_similarity(toy_scores(X))
    far = sobol_design(64, D, seed=5)
    far[:, 0] = 1.0
    ratio = {}
    for kernel in ("coupled", "coupled+matern"):
        model = fit_surrogate(X, y, kernel=kernel, similarity=S, seed=0)
        with torch.no_grad():
            post_sd = model.posterior(far).variance.sqrt().median()
            prior_sd_at_data = model.covar_module(model.input_transform(X), diag=True).sqrt().median()
        ratio[kernel] = float(post_sd / (prior_sd_at_data * model.outcome_transform.stdvs.squeeze()))
    assert ratio["coupled+matern"] > 0.3
    assert ratio["coupled"] < 0.15
