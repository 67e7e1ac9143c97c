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


def grid(results: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[bool, float]]]]:
    """target name -> mode -> [(passed, measured)] in the order of `results`."""
    out: dict[str, dict[str, list[tuple[bool, float]]]] = {}
    for result in results:
        for mode in MODES:
            for target in result.get("modes", {}).get(mode, {}).get("targets", []):
                by_mode = out.setdefault(target["name"], {})
                by_mode.setdefault(mode, []).append((target["passed"], target["measured"]))
    return out


def render(names: list[str], table: dict[str, dict[str, list[tuple[bool, float]]]]) -> str:
    lines = [f"runs: {', '.join(names)}"]
    for target, by_mode in table.items():
        lines.append(target)
        for mode, verdicts in by_mode.items():
            passed = sum(ok for ok, _ in verdicts)
            values = " ".join(f"{value:g}{'' if ok else '*'}" for ok, value in verdicts)
            lines.append(f"  {mode:<8} passed {passed} of {len(verdicts)}: {values}")
    lines.append("(* = failed)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or reference_runs()
    results = [json.loads(p.read_text()) for p in paths]
    print(render([p.stem for p in paths], grid(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
