"""The keys configuration, `convstore keys`, the rate limiter, and open development mode
refusing anything but loopback."""

import hashlib
import json
import subprocess
import sys
import time

import httpx
import pytest

from api.keys import OPEN_PRINCIPAL, KeyConfigError, hash_key, load, parse_env
from api.ratelimit import RateLimiter
from convstore.embedded_nats import free_port
from tests.servers import ROOT, Service


def write(path, text):
    path.write_text(text)
    return path


def test_env_list_and_plaintext_keys(tmp_path):
    ring = load(None, "sk-a:acme:admin, sk-b:globex ,")
    assert ring is not None and len(ring) == 2
    a = ring.identify("sk-a")
    assert a is not None and (a.tenant, a.role, a.is_admin) == ("acme", "admin", True)
    b = ring.identify("sk-b")
    assert b is not None and (b.tenant, b.role) == ("globex", "user")
    assert b.key_id == "key_" + hashlib.sha256(b"sk-b").hexdigest()[:12]
    assert ring.identify("sk-c") is None and ring.identify("") is None
    assert ring.identify(None) is None
    assert ring.identify("sk-a ") is None  # exact keys only


def test_toml_file_with_digests_only_and_names(tmp_path):
    path = write(
        tmp_path / "keys.toml",
        f"""
[[keys]]
name = "backend"
tenant = "acme"
sha256 = "{hash_key("sk-secret").upper()}"
rps = 5
burst = 10

[[keys]]
tenant = "globex"
role = "admin"
key = "sk-plain"
""",
    )
    ring = load(path, "")
    assert ring is not None
    p = ring.identify("sk-secret")
    assert p is not None and (p.key_id, p.tenant, p.role, p.rps, p.burst) == (
        "backend",
        "acme",
        "user",
        5,
        10,
    )
    assert ring.identify(hash_key("sk-secret")) is None  # the digest is no key
    assert ring.tenants() == {"acme", "globex"}
    actor = p.actor("10.0.0.1")
    assert (actor.id, actor.kind, actor.tenant, actor.ip) == (
        "backend",
        "api_key",
        "acme",
        "10.0.0.1",
    )


def test_json_file_and_env_together(tmp_path):
    path = write(tmp_path / "keys.json", json.dumps({"keys": [{"key": "k1", "tenant": "t1"}]}))
    ring = load(path, "k2:t2")
    assert ring is not None and {ring.identify("k1").tenant, ring.identify("k2").tenant} == {
        "t1",
        "t2",
    }
    bare = write(tmp_path / "bare.json", json.dumps([{"key": "k3", "tenant": "t3"}]))
    assert load(bare, "").identify("k3") is not None


def test_no_keys_is_open_mode():
    assert load(None, "") is None
    assert OPEN_PRINCIPAL.tenant == "default" and OPEN_PRINCIPAL.is_admin
    assert OPEN_PRINCIPAL.actor(None).kind == "anonymous"


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([{"tenant": "t"}], "exactly one of 'key' and 'sha256'"),
        ([{"tenant": "t", "key": "k", "sha256": "0" * 64}], "exactly one"),
        ([{"tenant": "t", "sha256": "xyz"}], "64 hex digits"),
        ([{"tenant": "bad tenant", "key": "k"}], "tenant"),
        ([{"tenant": "a.b", "key": "k"}], "tenant"),
        ([{"tenant": "t", "key": "k", "role": "root"}], "role"),
        ([{"tenant": "t", "key": "k", "colour": "red"}], "colour"),
        ([{"tenant": "t", "key": "k"}, {"tenant": "u", "key": "k"}], "listed twice"),
        ([{"tenant": "t", "key": "k", "rps": 0}], "rps"),
        ([], "lists no keys"),
        ({"keys": "nope"}, "expected a list"),
    ],
)
def test_bad_key_files_are_refused_with_a_reason(tmp_path, entries, fragment):
    path = write(tmp_path / "keys.json", json.dumps(entries))
    with pytest.raises(KeyConfigError) as err:
        load(path, "")
    assert fragment in str(err.value)
    assert "'k'" not in str(err.value)  # never echoes a key


def test_bad_env_entries_and_unreadable_files(tmp_path):
    with pytest.raises(KeyConfigError, match="expected key:tenant"):
        parse_env("just-a-key")
    with pytest.raises(KeyConfigError, match="role"):
        load(None, "k:t:superuser")
    with pytest.raises(KeyConfigError, match="keys file"):
        load(tmp_path / "missing.toml", "")
    with pytest.raises(KeyConfigError, match="keys file"):
        load(write(tmp_path / "broken.toml", "[[keys]\n"), "")


