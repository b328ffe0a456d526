"""Serve the deployments of `deployments/prefect.yaml` from one long-running process, without work pools or workers.

    python -m instructzero.flows.deploy serve               # every deployment (the nightly schedule included)
    python -m instructzero.flows.deploy serve run-task-cpu  # only some
    python -m instructzero.flows.deploy check               # load every entrypoint, validate its parameters, exit

`prefect.yaml` stays the single source of truth: entrypoints, parameters, schedules and descriptions are read from
it; work pools and job variables are ignored (a served deployment runs in this process's environment, so set
INSTRUCTZERO_* here instead). Each is registered as `<name>-served` (e.g. `instructzero-resume/resume-served`):
under the plain name it would replace the deployment `prefect deploy` made (pool, pull step, job variables), and
after this process stopped, a later run of that name (a `resume`, the nightly schedule) crashed on the dead
serve's temporary folder. With workers, use `prefect deploy` (see the README, "Operating it").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

PREFECT_YAML = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"
SERVED_SUFFIX = "-served"  # never the name `prefect deploy` gives the same definition


def load_definitions(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml (YAML anchors resolved)."""
    with path.open() as fh:
        document = yaml.safe_load(fh)
    return list(document.get("deployments") or [])


def load_entrypoint(entrypoint: str):
    """`flows/suite.py:benchmark_suite` -> the flow object (paths relative to the repository root)."""
    from prefect.flows import load_flow_from_entrypoint

    path, _, name = entrypoint.partition(":")
    return load_flow_from_entrypoint(f"{PREFECT_YAML.parents[1] / path}:{name}")


def to_deployments(names: Sequence[str] = ()) -> list[Any]:
    """`RunnerDeployment`s named `<name>-served` for the named definitions (all when none are named), ready for
    `prefect.serve`."""
    definitions = load_definitions()
    known = [d["name"] for d in definitions]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"error: unknown deployment(s) {unknown}; known: {known}")
    deployments = []
    for d in definitions:
        if names and d["name"] not in names:
            continue
        flow = load_entrypoint(d["entrypoint"])
        if _complete(flow, d):  # raises ParameterTypeError for a parameter the flow would reject
            flow.validate_parameters(d.get("parameters") or {})
        crons = [s["cron"] for s in d.get("schedules") or [] if s.get("active", True)]
        deployments.append(
            flow.to_deployment(
                name=d["name"] + SERVED_SUFFIX,
                parameters=d.get("parameters") or {},
                description=d.get("description"),
                tags=d.get("tags"),
                cron=crons[0] if crons else None,
            )
        )
    return deployments


def _complete(flow: Any, definition: dict[str, Any]) -> bool:
    """Whether the definition gives every required parameter (resume takes run_id at run time)."""
    required = set(flow.parameters.required or [])
    return required <= set(definition.get("parameters") or {})


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("serve", "check"):
        print("usage: python -m instructzero.flows.deploy {serve|check} [NAME ...]", file=sys.stderr)
        return 2
    deployments = to_deployments(args[1:])
    if args[0] == "check":
        for d in deployments:
            print(f"ok  {d.name:<20} {d.entrypoint}")
        return 0
    from prefect import serve

    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
