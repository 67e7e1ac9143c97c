"""Reliability tests: each one reports its figures (printed, as JSON under the pytest
temporary directory, and in the terminal summary of the run)."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIGURES: list[dict[str, Any]] = []


@pytest.fixture
def report(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[dict[str, Any]], None]:
    """Record a test's figures; call it before the assertions, so a failure reports too."""

    def write(figures: dict[str, Any]) -> None:
        figures = {"test": request.node.name, **figures}
        text = json.dumps(figures, indent=2, default=str)
        (tmp_path / "figures.json").write_text(text)
        folder = tmp_path_factory.getbasetemp() / "reliability-figures"
        folder.mkdir(exist_ok=True)
        (folder / f"{request.node.name}.json").write_text(text)
        print(text)
        FIGURES.append(figures)

    return write


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for figures in FIGURES:
        terminalreporter.write_line(json.dumps(figures, default=str))
