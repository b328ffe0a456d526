"""Initial design and q-batch proposals over the soft-prompt box [-1, 1]^d.

* `sobol_design`: a scrambled, seeded Sobol design (iteration 0).
* `propose_batch`: b new soft prompts maximising (Log) Expected Improvement, either with botorch's
  `optimize_acqf` (multi-start L-BFGS-B on the MC q-batch acquisition, sequential greedy) or with a small
  dependency-free CMA-ES on the analytic acquisition (greedy batch by Kriging-believer fantasies).

Everything random runs under a locally seeded torch RNG (and a seeded numpy Generator for CMA-ES), so the result
is a function of (model state, arguments, seed) only and the caller's global RNG state is left untouched.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction, ExpectedImprovement, LogExpectedImprovement
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.acquisition.monte_carlo import qExpectedImprovement
from botorch.exceptions.warnings import NumericsWarning
from botorch.models.model import Model
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor
from torch.quasirandom import SobolEngine

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.registry import ACQUISITIONS, OPTIMIZERS, AcquisitionName, OptimizerName

__all__ = [
    "sobol_design",
    "propose_batch",
    "cmaes_maximize",
    "AcquisitionSpec",
    "BatchProblem",
    "LOG_EI",
    "EI",
    "optimize_acqf_batch",
    "cmaes_batch",
]

BOX_LOWER = -1.0
BOX_UPPER = 1.0

# Noise variance (in the model's standardised outcome units) of the Kriging-believer fantasies of `_propose_cmaes`.
_FANTASY_NOISE = 1e-6


@dataclass(frozen=True)
class AcquisitionSpec:
    """A registered acquisition (`registry.ACQUISITIONS`): the MC q-batch class that `optimize_acqf` maximises
    and the analytic single-point class of the reported values (comparable across optimisers)."""

    batch: Callable[..., AcquisitionFunction]
    single: Callable[..., AcquisitionFunction]


LOG_EI = AcquisitionSpec(qLogExpectedImprovement, LogExpectedImprovement)
EI = AcquisitionSpec(qExpectedImprovement, ExpectedImprovement)


@dataclass(frozen=True)
class BatchProblem:
    """What a registered acquisition optimiser (`registry.OPTIMIZERS`) gets: find `batch_size` points of
    [-1, 1]^dim maximising `acquisition` under `model`, jointly with `pending`. It runs under `propose_batch`'s
    seeded torch RNG; `propose_batch` then clamps, de-duplicates and scores what it returns."""

    model: Model
    best_f: float
    batch_size: int
    dim: int
    acquisition: AcquisitionSpec
    seed: int
    num_restarts: int
    raw_samples: int
    pending: Tensor | None
    mc_samples: int
    cmaes_maxiter: int
    cmaes_popsize: int | None


def sobol_design(n: int, d: int, seed: int) -> Tensor:
    """Scrambled Sobol points in the searched box.

    Args:
        n: number of points (>= 1).
        d: dimension (1 <= d <= 21201).
        seed: scrambling seed; the same (n, d, seed) always gives the same design.

    Returns:
        (n x d) float64 tensor in [-1, 1]^d.
    """
    if int(n) != n or n < 1:
        raise ConfigError(f"sobol_design needs n >= 1 points, got {n}")
    if int(d) != d or not 1 <= d <= SobolEngine.MAXDIM:
        raise ConfigError(f"sobol_design needs 1 <= d <= {SobolEngine.MAXDIM}, got {d}")
    engine = SobolEngine(int(d), scramble=True, seed=int(seed))
    U = engine.draw(int(n), dtype=torch.float64)
    return BOX_LOWER + (BOX_UPPER - BOX_LOWER) * U


def propose_batch(
    model: Model,
    *,
    best_f: float,
    batch_size: int,
    dim: int,
    acquisition: AcquisitionName = "logei",
    optimizer: OptimizerName,
    seed: int,
    num_restarts: int = 5,
    raw_samples: int = 128,
    exclude: Tensor | None = None,
    pending: Tensor | None = None,
    min_distance: float = 1e-4,
    mc_samples: int = 256,
    cmaes_maxiter: int = 60,
    cmaes_popsize: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Propose a q-batch of new soft prompts.

    optimizer="optimize_acqf": botorch's `optimize_acqf` with `q=batch_size, sequential=True` on
    `qLogExpectedImprovement` / `qExpectedImprovement` (Sobol QMC sampler with `mc_samples` samples, seeded):
    candidate i maximises the joint acquisition of itself with candidates 0..i-1 pending.

    optimizer="cmaes": `cmaes_maximize` on the analytic `LogExpectedImprovement` of single points, restarted from
    the `num_restarts` best of `raw_samples` Sobol points. The batch is greedy: after each pick the model is
    conditioned on a fantasy observation equal to its posterior mean there (Kriging believer), which leaves the
    mean unchanged but removes the variance, so the next pick moves elsewhere. CMA-ES ranks points only, so
    maximising LogEI and EI select the same points wherever EI does not underflow; LogEI keeps a useful ranking
    where it does, hence it is the CMA-ES objective for both `acquisition` choices.

    Pending points (already chosen for this batch, not yet evaluated): qLogEI/qEI's `X_pending` for
    optimize_acqf; for CMA-ES the model is first conditioned on them like on its own earlier picks (noise-free
    Kriging believer). The returned values are those of the model *without* the pending fantasies.

    De-duplication: a candidate within `min_distance` (Euclidean) of a row of `exclude` or of an earlier
    candidate is replaced by the best (by analytic acquisition) point of a seeded Sobol pool that is not.

    Args:
        model: a fitted single-output botorch model over (n x d) inputs in [-1, 1]^d, in eval mode.
        best_f: incumbent (best observed y, original units) for Expected Improvement.
        batch_size: b >= 1 candidates to return.
        dim: d, the soft-prompt dimension.
        acquisition: a key of `registry.ACQUISITIONS`: "logei" (default, numerically robust) or "ei".
        optimizer: a key of `registry.OPTIMIZERS`: "optimize_acqf" or "cmaes" (no default here: the run's
            `BOSettings.optimizer` is the one default).
        seed: seeds raw samples, restarts, QMC samples and CMA-ES.
        num_restarts: multi-start count for either optimiser.
        raw_samples: Sobol points scored to choose the starting points.
        exclude: (m x d) already evaluated points never to propose again (e.g. the training inputs).
        pending: (p x d) points already in the batch; candidates are chosen jointly with them (see above) and are
            kept `min_distance` away from them.
        min_distance: Euclidean distance under which two points count as the same.
        mc_samples: QMC samples of the q-batch acquisition (optimize_acqf only).
        cmaes_maxiter: generations per CMA-ES run.
        cmaes_popsize: CMA-ES population size; default 4 + floor(3 ln d), at least 8.

    Returns:
        candidates: (b x d) float64 tensor in [-1, 1]^d, pairwise at least `min_distance` apart.
        values: (b,) float64 analytic acquisition value of each candidate on its own under `model` (LogEI for
            "logei", EI for "ei"), comparable across optimisers.
    """
    _check_args(model, batch_size, dim, acquisition, optimizer, num_restarts, raw_samples, min_distance, mc_samples)
    if exclude is not None:
        exclude = torch.as_tensor(exclude).detach().to(torch.float64)
        if exclude.dim() != 2 or exclude.shape[-1] != dim:
            raise ConfigError(f"exclude must be (m x {dim}), got shape {tuple(exclude.shape)}")
    if pending is not None:
        pending = torch.as_tensor(pending).detach().to(torch.float64)
        if pending.dim() != 2 or pending.shape[-1] != dim:
            raise ConfigError(f"pending must be (p x {dim}), got shape {tuple(pending.shape)}")
        if pending.shape[0] == 0:
            pending = None
    taken = exclude if pending is None else (pending if exclude is None else torch.cat([exclude, pending]))
    problem = BatchProblem(
        model=model,
        best_f=best_f,
        batch_size=batch_size,
        dim=dim,
        acquisition=ACQUISITIONS.resolve(acquisition),
        seed=seed,
        num_restarts=num_restarts,
        raw_samples=raw_samples,
        pending=pending,
        mc_samples=mc_samples,
        cmaes_maxiter=cmaes_maxiter,
        cmaes_popsize=cmaes_popsize,
    )
    optimize: Callable[[BatchProblem], Tensor] = OPTIMIZERS.resolve(optimizer)
    with torch.random.fork_rng(), warnings.catch_warnings():
        # "ei" is an explicit configuration choice; botorch's advice to use LogEI instead is noise here
        warnings.filterwarnings("ignore", message=r".*has known numerical issues", category=NumericsWarning)
        torch.manual_seed(seed)
        candidates = optimize(problem)
        candidates = candidates.detach().to(torch.float64).clamp(BOX_LOWER, BOX_UPPER)
        candidates = _dedupe(model, candidates, best_f, taken, min_distance, seed, max(raw_samples, 256))
        values = _analytic_values(model, candidates, best_f, acquisition)
    return candidates, values


