"""Local black-box engines on the same requests, each serving one packaged model on the chat endpoint with its own
chat template: our transformers server in float32 (the reference, first), in bfloat16, and llama.cpp.

    python -m instructzero.benchmarks.engines [--engines transformers,transformers-bf16,llama.cpp]
        [--model qwen2.5-coder-0.5b-instruct] [--requests 200] [--concurrency 8] [--llama-python /path/to/python]

The requests are the zero-shot prompts of the built-in `sentiment` task under a few instructions (the empty one,
the hand-written one, two generated ones), so answers are of the length a run sees. Both engines get the same
prompts through the project's own client (`BlackBoxClient`, no cache), one engine after the other; prints and
writes requests/s, mean latency, and how many answers are identical to the first engine's at temperature 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from instructzero.flows.offline import offline_defaults
from instructzero.servers.local_endpoint import LocalEndpoint, start_llama_cpp, start_own_server
from instructzero.storage.records import BlackBoxCall
from instructzero.tasks.data.builtin_tasks import HUMAN_INSTRUCTIONS
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings
from instructzero.tasks.generation.model_assets import DEFAULT_BLACK_BOX
from instructzero.tasks.prompts import render_zero_shot

INSTRUCTIONS = (
    "",
    HUMAN_INSTRUCTIONS["sentiment"][0],
    "write a positive output for every one of the inputs.",
    "read the novel.",
)


def prompts(n: int) -> list[str]:
    """n distinct zero-shot prompts: sentiment inputs under each of `INSTRUCTIONS` in turn."""
    examples = load_task("sentiment", None).examples
    out: list[str] = []
    for k in range(n):
        instruction = INSTRUCTIONS[k % len(INSTRUCTIONS)]
        prompt = render_zero_shot(instruction, examples[k // len(INSTRUCTIONS)].input)
        assert isinstance(prompt, str)  # the default template renders one completion prompt, not a chat request
        out.append(prompt)
    return out


def timed(
    endpoint: LocalEndpoint,
    batch: list[str],
    concurrency: int,
    max_tokens: int,
    *,
    warm_up: int = 4,
    timeout_s: float = 300.0,
) -> tuple[list[BlackBoxCall], float]:
    """Send `batch` once through the project's client (chat, greedy, no cache), after a short warm-up; the answers
    and the wall time of the batch alone."""
    settings = BlackBoxSettings.at(
        endpoint.base_url,
        model=endpoint.model,
        api="chat",
        max_tokens=max_tokens,
        concurrency=concurrency,
        stop=("\n",),
        timeout_s=timeout_s,
    )
    client = BlackBoxClient(settings)
    client.complete_many_sync(prompts(warm_up))
    start = time.perf_counter()
    completions = client.complete_many_sync(batch)
    return completions, time.perf_counter() - start


def measure(endpoint: LocalEndpoint, batch: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    """Send `batch` once (after a 4-request warm-up) and time it."""
    completions, wall = timed(endpoint, batch, concurrency, max_tokens)
    return {
        "engine": endpoint.kind,
        "description": endpoint.description,
        "requests": len(batch),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(batch) / wall, 2),
        "mean_latency_s": round(sum(c.latency_s for c in completions) / len(completions), 3),
        "answers": [c.text for c in completions],
    }


def start(engine: str, model: str, concurrency: int, llama_python: str | None) -> LocalEndpoint:
    if engine == "llama.cpp":
        return start_llama_cpp(model=model, python=llama_python)
    return start_own_server(engine, model=model, max_batch=concurrency)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m instructzero.benchmarks.engines", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--engines", default="transformers,transformers-bf16", help="the first is the reference")
    parser.add_argument("--model", default=DEFAULT_BLACK_BOX, help="a packaged model")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--llama-python", help="interpreter with llama-cpp-python[server] (default: this one)")
    parser.add_argument("--out", default="benchmarks/results/engines.json")
    args = parser.parse_args(argv)
    batch = prompts(args.requests)
    results = []
    for engine in args.engines.split(","):
        endpoint = start(engine, args.model, args.concurrency, args.llama_python)
        try:
            results.append(measure(endpoint, batch, args.concurrency, args.max_tokens))
        finally:
            endpoint.stop()
        print(
            f"{results[-1]['engine']:<18} {results[-1]['requests_per_s']:>6.2f} req/s  "
            f"({results[-1]['wall_s']} s for {len(batch)})",
            flush=True,
        )
    reference = results[0]
    for result in results[1:]:
        same = [x.strip() == y.strip() for x, y in zip(reference["answers"], result["answers"])]
        result["identical_to_reference"] = sum(same)
        result["speedup_vs_reference"] = round(result["requests_per_s"] / reference["requests_per_s"], 2)
        result["differing_examples"] = [
            (p[-80:], x, y) for p, x, y, ok in zip(batch, reference["answers"], result["answers"], same) if not ok
        ][:8]
        print(
            f"{result['engine']} vs {reference['engine']}: {result['speedup_vs_reference']}x the requests/s, "
            f"identical answers {sum(same)}/{len(batch)}"
        )
    summary = {
        "model": args.model,
        "requests": len(batch),
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "reference": reference["engine"],
        "engines": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