def run_cli(*args: str, stdin: str | None = None, timeout: float = 30, **env: str):
    return subprocess.run(
        [sys.executable, "-m", "convstore", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_keys_new_prints_an_entry_that_authenticates_its_key(tmp_path):
    out = run_cli("keys", "new", "--tenant", "acme", "--role", "admin", "--name", "ops-bot")
    assert out.returncode == 0, out.stderr
    key = out.stdout.splitlines()[0].rsplit(" ", 1)[1]
    assert key.startswith("sk-cs-") and len(key) > 40
    entry = "\n".join(out.stdout.splitlines()[1:])
    assert key not in entry  # only the digest goes into the file
    ring = load(write(tmp_path / "keys.toml", entry), "")
    p = ring.identify(key)
    assert p is not None and (p.key_id, p.tenant, p.role) == ("ops-bot", "acme", "admin")
    assert run_cli("keys", "new", "--tenant", "no way").returncode == 2


def test_keys_hash_from_an_argument_or_stdin():
    assert run_cli("keys", "hash", "sk-x").stdout.strip() == hash_key("sk-x")
    assert run_cli("keys", "hash", stdin="sk-x\n").stdout.strip() == hash_key("sk-x")


def test_rate_limiter_token_bucket():
    limiter = RateLimiter(rps=2, burst=3)
    t = 100.0
    assert [limiter.take("k", now=t).allowed for _ in range(4)] == [True, True, True, False]
    denied = limiter.take("k", now=t)
    assert not denied.allowed and denied.retry_after == pytest.approx(0.5)
    assert limiter.take("other", now=t).allowed  # per key
    assert limiter.take("k", now=t + 0.5).allowed  # one token back after 1/rps
    assert not limiter.take("k", now=t + 0.5).allowed
    assert limiter.take("k", now=t + 100).remaining == 2  # refills to the burst, no more
    assert all(RateLimiter(0, 0).take("k", now=t).allowed for _ in range(1000))  # off
    custom = limiter.take("x", rps=0.1, burst=1, now=t)
    assert custom.allowed and not limiter.take("x", rps=0.1, burst=1, now=t + 1).allowed


@pytest.mark.parametrize("command", ["serve", "api"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_open_mode_refuses_to_listen_beyond_loopback(tmp_path, command, host):
    args = [command, "--host", host, "--port", str(free_port())]
    if command == "api":
        args += ["--nats-url", "nats://127.0.0.1:1"]
    else:
        args += ["--data-dir", str(tmp_path / "data")]
    began = time.monotonic()
    out = run_cli(*args)
    assert out.returncode != 0
    assert time.monotonic() - began < 20
    assert f"refusing to listen on '{host}' without API keys" in out.stderr
    assert "CONVSTORE_API_KEYS_FILE" in out.stderr and "open development mode" in out.stderr
    assert not (tmp_path / "data").exists()  # refused before starting anything


def test_a_bad_keys_file_stops_the_server_before_it_listens(tmp_path):
    bad = write(tmp_path / "keys.json", json.dumps([{"tenant": "t", "key": "k", "role": "x"}]))
    out = run_cli("api", "--nats-url", "nats://127.0.0.1:1", CONVSTORE_API_KEYS_FILE=str(bad))
    assert out.returncode != 0 and "API key entry 1: role" in out.stderr


def test_with_keys_the_api_listens_on_every_interface(nats_url, tmp_path):
    port = free_port()
    service = Service(
        ["api", "--nats-url", nats_url, "--host", "0.0.0.0", "--port", str(port)],
        tmp_path / "api.log",
        {"CONVSTORE_API_KEYS": "sk-wide-open-0123456789:wide"},
    ).start()
    try:
        service.wait_http(f"http://127.0.0.1:{port}", "/readyz")
        r = httpx.get(f"http://127.0.0.1:{port}/v1/conversations")
        assert r.status_code == 401
        ok = httpx.get(
            f"http://127.0.0.1:{port}/v1/conversations",
            headers={"Authorization": "Bearer sk-wide-open-0123456789"},
        )
        assert ok.status_code == 200
    finally:
        service.stop()
    assert "OPEN DEVELOPMENT MODE" not in service.log.read_text()


def test_open_mode_says_so_loudly_at_start(nats_url, tmp_path):
    port = free_port()
    service = Service(
        ["api", "--nats-url", nats_url, "--port", str(port)], tmp_path / "api.log"
    ).start()
    try:
        service.wait_http(f"http://127.0.0.1:{port}", "/readyz")
        r = httpx.post(f"http://127.0.0.1:{port}/v1/conversations", json={})
        assert r.status_code == 200  # any key, or none
    finally:
        service.stop()
    log = service.log.read_text()
    assert "OPEN DEVELOPMENT MODE" in log and "tenant 'default'" in log
