"""Time one BO step, GP update (`fit_surrogate`) then propose (`propose_batch`), against the history size n.

    python -m instructzero.benchmarks.gp_update_speed [--ns 150 1000] [--dim 10] [--batch-size 25] [--threads 2]
                                         [--kernels coupled coupled+matern matern] [--optimizer cmaes]
                                         [--repeats 3]

Synthetic history: n scrambled Sobol soft prompts in [-1, 1]^d, y = -||z - c||^2 + noise, and per-example
"dev scores" (m = 20 noisy thresholds of y) turned into K_S by `instruction_similarity`, so the coupled kernel
sees the same kind of K_S as in a real run. Each (n, kernel) is timed `repeats` times and the median is reported
(fits are deterministic; the spread comes from the machine, which is noisy when shared).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

from instructzero.tasks.optimisation.acquisition import propose_batch, sobol_design
from instructzero.tasks.optimisation.similarity import instruction_similarity
from instructzero.tasks.optimisation.surrogate import fit_surrogate


def synthetic_history(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X (n x d), y (n,), K_S (n x n) of a smooth toy objective with noisy per-example scores."""
    g = torch.Generator().manual_seed(seed)
    X = sobol_design(n, dim, seed=seed)
    centre = torch.rand(dim, generator=g, dtype=torch.float64) - 0.5
    y = -((X - centre) ** 2).sum(-1) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    thresholds = torch.quantile(y, torch.linspace(0.05, 0.95, 20, dtype=torch.float64))
    noisy = y.unsqueeze(-1) + 0.1 * torch.randn(n, 20, generator=g, dtype=torch.float64)
    scores = (noisy > thresholds).to(torch.float64)
    return X, y, instruction_similarity(scores)


def measure(
    ns: Sequence[int] = (50, 200, 1000),
    *,
    dim: int = 10,
    batch_size: int = 5,
    kernels: Sequence[Literal["coupled", "coupled+matern", "matern"]] = ("coupled", "coupled+matern", "matern"),
    optimizer: Literal["optimize_acqf", "cmaes"] = "cmaes",
    num_restarts: int = 5,
    raw_samples: int = 128,
    seed: int = 0,
    repeats: int = 1,
) -> list[dict]:
    """Wall time of fit_surrogate and propose_batch for each (n, kernel), median over `repeats` runs.

    Returns:
        One dict per (n, kernel): n, kernel, dim, batch_size, optimizer, threads, fit_s, propose_s, total_s
        (wall), fit_cpu_s, propose_cpu_s (process CPU time, less sensitive to a shared machine), best_acq
        (largest LogEI of the proposed batch).
    """
    rows = []
    for n in ns:
        X, y, K_S = synthetic_history(n, dim, seed)
        for kernel in kernels:
            samples = []
            for _ in range(max(1, repeats)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start, cpu_start = time.perf_counter(), time.process_time()
                    model = fit_surrogate(
                        X, y, kernel=kernel, similarity=None if kernel == "matern" else K_S, seed=seed
                    )
                    fitted, cpu_fitted = time.perf_counter(), time.process_time()
                    _, values = propose_batch(
                        model,
                        best_f=float(y.max()),
                        batch_size=batch_size,
                        dim=dim,
                        optimizer=optimizer,
                        seed=seed,
                        num_restarts=num_restarts,
                        raw_samples=raw_samples,
                        exclude=X,
                    )
                    done, cpu_done = time.perf_counter(), time.process_time()
                samples.append((fitted - start, done - fitted, cpu_fitted - cpu_start, cpu_done - cpu_fitted))
            fit_s, propose_s, fit_cpu_s, propose_cpu_s = (statistics.median(col) for col in zip(*samples))
            rows.append(
                {
                    "n": n,
                    "kernel": kernel,
                    "dim": dim,
                    "batch_size": batch_size,
                    "optimizer": optimizer,
                    "threads": torch.get_num_threads(),
                    "fit_s": fit_s,
                    "propose_s": propose_s,
                    "total_s": fit_s + propose_s,
                    "fit_cpu_s": fit_cpu_s,
                    "propose_cpu_s": propose_cpu_s,
                    "repeats": len(samples),
                    "worst_total_s": max(a + b for a, b, _, _ in samples),
                    "best_acq": float(values.max()),
                    "worst_acq": float(values.min()),
                }
            )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table of `measure` rows."""
    header = (
        f"{'n':>6} {'kernel':>15} {'fit s':>8} {'propose s':>10} {'total s':>8} {'worst s':>8} {'fit cpu s':>10} "
        f"{'prop cpu s':>10} {'LogEI max':>10} {'LogEI min':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['n']:>6} {r['kernel']:>15} {r['fit_s']:>8.2f} {r['propose_s']:>10.2f} {r['total_s']:>8.2f} "
            f"{r['worst_total_s']:>8.2f} {r['fit_cpu_s']:>10.2f} {r['propose_cpu_s']:>10.2f} {r['best_acq']:>10.3g} "
            f"{r['worst_acq']:>10.3g}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[150, 1000])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=25, help="default 25: the paper preset's batch")
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=["coupled", "coupled+matern", "matern"],
        default=["coupled", "coupled+matern", "matern"],
    )
    parser.add_argument("--optimizer", choices=["optimize_acqf", "cmaes"], default="cmaes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per (n, kernel); the median is shown")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(
        args.ns,
        dim=args.dim,
        batch_size=args.batch_size,
        kernels=args.kernels,
        optimizer=args.optimizer,
        seed=args.seed,
        repeats=args.repeats,
    )
    print(f"d={args.dim}, batch={args.batch_size}, optimizer={args.optimizer}, threads={torch.get_num_threads()}")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
