"""Where the run config goes from the flow: every call in a module that hands on `config` or a piece of it
(`config`, `config.bo`, `config.black_box.model` ...), counted by callee: how many places a
change of the config reaches, the reproducible count behind docs/ARCHITECTURE.md's row.

    python -m instructzero.benchmarks.config_calls [flows/instruction_search.py]

Prints one line per callee (calls, name) and the totals. Attribute reads such as `config.seed` that never leave
the module are not calls and are not counted; `config.<section>.<field>` reads are counted separately.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

FLOW = Path(__file__).resolve().parent.parent / "flows" / "instruction_search.py"
_FIELD_READ = re.compile(r"config\.[a-z_]+\.[a-z_]+")


def _mentions_config(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "config" for n in ast.walk(node))


def config_calls(source: str) -> Counter[str]:
    """Callee (as written) -> number of calls whose arguments mention the name `config`."""
    calls: Counter[str] = Counter()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
            if any(_mentions_config(argument) for argument in arguments):
                calls[ast.unparse(node.func)] += 1
    return calls


def field_reads(source: str) -> int:
    """How many `config.<section>.<field>` expressions the source holds."""
    return len(_FIELD_READ.findall(source))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0] if args else FLOW).read_text()
    calls = config_calls(source)
    for callee, count in sorted(calls.items()):
        print(f"{count:3d}  {callee}")
    reads = field_reads(source)
    print(f"{sum(calls.values())} calls into {len(calls)} callees; {reads} config.<section>.<field> reads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
