import time

import pytest

from events.connection import connect


async def test_connect_gives_up_after_its_timeout():
    began = time.monotonic()
    with pytest.raises(ConnectionError):
        await connect(["nats://127.0.0.1:1"], "test", timeout=1.5)
    assert time.monotonic() - began < 5