def cmaes_maximize(
    f: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    sigma0: float,
    lower: float | np.ndarray,
    upper: float | np.ndarray,
    rng: np.random.Generator,
    popsize: int | None = None,
    maxiter: int = 100,
    tol_sigma: float = 1e-6,
) -> tuple[np.ndarray, float]:
    """Maximise a vectorised function over a box with restarted (mu/mu_w, lambda)-CMA-ES.

    Default strategy parameters of Hansen (2016), "The CMA Evolution Strategy: A Tutorial". The r rows of `x0`
    start r independent instances that run in lockstep, so each generation is a single call of `f` on
    (r * lambda) points. Box constraints by repair: every sample is clipped into the box, evaluated there, and the
    clipped point is used in the update, so each mean (a convex combination of clipped points) stays inside.

    Args:
        f: maps (k x d) points to (k,) values to maximise (non-finite values count as -inf).
        x0: (d,) or (r x d) initial means.
        sigma0: initial step size.
        lower, upper: box bounds (scalars or (d,) arrays).
        rng: random generator (the only source of randomness).
        popsize: lambda; default 4 + floor(3 ln d).
        maxiter: maximum number of generations.
        tol_sigma: an instance stops once sigma * (largest axis of C)^(1/2) falls below this.

    Returns:
        (best point (d,), its value), the best over all evaluated points of all instances.
    """
    mean = np.clip(np.atleast_2d(np.asarray(x0, dtype=np.float64)), lower, upper).copy()
    r, n = mean.shape
    lam = int(popsize) if popsize else 4 + int(3 * math.log(n))
    if lam < 2:
        raise ConfigError(f"CMA-ES needs popsize >= 2, got {lam}")
    mu = lam // 2
    weights = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    weights /= weights.sum()
    mueff = 1.0 / float((weights**2).sum())
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    cs = (mueff + 2) / (n + mueff + 5)
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))

    def evaluate(x: np.ndarray) -> np.ndarray:
        v = np.asarray(f(x), dtype=np.float64).reshape(x.shape[0])
        return np.where(np.isfinite(v), v, -np.inf)

    v0 = evaluate(mean)
    best_x, best_v = mean[int(np.argmax(v0))].copy(), float(v0.max())
    sigma = np.full(r, float(sigma0))
    C = np.broadcast_to(np.eye(n), (r, n, n)).copy()
    pc = np.zeros((r, n))
    ps = np.zeros((r, n))
    active = np.ones(r, dtype=bool)
    for gen in range(maxiter):
        C = 0.5 * (C + C.transpose(0, 2, 1))
        eigvals, B = np.linalg.eigh(C)  # (r x n), (r x n x n)
        D = np.sqrt(np.clip(eigvals, 1e-20, None))
        z = rng.standard_normal((r, lam, n))
        steps = np.einsum("rkn,rmn->rkm", z * D[:, None, :], B)  # B diag(D) z
        x = np.clip(mean[:, None, :] + sigma[:, None, None] * steps, lower, upper)  # (r x lam x n)
        values = evaluate(x.reshape(r * lam, n)).reshape(r, lam)
        values[~active] = -np.inf
        flat = int(np.argmax(values))
        if values.flat[flat] > best_v:
            best_v, best_x = float(values.flat[flat]), x.reshape(r * lam, n)[flat].copy()
        order = np.argsort(-values, axis=1, kind="stable")[:, :mu]
        y = (np.take_along_axis(x, order[:, :, None], axis=1) - mean[:, None, :]) / sigma[:, None, None]
        y_w = np.einsum("m,rmn->rn", weights, y)
        new_mean = mean + sigma[:, None] * y_w
        c_inv_sqrt = np.einsum("rij,rj,rkj->rik", B, 1.0 / D, B)
        ps_new = (1 - cs) * ps + math.sqrt(cs * (2 - cs) * mueff) * np.einsum("rij,rj->ri", c_inv_sqrt, y_w)
        ps_norm = np.linalg.norm(ps_new, axis=1)
        hsig = (ps_norm / math.sqrt(1 - (1 - cs) ** (2 * (gen + 1))) / chi_n < 1.4 + 2 / (n + 1)).astype(float)
        pc_new = (1 - cc) * pc + (hsig * math.sqrt(cc * (2 - cc) * mueff))[:, None] * y_w
        rank_mu = np.einsum("m,rmi,rmj->rij", weights, y, y)
        C_new = (
            (1 - c1 - cmu) * C
            + c1 * (np.einsum("ri,rj->rij", pc_new, pc_new) + ((1 - hsig) * cc * (2 - cc))[:, None, None] * C)
            + cmu * rank_mu
        )
        sigma_new = sigma * np.exp(np.minimum(1.0, (cs / damps) * (ps_norm / chi_n - 1)))
        upd = active
        mean[upd], ps[upd], pc[upd], C[upd], sigma[upd] = (
            new_mean[upd],
            ps_new[upd],
            pc_new[upd],
            C_new[upd],
            sigma_new[upd],
        )
        active = active & (sigma * D.max(axis=1) >= tol_sigma)
        if not active.any():
            break
    return best_x, best_v


