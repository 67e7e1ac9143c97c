"""The audit commands (history, tail, export, verify) run as `python -m convstore ...`
subprocesses against real NATS, the way an operator runs them. What they print is compared
with the log read straight from JetStream, not through the code under test."""

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from openai import OpenAI

from convstore.embedded_nats import free_port, write_config
from events import commands
from events.chain import ChainVerifier, digest, seal
from events.ids import new_id
from events.schema import ConversationCreated, ItemAdded, MetadataReplaced
from events.store import EventStore
from tests.servers import ROOT

PAD = b"z" * 300
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ENV = {**os.environ, "CONVSTORE_LOG_LEVEL": "warning"}
ENV.pop("CONVSTORE_NATS_URL", None)


def convstore(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convstore", *args],
        cwd=ROOT,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def aconvstore(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(convstore, *args)


async def read_log(url: str, subjects: str = "conv.>") -> list[tuple[int, dict[str, Any]]]:
    """(seq, event) in log order, read with a plain nats-py ordered consumer."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("CONVSTORE", subjects_filter=subjects)
        if not sum((info.state.subjects or {}).values()):
            return []
        sub = await js.subscribe(subjects, ordered_consumer=True)
        out = []
        while True:
            msg = await sub.next_msg(timeout=5)
            out.append((msg.metadata.sequence.stream, json.loads(msg.data)))
            if msg.metadata.num_pending == 0:
                await sub.unsubscribe()
                return out
    finally:
        await nc.close()


async def stream_state(url: str) -> Any:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info("CONVSTORE")).state
    finally:
        await nc.close()


def columns(line: str) -> list[str]:
    """seq, time, actor, type, summary."""
    parts = line.split(None, 4)
    return parts + [""] * (5 - len(parts))


# ---------------------------------------------------------------------------- history


@pytest.fixture(scope="module")
def changed(client: OpenAI, nats_url: str) -> dict[str, Any]:
    """A conversation created with items, then added to, renamed and pruned via the API."""
    conv = client.conversations.create(
        metadata={"topic": "old"},
        items=[
            {"role": "user", "content": "Hello history"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
        ],
    )
    long_text = "Second question " + "x" * 100
    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": long_text}]
    )
    client.conversations.update(conv.id, metadata={"topic": "new"})
    deleted = added.data[0].id
    client.conversations.items.delete(deleted, conversation_id=conv.id)
    log = asyncio.run(read_log(nats_url, f"conv.{conv.id}.>"))
    return {"id": conv.id, "deleted": deleted, "log": log}


def test_history_prints_every_event_in_log_order(changed: dict[str, Any], nats_url: str) -> None:
    result = convstore("history", changed["id"], "--nats-url", nats_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [columns(line) for line in lines]
    log = changed["log"]
    assert [int(r[0]) for r in rows] == [seq for seq, _ in log]
    assert [r[3] for r in rows] == [
        "ConversationCreated",
        "ItemAdded",
        "ItemAdded",
        "ItemAdded",
        "MetadataReplaced",
        "ItemDeleted",
    ]
    for row, (_, event) in zip(rows, log, strict=True):
        assert TIME.match(row[1]), row
        assert row[1] == event["time"][:19] + "Z"
        assert row[2] == f"anonymous/anonymous/{event['actor']['ip']}"
    created, hello, hi, second, renamed, pruned = (r[4] for r in rows)
    assert created == 'metadata {"topic": "old"}'
    assert hello == f'{log[1][1]["item"]["id"]} message user "Hello history"'
    assert hi == f'{log[2][1]["item"]["id"]} message assistant "Hi!"'
    assert second.startswith(f'{changed["deleted"]} message user "Second question xxx')
    assert second.endswith('…"') and "x" * 100 not in second
    assert len(second.split('"')[1]) == 60
    assert renamed == 'metadata {"topic": "new"}'
    assert pruned == changed["deleted"]


def test_history_as_of_a_position_before_the_update(changed: dict[str, Any], nats_url: str) -> None:
    log = changed["log"]
    before_update = log[3][0]  # the last ItemAdded; MetadataReplaced comes next
    result = convstore(
        "history", changed["id"], "--as-of", str(before_update), "--nats-url", nats_url
    )
    assert result.returncode == 0, result.stderr
    timeline, state = result.stdout.split("\n\n")
    assert [int(columns(line)[0]) for line in timeline.splitlines()] == [s for s, _ in log[:4]]
    assert f"as of position {before_update}" in state
    assert '  metadata {"topic": "old"}' in state.splitlines()
    items = [line.split()[0] for line in state.splitlines() if line.startswith("    ")]
    assert items == [e["item"]["id"] for _, e in log[1:4]]
    assert "  items (3):" in state

    # At the item delete: the new metadata, and the deleted item is gone.
    result = convstore("history", changed["id"], "--as-of", str(log[5][0]), "--nats-url", nats_url)
    state = result.stdout.split("\n\n")[1]
    assert '  metadata {"topic": "new"}' in state.splitlines()
    items = [line.split()[0] for line in state.splitlines() if line.startswith("    ")]
    assert items == [e["item"]["id"] for _, e in log[1:3]]


def test_history_as_of_a_time(changed: dict[str, Any], nats_url: str) -> None:
    log = changed["log"]
    at = log[3][1]["time"]  # RFC 3339 with microseconds, as stored
    result = convstore("history", changed["id"], "--as-of", at, "--nats-url", nats_url)
    assert result.returncode == 0, result.stderr
    timeline, state = result.stdout.split("\n\n")
    assert len(timeline.splitlines()) == 4
    assert '  metadata {"topic": "old"}' in state.splitlines()
    # The point as asked, to the microsecond (it was cut to the second: another point).
    named = datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert f"as of {named} (" in state

    result = convstore(
        "history", changed["id"], "--as-of", "2000-01-01T00:00:00Z", "--nats-url", nats_url
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "as of 2000-01-01T00:00:00Z: the conversation did not exist yet"


def test_history_escapes_control_characters(client: OpenAI, nats_url: str) -> None:
    """Stored text is user input: it must not drive the operator's terminal."""
    conv = client.conversations.create(
        metadata={"note": "a\u202eb\x9bc"},
        items=[{"role": "user", "content": "red \x1b[31malert\x07"}],
    )
    result = convstore("history", conv.id, "--nats-url", nats_url)
    assert result.returncode == 0, result.stderr
    shown = result.stdout.replace("\n", "")
    assert not [c for c in shown if unicodedata.category(c).startswith("C")]
    created, added = result.stdout.splitlines()
    assert created.endswith('metadata {"note": "a\\u202eb\\x9bc"}')
    assert added.endswith('"red \\u001b[31malert\\u0007"')


@pytest.mark.parametrize("conversation_id", ["conv_doesnotexist", "*", "conv_a.b"])
def test_history_of_an_unknown_conversation(
    changed: dict[str, Any], nats_url: str, conversation_id: str
) -> None:
    """Wildcards and dots are not ids: they must not list other conversations."""
    result = convstore("history", conversation_id, "--nats-url", nats_url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"no conversation '{conversation_id}'" in result.stderr


def test_history_rejects_a_bad_as_of(changed: dict[str, Any], nats_url: str) -> None:
    result = convstore("history", changed["id"], "--as-of", "yesterday", "--nats-url", nats_url)
    assert result.returncode == 2
    assert "neither a log position nor an RFC 3339 time" in result.stderr


def test_unreachable_nats_fails_fast_with_one_message() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = convstore("verify", "--nats-url", url, CONVSTORE_REQUEST_TIMEOUT="1")
    assert result.returncode == 2
    assert time.monotonic() - started < 20
    assert result.stderr.strip().splitlines() == [
        f"convstore verify: cannot reach NATS at {url}: no connection within 1s"
    ]


def test_no_event_stream_is_an_error(fresh_nats: str) -> None:
    result = convstore("verify", "--nats-url", fresh_nats)
    assert result.returncode == 2
    assert "no event stream CONVSTORE" in result.stderr


def test_without_a_url_the_serve_data_dirs_server_is_used(fresh_nats: str, tmp_path: Path) -> None:
    """Next to `convstore serve` (its data dir), no URL is needed: the port comes from the
    config the embedded server was started with."""
    port = int(fresh_nats.rsplit(":", 1)[1])
    write_config(tmp_path, port, sync_always=False)
    result = convstore("verify", CONVSTORE_DATA_DIR=str(tmp_path))
    assert result.returncode == 2  # it reached that server, which has no log yet
    assert f"no event stream CONVSTORE at {fresh_nats}" in result.stderr
    nowhere = convstore("verify", CONVSTORE_DATA_DIR=str(tmp_path / "none"))
    assert nowhere.returncode == 2 and "--nats-url (or CONVSTORE_NATS_URL) needed" in nowhere.stderr


# ---------------------------------------------------------------------------- export


def read_export(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_one_conversation(changed: dict[str, Any], nats_url: str, tmp_path: Any) -> None:
    out = tmp_path / "one.jsonl"
    result = convstore(
        "export", "--out", str(out), "--conversation", changed["id"], "--nats-url", nats_url
    )
    assert result.returncode == 0, result.stderr
    exported = read_export(out)
    log = changed["log"]
    assert len(exported) == len(log) == 6
    assert [e["seq"] for e in exported] == [seq for seq, _ in log]
    assert [{k: v for k, v in e.items() if k != "seq"} for e in exported] == [e for _, e in log]
    assert result.stdout.strip() == f"exported 6 events to {out}"
    assert "6/6" in result.stderr  # the progress bar reached its total
    assert not (tmp_path / "one.jsonl.partial").exists()


def test_export_everything(changed: dict[str, Any], nats_url: str, tmp_path: Any) -> None:
    before = asyncio.run(stream_state(nats_url))
    out = tmp_path / "all.jsonl"
    result = convstore("export", "--out", str(out), "--nats-url", nats_url)
    assert result.returncode == 0, result.stderr
    assert asyncio.run(stream_state(nats_url)).messages == before.messages  # nothing moved
    exported = read_export(out)
    assert len(exported) == before.messages
    seqs = [e["seq"] for e in exported]
    assert seqs == sorted(set(seqs)) and seqs[-1] == before.last_seq
    assert seqs == [seq for seq, _ in asyncio.run(read_log(nats_url))]
    assert all(e["conversation_id"] and e["type"] for e in exported)
    # The session's log also holds other tests' foreign events (no hash): as stored.
    mine = [e for e in exported if e["conversation_id"] == changed["id"]]
    assert len(mine) == 6 and all(e["hash"] for e in mine)
    assert result.stdout.strip() == f"exported {before.messages} events to {out}"
    assert f"{before.messages}/{before.messages}" in result.stderr


def test_export_to_an_unwritable_place(
    changed: dict[str, Any], nats_url: str, tmp_path: Any
) -> None:
    out = tmp_path / "missing-dir" / "x.jsonl"
    result = convstore("export", "--out", str(out), "--nats-url", nats_url)
    assert result.returncode == 2
    assert "cannot write" in result.stderr


async def test_export_stops_at_the_end_of_the_log_as_of_its_start(
    store: EventStore, fresh_nats: str, tmp_path: Any
) -> None:
    """Writers keep appending during the export; it ends anyway, with no gaps."""
    for n in range(3000):
        await store.nc.publish(f"conv.conv_load{n % 5}.item_added", b'{"n":%d}' % n)
    await store.nc.flush()
    while (await store.js.stream_info("CONVSTORE")).state.messages < 3000:
        await asyncio.sleep(0.05)
    out = tmp_path / "moving.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "convstore", "export", "--out", str(out), "--nats-url", fresh_nats,
        cwd=ROOT, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while process.returncode is None:
        assert time.monotonic() < deadline, "export did not stop while the log kept growing"
        await store.js.publish("conv.conv_live.item_added", b"{}")
        try:
            await asyncio.wait_for(process.wait(), 0.005)
        except TimeoutError:
            pass
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    seqs = [e["seq"] for e in read_export(out)]
    assert len(seqs) >= 3000
    assert seqs == list(range(1, len(seqs) + 1))
    assert (await store.js.stream_info("CONVSTORE")).state.last_seq > len(seqs)
    assert stdout.decode().strip() == f"exported {len(seqs)} events to {out}"


async def test_export_stopped_by_sigterm_leaves_no_file(
    store: EventStore, fresh_nats: str, tmp_path: Any
) -> None:
    """SIGTERM while the export is well under way: exit 143, neither FILE nor FILE.partial.

    (On Python 3.11 the task's cancellation is often lost inside nats-py's next_msg; the
    export must stop anyway.)"""
    total = 200_000
    for n in range(total):
        body = b'{"n":%d,"pad":"%s"}' % (n, PAD)
        await store.nc.publish(f"conv.conv_big{n % 50}.item_added", body)
    await store.nc.flush()
    deadline = time.monotonic() + 60
    while (await store.js.stream_info("CONVSTORE")).state.messages < total:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "stopped.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "convstore", "export", "--out", str(out), "--nats-url", fresh_nats,
        cwd=ROOT, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        seen = b""
        while not re.search(rb"\| *[2-9][0-9]{4}/%d" % total, seen):  # 20000+ done
            chunk = await asyncio.wait_for(process.stderr.read(4096), 30)
            assert chunk, seen.decode()
            seen += chunk
        assert (tmp_path / "out" / "stopped.jsonl.partial").exists()
        await asyncio.sleep(1)  # mid-page, where a cancellation can get lost
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 143
    assert stdout == b""
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------------------- verify


def message(text: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
        "created_at": 1700000000,
    }


async def append(store: EventStore, event: Any) -> int:
    head = await store.head(event.conversation_id)
    assert head is not None
    return await store.append([event], head.seq, head.hash)


@pytest.fixture
async def written(store: EventStore) -> dict[str, list[int]]:
    """Three conversations of five events each, written the way the API writes them."""
    seqs: dict[str, list[int]] = {}
    for n in range(3):
        conv = new_id("conv")
        created = ConversationCreated(conversation_id=conv, created_at=1700000000, metadata={})
        first = await commands.create(
            store, [created, ItemAdded(conversation_id=conv, item=message(f"hello {n}"))]
        )
        seqs[conv] = [first - 1, first]
        for i in range(2):
            seqs[conv].append(
                await append(store, ItemAdded(conversation_id=conv, item=message(f"{n}.{i}")))
            )
        seqs[conv].append(
            await append(store, MetadataReplaced(conversation_id=conv, metadata={"n": str(n)}))
        )
    return seqs


async def test_verify_passes_on_a_clean_log(
    store: EventStore, fresh_nats: str, written: dict[str, list[int]]
) -> None:
    result = await aconvstore("verify", "--nats-url", fresh_nats)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "verified 15 events in 3 conversations: chains intact"

    conv = next(iter(written))
    result = await aconvstore("verify", conv, "--nats-url", fresh_nats)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "verified 5 events in 1 conversation: chains intact"

    result = await aconvstore("verify", "conv_doesnotexist", "--nats-url", fresh_nats)
    assert result.returncode == 1
    assert "no conversation 'conv_doesnotexist'" in result.stderr


async def test_verify_catches_a_removed_event(
    store: EventStore, fresh_nats: str, written: dict[str, list[int]]
) -> None:
    conv, seqs = list(written.items())[1]
    assert await store.js.delete_msg("CONVSTORE", seqs[2])
    result = await aconvstore("verify", "--nats-url", fresh_nats)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"BROKEN {conv} at seq {seqs[3]}: prev_hash does not match the previous event's hash "
        "(an event was removed, inserted or reordered)"
    )
    assert lines[1:] == ["checked 14 events in 3 conversations: 1 chain broken"]

    other = next(iter(written))
    assert (await aconvstore("verify", other, "--nats-url", fresh_nats)).returncode == 0
    result = await aconvstore("verify", conv, "--nats-url", fresh_nats)
    assert result.returncode == 1
    assert result.stdout.startswith(f"BROKEN {conv} at seq {seqs[3]}: prev_hash")


def forge_wrong_hash(body: dict[str, Any]) -> None:
    body["hash"] = "0" * 64


def forge_wrong_prev_hash(body: dict[str, Any]) -> None:
    body["prev_hash"] = "f" * 64
    body["hash"] = digest(body)  # consistent with its content: only the link is wrong


def forge_altered_text(body: dict[str, Any]) -> None:
    body["item"]["content"][0]["text"] = "I never said that"


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (forge_wrong_hash, "hash does not match the event's content (altered)"),
        (forge_altered_text, "hash does not match the event's content (altered)"),
        (forge_wrong_prev_hash, "prev_hash does not match the previous event's hash"),
        (None, None),  # a correctly sealed event published by hand is not a break
    ],
)
async def test_verify_catches_a_forged_event(
    store: EventStore,
    fresh_nats: str,
    written: dict[str, list[int]],
    forge: Callable[[dict[str, Any]], None] | None,
    reason: str | None,
) -> None:
    conv = list(written)[2]
    head = await store.head(conv)
    assert head is not None
    _, data = seal(ItemAdded(conversation_id=conv, item=message("forged")), head.hash)
    body = json.loads(data)
    if forge:
        forge(body)
    ack = await store.js.publish(f"conv.{conv}.item_added", json.dumps(body).encode())
    result = await aconvstore("verify", "--nats-url", fresh_nats)
    if reason is None:
        assert result.returncode == 0, result.stdout
        assert result.stdout.strip() == "verified 16 events in 3 conversations: chains intact"
        return
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(f"BROKEN {conv} at seq {ack.seq}: {reason}")


async def test_verify_reports_an_event_filed_under_another_conversation(
    store: EventStore, fresh_nats: str, written: dict[str, list[int]]
) -> None:
    """A valid continuation of one chain, stored under another conversation's subject."""
    owner, victim = list(written)[:2]
    head = await store.head(owner)
    assert head is not None
    _, data = seal(ItemAdded(conversation_id=owner, item=message("misfiled")), head.hash)
    ack = await store.js.publish(f"conv.{victim}.item_added", data)
    expected = (
        f"BROKEN {victim} at seq {ack.seq}: names conversation {owner} "
        f"but is stored under conv.{victim}.item_added"
    )
    result = await aconvstore("verify", victim, "--nats-url", fresh_nats)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        expected,
        "checked 6 events in 1 conversation: 1 chain broken",
    ]
    result = await aconvstore("verify", "--nats-url", fresh_nats)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [  # the owner's chain is not blamed
        expected,
        "checked 16 events in 3 conversations: 1 chain broken",
    ]
    assert (await aconvstore("verify", owner, "--nats-url", fresh_nats)).returncode == 0


