import json
import math

import pytest

from events import codec


def test_round_trip_is_compact_utf8_in_insertion_order() -> None:
    value = {"z": "é ✓", "a": [1, 2.5, None, True], "m": {"k": "v"}, "big": 10**30}
    data = codec.dumps(value)
    assert data == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert codec.loads(data) == value


def test_reads_what_the_json_module_wrote() -> None:
    """Views and events written before this codec used ASCII escapes and spaces."""
    value = {"text": "héllo \u2028 \U0001f600", "n": -1.5e-7, "list": [{}, []]}
    assert codec.loads(json.dumps(value)) == value
    assert codec.loads(json.dumps(value).encode()) == value
    assert math.isnan(codec.loads(b"NaN"))


@pytest.mark.parametrize("bad", [b"", b"{", b'{"a":}', b"\xff"])
def test_bad_input_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        codec.loads(bad)