def optimize_acqf_batch(p: BatchProblem) -> Tensor:
    """botorch's `optimize_acqf`, sequential greedy, on the MC q-batch acquisition (Sobol QMC sampler, seeded)."""
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([p.mc_samples]), seed=p.seed)
    acqf = p.acquisition.batch(model=p.model, best_f=p.best_f, sampler=sampler, X_pending=p.pending)
    candidates, _ = optimize_acqf(
        acqf,
        bounds=torch.tensor([[BOX_LOWER] * p.dim, [BOX_UPPER] * p.dim], dtype=torch.float64),
        q=p.batch_size,
        num_restarts=p.num_restarts,
        raw_samples=p.raw_samples,
        sequential=True,
        options={"seed": p.seed, "batch_limit": max(p.num_restarts, 1), "maxiter": 200},
    )
    return candidates


def cmaes_batch(p: BatchProblem) -> Tensor:
    """CMA-ES on the analytic LogEI (whatever `p.acquisition`: CMA-ES only ranks), batch by Kriging believer."""
    return _propose_cmaes(
        p.model,
        p.best_f,
        p.batch_size,
        p.dim,
        p.seed,
        p.num_restarts,
        p.raw_samples,
        p.cmaes_maxiter,
        p.cmaes_popsize,
        p.pending,
    )


