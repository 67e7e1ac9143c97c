"""`bench.verdicts`: each target's verdicts over several full runs, side by side."""

from typing import Any

from bench import verdicts


def run(append: tuple[bool, float], rebuild: tuple[bool, float]) -> dict[str, Any]:
    def target(name: str, verdict: tuple[bool, float]) -> dict[str, Any]:
        return {"name": name, "passed": verdict[0], "measured": verdict[1]}

    return {
        "modes": {
            "always": {"targets": [target("append", append), target("rebuild", rebuild)]},
            "default": {"targets": [target("append", (False, 5.0))]},
        }
    }


def test_each_target_lists_its_verdicts_per_mode_in_run_order() -> None:
    table = verdicts.grid([run((False, 3.0), (True, 0.6)), run((True, 1.9), (False, 0.4))])
    assert table == {
        "append": {"always": [(False, 3.0), (True, 1.9)], "default": [(False, 5.0)] * 2},
        "rebuild": {"always": [(True, 0.6), (False, 0.4)]},
    }
    text = verdicts.render(["a", "b"], table)
    assert "  always   passed 1 of 2: 3* 1.9" in text
    assert "  default  passed 0 of 2: 5* 5*" in text
    assert "  always   passed 1 of 2: 0.6 0.4*" in text


def test_a_run_that_did_not_judge_a_target_keeps_the_columns_aligned() -> None:
    unjudged = {"modes": {"always": {"targets": [{"name": "append", "passed": None}]}}}
    table = verdicts.grid([unjudged, {"modes": {}}, run((True, 1.9), (False, 0.4))])
    assert table["append"]["always"] == [(None, None), (None, None), (True, 1.9)]
    assert table["rebuild"]["always"] == [(None, None), (None, None), (False, 0.4)]
    text = verdicts.render(["a", "b", "c"], table)
    assert "  always   passed 1 of 1: - - 1.9" in text


def test_the_kept_runs_are_read_in_numeric_order() -> None:
    """run 9 before run 10 and 19, which a sort by name would not give."""
    names = [p.name for p in verdicts.reference_runs(first=9)]
    assert names[:2] == ["full-run-9.json", "full-run-10.json"]
    assert "full-run-19.json" in names
    assert verdicts.main([str(verdicts.REFERENCE / "full-run-19.json")]) == 0
