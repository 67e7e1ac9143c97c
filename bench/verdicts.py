"""`python -m bench.verdicts [FILE ...]`: each target's verdicts over several full runs.

One run says how a target fared in one phase of a noisy VM; the same code passes and
fails from one run to the next. Set side by side, the runs tell a target the design
cannot meet here (never passes) from one at the line (passes in some phases). Without
arguments it reads the full runs kept in `bench/reference/`, oldest first.
"""

import json
import re
import sys
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).resolve().parent / "reference"
MODES = ("always", "default")


def _run_number(path: Path) -> int:
    found = re.search(r"full-run-(\d+)\.json$", path.name)
    return int(found[1]) if found else 0


def reference_runs(first: int = 12) -> list[Path]:
    """The kept full runs from `first` on (earlier ones judged other targets' forms)."""
    runs = [p for p in REFERENCE.glob("full-run-*.json") if _run_number(p) >= first]
    return sorted(runs, key=_run_number)


Verdict = tuple[bool | None, float | None]  # (passed, measured); None: not judged


def grid(results: list[dict[str, Any]]) -> dict[str, dict[str, list[Verdict]]]:
    """target name -> mode -> one (passed, measured) per result, in the order of
    `results`; (None, None) where a result did not judge that target, so each column
    stays one run."""
    out: dict[str, dict[str, list[Verdict]]] = {}
    for n, result in enumerate(results):
        for mode in MODES:
            for target in result.get("modes", {}).get(mode, {}).get("targets", []):
                column = out.setdefault(target["name"], {}).setdefault(mode, [])
                column.extend([(None, None)] * (n - len(column)))
                column.append((target.get("passed"), target.get("measured")))
    for by_mode in out.values():
        for column in by_mode.values():
            column.extend([(None, None)] * (len(results) - len(column)))
    return out


def _cell(passed: bool | None, value: float | None) -> str:
    if passed is None or value is None:
        return "-"
    return f"{value:g}{'' if passed else '*'}"


def render(names: list[str], table: dict[str, dict[str, list[Verdict]]]) -> str:
    lines = [f"runs: {', '.join(names)}"]
    for target, by_mode in table.items():
        lines.append(target)
        for mode, verdicts in by_mode.items():
            judged = [ok for ok, _ in verdicts if ok is not None]
            values = " ".join(_cell(ok, value) for ok, value in verdicts)
            lines.append(f"  {mode:<8} passed {sum(judged)} of {len(judged)}: {values}")
    lines.append("(* = failed, - = not judged)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or reference_runs()
    results = [json.loads(p.read_text()) for p in paths]
    print(render([p.stem for p in paths], grid(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