def _propose_cmaes(
    model: Model,
    best_f: float,
    batch_size: int,
    dim: int,
    seed: int,
    num_restarts: int,
    raw_samples: int,
    maxiter: int,
    popsize: int | None,
    pending: Tensor | None = None,
) -> Tensor:
    rng = np.random.default_rng(seed % 2**63)
    popsize = popsize or max(8, 4 + int(3 * math.log(dim)))
    current = model
    incumbent = float(best_f)
    if pending is not None:
        current, incumbent = _believe(current, pending, incumbent)
    picks: list[Tensor] = []
    for i in range(batch_size):
        acqf = LogExpectedImprovement(current, best_f=incumbent)

        def objective(x: np.ndarray, acqf: LogExpectedImprovement = acqf) -> np.ndarray:
            with torch.no_grad():
                X = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64).unsqueeze(-2)
                return acqf(X).numpy()

        pool = sobol_design(raw_samples, dim, seed=seed + 7919 * (i + 1)).numpy()
        starts = pool[np.argsort(-objective(pool), kind="stable")[:num_restarts]]
        best_x, _ = cmaes_maximize(
            objective, starts, sigma0=0.3, lower=BOX_LOWER, upper=BOX_UPPER, rng=rng, popsize=popsize, maxiter=maxiter
        )
        pick = torch.from_numpy(best_x).to(torch.float64).unsqueeze(0)
        picks.append(pick)
        if i + 1 < batch_size:
            try:
                current, incumbent = _believe(current, pick, incumbent)
            except (NanError, NotPSDError) as exc:
                # The fantasy's Schur complement can lose positive definiteness (seen at n=1000, coupled kernel):
                # the remaining slots repeat this pick, and `_dedupe` fills them with the best free Sobol points.
                warnings.warn(
                    f"Kriging believer failed after pick {i + 1} of {batch_size} ({exc}); the rest of "
                    "the batch comes from the acquisition's best Sobol points",
                    NumericsWarning,
                    stacklevel=2,
                )
                picks.extend([pick] * (batch_size - i - 1))
                break
    return torch.cat(picks, dim=0)


