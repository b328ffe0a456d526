"""One way for the small benchmark scripts to leave their results: a JSON file and a markdown table beside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_results(
    out: Path,
    name: str,
    rows: Sequence[dict[str, Any]],
    table: Sequence[Sequence[str]],
    header: Sequence[str],
    *,
    wall_s: float,
    footer: str,
) -> str:
    """Write `<out>/<name>.json` (rows + wall time) and `<out>/<name>.md` (the table + footer); return the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"wall_s": round(wall_s, 1), "rows": list(rows)}, indent=1))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    text = "\n".join(lines)
    (out / f"{name}.md").write_text(f"{text}\n\n{footer}\n")
    return text
