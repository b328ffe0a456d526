"""Rewrite a published benchmark report from its results.json: `python -m instructzero.benchmarks.restat DIR [DIR ...]`.

results.json keeps every method-run with its per-example test scores, so a change to the statistics (the move
from the paired bootstrap's invalid p-value to exact paired tests with Holm's adjustment) reaches the published
numbers without re-running a black-box call or needing the store the benchmark wrote. The header, runs and
curves are read back as they were; report.md, the plots and results.json are written again in place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from instructzero.benchmarks.quality import MethodRun, QualityResult
from instructzero.benchmarks.report import write_report


def load_quality(results: dict) -> QualityResult:
    """The QualityResult a results.json was written from (tuples restored where MethodRun has them)."""
    q = results["quality"]
    runs = []
    for r in q["runs"]:
        r = {
            **r,
            "curve": tuple(r["curve"]),
            "curve_calls": tuple(r["curve_calls"]),
            "test_examples": tuple((str(i), float(s)) for i, s in r["test_examples"]),
        }
        runs.append(MethodRun(**r))
    return QualityResult(
        settings=q["settings"], suite=q["suite"], endpoint=q["endpoint"], runs=runs, wall_s=q["wall_s"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m instructzero.benchmarks.restat", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folders", nargs="+", type=Path, help="report folders holding results.json")
    args = parser.parse_args(argv)
    for folder in args.folders:
        results = json.loads((folder / "results.json").read_text())
        if "speed" in results:
            raise SystemExit(f"error: {folder}/results.json holds a speed section, which restat cannot rewrite")
        print(write_report(folder, header=results["header"], quality=load_quality(results), speed=None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