def sealed_pair() -> tuple[bytes, bytes]:
    conv = new_id("conv")
    created, first = seal(
        ConversationCreated(conversation_id=conv, created_at=1700000000, metadata={"k": "v"}), ""
    )
    _, second = seal(ItemAdded(conversation_id=conv, item=message("Hello chain")), created.hash)
    return first, second


def test_chain_verifier_catches_any_single_altered_character() -> None:
    first, second = sealed_pair()
    intact = ChainVerifier()
    assert intact.feed(1, first) is None and intact.feed(2, second) is None

    text = second.index(b"Hello chain")
    prev = second.index(b'"prev_hash":"') + len(b'"prev_hash":"')
    own = second.index(b'"hash":"') + len(b'"hash":"')
    for at in range(len(second)):
        altered = second[:at] + (b"x" if second[at] != ord("x") else b"y") + second[at + 1 :]
        verifier = ChainVerifier()
        assert verifier.feed(1, first) is None
        found = verifier.feed(2, altered)
        assert found is not None, f"altering byte {at} went unnoticed: {altered!r}"
        assert found.seq == 2
        if at in (text, own):
            assert found.reason == "hash does not match the event's content (altered)"
        if at == prev:
            assert found.reason.startswith("prev_hash does not match")


# ---------------------------------------------------------------------------- tail


