import asyncio

from convstore.loop import run_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_processes_run_on_uvloop() -> None:
    """uvicorn[standard] installs uvloop here; every convstore process runs on it."""
    assert run_loop(_loop_module()).startswith("uvloop")