def _believe(model: Model, X: Tensor, incumbent: float) -> tuple[Model, float]:
    """Kriging believer: condition on the posterior mean at X (p x d), believed exactly; raise the incumbent.

    Noise-free fantasy: with the fitted observation noise the coupled kernel's posterior sd at a pick barely
    drops (0.098 -> 0.092 on a 25-point toy fit), so every pick of a batch landed within ~0.01 of the first;
    believed exactly (standardised noise variance 1e-6) it drops to ~0.002 there.
    """
    with torch.no_grad():
        mean = model.posterior(X).mean.detach()  # type: ignore[attr-defined]  # a GPyTorchPosterior: (p x 1)
    conditioned = model.condition_on_observations(X=X, Y=mean, noise=torch.full_like(mean, _FANTASY_NOISE))
    return conditioned, max(incumbent, float(mean.max()))


def _analytic_values(model: Model, X: Tensor, best_f: float, acquisition: AcquisitionName) -> Tensor:
    """(b x d) -> (b,) the analytic acquisition (LogEI or EI) of each point on its own."""
    cls = ACQUISITIONS.resolve(acquisition).single
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*has known numerical issues", category=NumericsWarning)
        return cls(model, best_f=best_f)(X.unsqueeze(-2)).detach().to(torch.float64)


def _dedupe(
    model: Model,
    candidates: Tensor,
    best_f: float,
    exclude: Tensor | None,
    min_distance: float,
    seed: int,
    pool_size: int,
) -> Tensor:
    """Replace candidates closer than `min_distance` to `exclude` or to an earlier candidate."""
    taken = exclude if exclude is not None else candidates.new_zeros(0, candidates.shape[-1])

    def is_free(x: Tensor, taken: Tensor) -> bool:
        return taken.shape[0] == 0 or bool(torch.cdist(x.unsqueeze(0), taken).min() >= min_distance)

    pool: Tensor | None = None
    order: list[int] = []
    out = []
    for x in candidates:
        if not is_free(x, taken):
            if pool is None:  # lazily: most batches need no replacement
                pool = sobol_design(pool_size, candidates.shape[-1], seed=seed + 104_729)
                scores = _analytic_values(model, pool, best_f, "logei")
                order = torch.argsort(scores, descending=True, stable=True).tolist()
            replacement = next((pool[j] for j in order if is_free(pool[j], taken)), None)
            if replacement is None:
                raise ConfigError(
                    f"could not find a point at least {min_distance} away from {taken.shape[0]} taken points"
                )
            x = replacement
        out.append(x)
        taken = torch.cat([taken, x.unsqueeze(0)], dim=0)
    return torch.stack(out, dim=0)


def _check_args(
    model: Model,
    batch_size: int,
    dim: int,
    acquisition: str,
    optimizer: str,
    num_restarts: int,
    raw_samples: int,
    min_distance: float,
    mc_samples: int,
) -> None:
    ACQUISITIONS.resolve(acquisition)  # ConfigError naming the registered ones
    OPTIMIZERS.resolve(optimizer)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if dim < 1:
        raise ConfigError(f"dim must be >= 1, got {dim}")
    if num_restarts < 1:
        raise ConfigError(f"num_restarts must be >= 1, got {num_restarts}")
    if raw_samples < num_restarts:
        raise ConfigError(f"raw_samples must be >= num_restarts ({num_restarts}), got {raw_samples}")
    if not min_distance >= 0:
        raise ConfigError(f"min_distance must be >= 0, got {min_distance}")
    if mc_samples < 1:
        raise ConfigError(f"mc_samples must be >= 1, got {mc_samples}")
    train_inputs = getattr(model, "train_inputs", None)
    if train_inputs:
        model_dim = train_inputs[0].shape[-1]
        if model_dim != dim:
            raise ConfigError(f"dim={dim} but the model was fitted on {model_dim}-dimensional inputs")