class Tail:
    """`convstore tail` as a child process; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convstore", "tail", *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not seen within {timeout}s; got {self.seen}"
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if wanted(line):
                return line

    def stop(self, sig: int) -> tuple[int, str]:
        self.process.send_signal(sig)
        try:
            code = self.process.wait(10)
        finally:
            self.process.kill()
        assert self.process.stderr is not None
        return code, self.process.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_tail_prints_events_as_they_are_appended(client: OpenAI, nats_url: str, sig: int) -> None:
    conv = client.conversations.create(metadata={"tail": "yes"})
    tail = Tail(conv.id, "--nats-url", nats_url)
    try:
        tail.wait_for(lambda line: "ConversationCreated" in line, timeout=30)  # history first
        added = client.conversations.items.create(
            conv.id, items=[{"role": "user", "content": "live line"}]
        )
        item_id = added.data[0].id
        line = tail.wait_for(lambda line: item_id in line, timeout=5)
        assert columns(line)[3] == "ItemAdded"
        assert columns(line)[4] == f'{item_id} message user "live line"'
        client.conversations.update(conv.id, metadata={"tail": "still"})
        line = tail.wait_for(lambda line: "MetadataReplaced" in line, timeout=5)
        assert columns(line)[4] == 'metadata {"tail": "still"}'
    finally:
        code, stderr = tail.stop(sig)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_tail_everything_after_a_position(client: OpenAI, nats_url: str) -> None:
    last = asyncio.run(stream_state(nats_url)).last_seq
    tail = Tail("--after", str(last), "--nats-url", nats_url)
    try:
        conv = client.conversations.create(items=[{"role": "user", "content": "after"}])
        first = tail.wait_for(lambda line: True, timeout=30)
        seq, _, _, conv_id, kind = first.split(None, 5)[:5]
        assert int(seq) == last + 1
        assert (conv_id, kind) == (conv.id, "ConversationCreated")
        line = tail.wait_for(lambda line: "ItemAdded" in line, timeout=5)
        assert line.split()[3] == conv.id
    finally:
        code, stderr = tail.stop(signal.SIGTERM)
    assert code == 0, stderr


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "conv_doesnotexist"],
        ["export", "--out", "-", "--conversation", "conv_doesnotexist"],
    ],
)
def test_tail_and_export_of_an_unknown_conversation(nats_url: str, args: list[str]) -> None:
    result = convstore(*args, "--nats-url", nats_url)
    assert result.returncode == 1
    assert "no conversation 'conv_doesnotexist'" in result.stderr
    assert result.stdout == ""
