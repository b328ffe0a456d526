"""Black-box throughput against what the machine could do: each packaged black box's embedded server at several
micro-batch sizes, next to a compute bound derived from the model's matmul FLOPs and this machine's measured
float32 matmul rate.

    python -m instructzero.benchmarks.compute_bound [--models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]
        [--batches 1,4,8,16] [--requests 32] [--out benchmarks/results/compute_bound.json]

Bound: an answer of P prompt and C completion tokens costs about 2 * N_body * (P + C) + 2 * N_head * C FLOPs
(N_body: the decoder's linear-layer weights, N_head: the output projection, applied to generated positions only)
plus attention's 4 * layers * heads * head_dim * context per token. Divided into the machine's matmul rate
(`torch.matmul` of 1024 x 1024 float32 at the torch thread count in use) it gives the requests/s a perfectly
efficient server would reach; the ratio measured / bound says how far the engine is from it. Small-batch decoding
is memory-bound, not compute-bound, so a low ratio at batch 1 is expected: the number shows what batching buys.
Requests are `benchmarks.engines.prompts` (built-in sentiment inputs under four instructions) through the
project's client at concurrency = the batch size, answers capped at --max-tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from instructzero.benchmarks.engines import prompts, timed
from instructzero.flows.offline import offline_defaults
from instructzero.servers.local_endpoint import start_own_server
from instructzero.tasks.generation.model_assets import PACKAGED_QWEN_05B, PACKAGED_SMOLLM2, resolve_model_path


def matmul_flops_per_s(n: int = 1024, seconds: float = 3.0) -> float:
    """Sustained float32 matmul rate of this process (2 n^3 FLOPs per product), after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2.0 * n**3 * done / (time.perf_counter() - start)


def model_shape(model: str) -> dict[str, int]:
    """Linear-layer weight counts from the converted model's config.json (Llama/Qwen2 decoders)."""
    cfg = json.loads((resolve_model_path(model) / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or h // heads
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    return {
        "n_body": layers * (attn + 3 * h * inter),
        "n_head": cfg["vocab_size"] * h,
        "layers": layers,
        "heads": heads,
        "head_dim": head_dim,
    }


def answer_flops(shape: dict[str, int], prompt_tokens: int, completion_tokens: int) -> float:
    """FLOPs of one answer (see the module docstring)."""
    p, c = prompt_tokens, completion_tokens
    positions = p + c
    attention = 4 * shape["layers"] * shape["heads"] * shape["head_dim"] * positions * positions / 2
    return 2.0 * shape["n_body"] * positions + 2.0 * shape["n_head"] * c + attention


def measure(model: str, batch: int, requests: list[str], max_tokens: int, shape: dict[str, int]) -> dict[str, Any]:
    """The embedded server with micro-batches of `batch`, `requests` sent at concurrency `batch`."""
    endpoint = start_own_server("transformers", model=model, max_batch=batch)
    try:
        answers, wall = timed(endpoint, requests, batch, max_tokens, warm_up=2, timeout_s=900.0)
    finally:
        endpoint.stop()
    flops = sum(answer_flops(shape, a.prompt_tokens, a.completion_tokens) for a in answers)
    return {
        "model": model,
        "batch": batch,
        "requests": len(answers),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(answers) / wall, 3),
        "mean_prompt_tokens": round(sum(a.prompt_tokens for a in answers) / len(answers), 1),
        "mean_completion_tokens": round(sum(a.completion_tokens for a in answers) / len(answers), 1),
        "gflop_per_answer": round(flops / len(answers) / 1e9, 3),
        "achieved_gflop_per_s": round(flops / wall / 1e9, 2),
    }


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m instructzero.benchmarks.compute_bound", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default=f"{PACKAGED_SMOLLM2},{PACKAGED_QWEN_05B}")
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=32, help="requests per setting")
    parser.add_argument("--max-tokens", type=int, default=16, help="answer cap (a run's derived cap is similar)")
    parser.add_argument("--out", default="benchmarks/results/compute_bound.json")
    args = parser.parse_args(argv)
    rate = matmul_flops_per_s()
    print(f"matmul float32, {torch.get_num_threads()} threads: {rate / 1e9:.1f} GFLOP/s", flush=True)
    requests = prompts(args.requests)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        shape = model_shape(model)
        for batch in [int(b) for b in args.batches.split(",")]:
            row = measure(model, batch, requests, args.max_tokens, shape)
            row["bound_requests_per_s"] = round(rate / (row["gflop_per_answer"] * 1e9), 2)
            row["ratio_to_bound"] = round(row["requests_per_s"] / row["bound_requests_per_s"], 3)
            rows.append(row)
            print(
                f"{model:<30} batch {batch:>2}: {row['requests_per_s']:>6.2f} req/s, bound "
                f"{row['bound_requests_per_s']:>6.2f} ({row['gflop_per_answer']:.2f} GFLOP/answer): "
                f"{100 * row['ratio_to_bound']:.1f}%",
                flush=True,
            )
    out = {"matmul_gflop_per_s": round(rate / 1e9, 2), "threads": torch.get_num_threads(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
