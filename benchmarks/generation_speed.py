"""Time instruction generation for b soft prompts: one batched `generate` call vs one call per prompt.

    python -m instructzero.benchmarks.generation_speed [--device cuda] [--n 8] [--max-new-tokens 32] [--full-length]

Prints load time, wall time per setting (best of --repeats after a warm-up) and whether both settings wrote the
same instructions (they must: greedy decoding, per-sequence stopping, masked padding).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from instructzero.storage.records import Example
from instructzero.tasks.generation.generator import InstructionGenerator
from instructzero.tasks.generation.model_assets import PACKAGED_GEMMA, default_cache_dir

EXEMPLARS = (
    Example("b-0", "hot", ("cold",)),
    Example("b-1", "big", ("small",)),
    Example("b-2", "happy", ("sad",)),
    Example("b-3", "early", ("late",)),
    Example("b-4", "light", ("dark",)),
)


def _time(fn, repeats: int) -> tuple[float, list[str]]:
    """Best wall time of `repeats` runs (after the caller's warm-up) and the last result."""
    best, result = float("inf"), []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def time_generation(gen: InstructionGenerator, n: int, repeats: int) -> dict:
    """One batched `generate` over n seeded soft prompts vs n single-prompt calls, after a warm-up.

    Returns n_prompts, max_new_tokens, device, threads, batched_s, one_at_a_time_s, speedup, identical_outputs and
    the batched `instructions`.
    """
    z = torch.rand(n, gen.projection.intrinsic_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen.generate(z[:1], EXEMPLARS)  # warm-up (kernels, allocator)
    batched_s, batched = _time(lambda: gen.generate(z, EXEMPLARS, batch_size=n), repeats)
    single_s, single = _time(lambda: gen.generate(z, EXEMPLARS, batch_size=1), repeats)
    return {
        "n_prompts": n,
        "max_new_tokens": gen.max_new_tokens,
        "device": gen.device,
        "threads": torch.get_num_threads(),
        "batched_s": batched_s,
        "one_at_a_time_s": single_s,
        "speedup": single_s / batched_s,
        "identical_outputs": batched == single,
        "instructions": batched,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=PACKAGED_GEMMA)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--n", type=int, default=8, help="soft prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--full-length", action="store_true", help="always decode max_new_tokens (no first-line stop)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    gen = InstructionGenerator(
        args.model,
        cache_dir=default_cache_dir(),
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        stop_at_first_line=not args.full_length,
    )
    load_s = time.perf_counter() - start
    r = time_generation(gen, args.n, args.repeats)
    batched_s, single_s, batched = r["batched_s"], r["one_at_a_time_s"], r["instructions"]
    print(f"device={gen.device} threads={r['threads']} model={gen.model_id} load={load_s:.1f}s")
    print(f"n={args.n} max_new_tokens={args.max_new_tokens} first_line_stop={not args.full_length}")
    print(f"batch_size={args.n}: {batched_s:.2f}s ({batched_s / args.n:.3f}s per prompt)")
    print(f"batch_size=1: {single_s:.2f}s ({single_s / args.n:.3f}s per prompt)")
    print(f"speed-up: {r['speedup']:.2f}x; identical outputs: {r['identical_outputs']}")
    print(f"distinct instructions: {len(set(batched))}/{args.n}")
    for text in batched:
        print(f"  {text!r}")


if __name__ == "__main__":
    main()
