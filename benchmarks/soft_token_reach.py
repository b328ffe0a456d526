"""How far can the soft prompt move the generator? Distinct instructions from the run's own Sobol design, per setting.

    python -m instructzero.benchmarks.soft_token_reach --data-dir ../shared/data --tasks antonyms,negation
        [--settings chat:5:1:start,chat:5:1:answer,chat:20:1:start,chat-minimal:5:1:start]

InstructZero's search can only choose among the instructions its soft prompts decode to: when 20 points of the
Sobol design give 2 distinct instructions, BO and uniform sampling find the same one and APE (26-40 distinct) wins.
Each setting is META:N_SOFT_TOKENS:SCALE:POSITION[:TEMPERATURE], POSITION `start` (the soft tokens open the user
turn, the generator's behaviour) or `answer` (right before the pre-filled "The instruction was to", next to where
decoding starts); TEMPERATURE > 0 samples each z's instruction with its own seed (top-p 0.95, as
`--generator-temperature T --generator-top-p 0.95`), 0 or absent decodes greedily. Generation only: nothing is
scored, so it needs no black box; ~20-50 s per task and setting on 2 cores.

`--pool N` (N > 5) lets z choose the exemplars as well: each soft prompt shows the 5 of N induce examples that a
fixed random projection of z ranks highest (piecewise constant in z, as the soft prompt's own projection is linear).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from instructzero.flows.offline import offline_defaults
from instructzero.flows.params import RunConfig
from instructzero.storage.records import Example
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.generation.generator import CHAT_ANSWER_PREFIX, InstructionGenerator
from instructzero.tasks.generation.model_assets import PACKAGED_QWEN_05B
from instructzero.tasks.optimisation.acquisition import sobol_design


class AnswerPositionGenerator(InstructionGenerator):
    """The generator with its soft tokens moved from the start of the user turn to just before the answer."""

    def prompt_pieces(self, exemplars: Sequence[Example]) -> tuple[str, str]:
        if not self.chat:
            raise ValueError("the answer position is defined for chat generators only")
        rendered = self._tokenizer.apply_chat_template(
            [{"role": "user", "content": self.prompt_text(exemplars)}], add_generation_prompt=True, tokenize=False
        )
        return rendered, CHAT_ANSWER_PREFIX


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m instructzero.benchmarks.soft_token_reach", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tasks", default="sentiment")
    parser.add_argument("--generator", default=PACKAGED_QWEN_05B)
    parser.add_argument("--settings", default="chat:5:1:start,chat:5:1:answer")
    parser.add_argument("--n-prompts", type=int, default=20)
    parser.add_argument("--pool", type=int, default=5, help="induce examples z chooses 5 from (5: fixed exemplars)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else None
    defaults = RunConfig().generator  # everything but the setting's fields as a run has it
    z = np.asarray(sobol_design(args.n_prompts, defaults.intrinsic_dim, 0), dtype=np.float64)
    for setting in args.settings.split(","):
        meta, n_tokens, scale, position, *sampling = setting.split(":")
        temperature = float(sampling[0]) if sampling else 0.0
        cls = AnswerPositionGenerator if position == "answer" else InstructionGenerator
        generator = cls(
            args.generator,
            template=meta,
            n_soft_tokens=int(n_tokens),
            soft_scale=float(scale),
            intrinsic_dim=defaults.intrinsic_dim,
            max_new_tokens=defaults.max_new_tokens,
            temperature=temperature,
            top_p=0.95 if temperature > 0 else 1.0,
        )
        for name in args.tasks.split(","):
            splits = make_splits(load_task(name, data_dir), n_exemplars=args.pool, n_dev=10, n_test=1, seed=0)
            t0 = time.perf_counter()
            if args.pool > 5:
                ranks = z @ np.random.default_rng(0).standard_normal((defaults.intrinsic_dim, args.pool))
                texts = [
                    generator.generate(z[i : i + 1], [splits.exemplars[j] for j in np.argsort(-row)[:5]])[0]
                    for i, row in enumerate(ranks)
                ]
            else:
                texts = generator.generate(z, splits.exemplars, batch_size=defaults.batch_size)
            counts = Counter(texts)
            top = [(text[:60], n) for text, n in counts.most_common(3)]
            print(
                f"{setting:<22} {name:<18} distinct {len(counts):>2}/{len(z)} {time.perf_counter() - t0:5.1f} s  {top}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
