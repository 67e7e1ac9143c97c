"""Operator commands over the event log: history, tail, export, verify; and status
(convstore/status.py).

They only read: they never create or change the stream or the views (`tail` reads
through an ephemeral consumer of its own). Exit codes: 0 done; 1 unknown conversation,
a broken chain, or (status) something wrong; 2 NATS unreachable, no event stream, or an
output file that cannot be written; 130 Ctrl-C, 143 SIGTERM (`tail` exits 0 on both).
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from tqdm import tqdm

from convstore import status as status_command
from convstore.embedded_nats import embedded_url
from convstore.loop import run_loop
from convstore.settings import Settings
from events.chain import Break, ChainVerifier
from events.connection import connect
from events.history import History, StoredEvent
from events.store import EventStore, StoreUnavailable
from events.subjects import STREAM_NAME, conversation_filter, conversation_subject, is_safe_id
from projections.point_in_time import reader_as_of

COMMANDS = ("history", "tail", "export", "verify", "status")
PAGE = 1000
TEXT_WIDTH = 60
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class Failed(Exception):
    """The command cannot do what was asked: a message for stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- arguments


@dataclass(frozen=True)
class AsOf:
    seq: int | None = None
    time: datetime | None = None

    def beyond(self, seq: int, body: dict[str, Any] | None) -> bool:
        """True for the first event after this point (the same rule as reader_as_of)."""
        if self.seq is not None:
            return seq > self.seq
        when = _event_time(body)
        return self.time is not None and when is not None and when > self.time

    def __str__(self) -> str:
        if self.seq is not None:
            return f"position {self.seq}"
        if self.time is None or not self.time.microsecond:
            return _utc(self.time)
        # As asked, to the microsecond: a time cut to the second names another point.
        return self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_of(value: str) -> AsOf:
    """A log position (digits) or an RFC 3339 time, UTC when it has no offset."""
    if re.fullmatch(r"[0-9]+", value):
        return AsOf(seq=int(value))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is neither a log position nor an RFC 3339 time"
        ) from None
    return AsOf(time=when if when.tzinfo else when.replace(tzinfo=UTC))


def position(value: str) -> int:
    if not re.fullmatch(r"[0-9]+", value):
        raise argparse.ArgumentTypeError(f"'{value}' is not a log position (an integer >= 0)")
    return int(value)


def register(sub: Any) -> None:
    """Add the audit subcommands to the `convstore` parser."""

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        p.add_argument("--nats-url", help="NATS URL(s), comma-separated (or CONVSTORE_NATS_URL)")
        return p

    p = add("history", "print a conversation's events, one line each, oldest first")
    p.add_argument("conversation_id")
    p.add_argument(
        "--as-of",
        type=as_of,
        metavar="POS_OR_RFC3339",
        help="stop at this log position or time and print the conversation as it was then",
    )
    p = add("tail", "print events as they are appended, until Ctrl-C")
    p.add_argument("conversation_id", nargs="?", help="only this conversation (default: all)")
    p.add_argument(
        "--after",
        type=position,
        default=0,
        metavar="POS",
        help="start after this log position (default 0: the whole history first, then live)",
    )
    p = add("export", "write the log as JSON lines (each event plus its seq), in log order")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.jsonl")
    p.add_argument("--conversation", metavar="ID", help="only this conversation's events")
    p = add("verify", "check the hash chains of every conversation (or one)")
    p.add_argument("conversation_id", nargs="?")
    p = add(
        "status",
        "show the log, how far the views trail it, the projector, the model workers and the "
        "requests waiting for one; exit 1 when something is wrong",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")


# ---------------------------------------------------------------------------- one line per event


def _safe(text: str) -> str:
    """No control or format characters reach the terminal: event content is user input."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c).startswith("C") else c for c in text)


def _event_time(body: dict[str, Any] | None) -> datetime | None:
    raw = body.get("time") if body else None
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _utc(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else "-"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return _json(text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 1] + "…")


def _item_text(item: dict[str, Any]) -> str | None:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict)]
        texts = [t for p in parts for t in (p.get("text"), p.get("refusal")) if isinstance(t, str)]
        if texts:
            return " ".join(texts)
        if parts:
            return " ".join(f"[{p.get('type', '?')}]" for p in parts)
    if isinstance(item.get("name"), str) and isinstance(item.get("arguments"), str):
        return f"{item['name']}({item['arguments']})"
    for key in ("output", "text"):
        if isinstance(item.get(key), str):
            return str(item[key])
    summary = item.get("summary")
    if isinstance(summary, list):
        texts = [s.get("text") for s in summary if isinstance(s, dict)]
        return " ".join(t for t in texts if isinstance(t, str)) or None
    return None


def item_summary(item: Any) -> str:
    """`<id> <type> [<role>] ["first 60 characters of text"]`."""
    if not isinstance(item, dict):
        return "(not an item)"
    words = [str(item.get("id") or "-"), str(item.get("type") or "?")]
    if item.get("role"):
        words.append(str(item["role"]))
    text = _item_text(item)
    if text is not None:
        words.append(_short(text))
    return " ".join(words)


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ConversationCreated": lambda b: f"metadata {_json(b.get('metadata') or {})}",
    "ItemAdded": lambda b: item_summary(b.get("item")),
    "MetadataReplaced": lambda b: f"metadata {_json(b.get('metadata') or {})}",
    "ItemDeleted": lambda b: str(b.get("item_id")),
    "ConversationDeleted": lambda b: "",
}


def _body(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _subject_conversation(subject: str) -> str:
    """`conv.<id>.<type>` -> `<id>`."""
    parts = subject.split(".")
    return parts[1] if len(parts) > 1 else subject


def describe(event: StoredEvent, with_conversation: bool = False) -> str:
    """`<seq> <time UTC> <actor id/kind/ip> [<conversation>] <type> <summary>`."""
    body = _body(event.data)
    conv = _subject_conversation(event.subject)
    if body is None:
        fields = [f"{event.seq:>7}", f"{'-':<20}", f"{'-':<30}", "?"]
        summary = f"unreadable event ({len(event.data)} bytes)"
    else:
        actor = body.get("actor")
        who = (
            "/".join(str(actor.get(k) or "-") for k in ("id", "kind", "ip"))
            if isinstance(actor, dict)
            else "-"
        )
        kind = str(body.get("type") or "?")
        fields = [f"{event.seq:>7}", f"{_utc(_event_time(body)):<20}", f"{who:<30}", f"{kind:<19}"]
        conv = str(body.get("conversation_id") or conv)
        summarize = SUMMARIES.get(kind)
        summary = summarize(body) if summarize else ""  # a newer event type: its name says it
    if with_conversation:
        fields.insert(3, conv)
    return _safe(" ".join([*fields, summary]).rstrip())


# ---------------------------------------------------------------------------- reading the log


@dataclass(frozen=True)
class Context:
    nc: NATS
    js: JetStreamContext
    history: History
    stopped: asyncio.Event  # set by SIGINT/SIGTERM


@dataclass(frozen=True)
class Snapshot:
    """The log as the command starts: its last position and how many events it reads."""

    end: int
    count: int


async def snapshot(ctx: Context, conversation_id: str | None) -> Snapshot:
    """One stream info: the stream's last sequence and the number of events up to it, of
    the whole log or of one conversation (per-subject counts under its filter)."""
    if conversation_id is None:
        info = await ctx.js.stream_info(STREAM_NAME)
        return Snapshot(info.state.last_seq, info.state.messages)
    if not is_safe_id(conversation_id):  # `*`, `a.b`... would match other conversations
        return Snapshot(0, 0)
    info = await ctx.js.stream_info(
        STREAM_NAME, subjects_filter=conversation_filter(conversation_id)
    )
    return Snapshot(info.state.last_seq, sum((info.state.subjects or {}).values()))


async def existing(ctx: Context, conversation_id: str) -> Snapshot:
    snap = await snapshot(ctx, conversation_id)
    if snap.count == 0:
        raise Failed(f"no conversation '{conversation_id}' in the log")
    return snap


async def scan(ctx: Context, conversation_id: str | None, end: int) -> AsyncIterator[StoredEvent]:
    """Events in log order up to position `end`, in pages of PAGE (one batched get each).

    Stops at `end` (the log's end when the command started) however fast others append.
    """
    after = 0
    while after < end:
        if ctx.stopped.is_set():  # the task's cancellation can be lost (see _run)
            raise asyncio.CancelledError
        page, _ = await ctx.history.page(conversation_id, after, PAGE)
        if not page:
            return
        for event in page:
            if event.seq > end:
                return
            yield event
        after = page[-1].seq


# ---------------------------------------------------------------------------- commands


async def history(ctx: Context, args: argparse.Namespace) -> int:
    conversation_id: str = args.conversation_id
    point: AsOf | None = args.as_of
    snap = await existing(ctx, conversation_id)
    async for event in scan(ctx, conversation_id, snap.end):
        if point is not None and point.beyond(event.seq, _body(event.data)):
            break
        print(describe(event))
    if point is not None:
        await print_state(ctx, conversation_id, point)
    return EXIT_OK


async def print_state(ctx: Context, conversation_id: str, point: AsOf) -> None:
    try:
        reader = await reader_as_of(ctx.history, conversation_id, seq=point.seq, time=point.time)
    except (StoreUnavailable, nats.errors.Error):
        raise
    except Exception as exc:  # e.g. an event type this version's schema does not know
        raise Failed(
            f"cannot rebuild the conversation as of {point}: the log holds an event this "
            f"version cannot fold ({type(exc).__name__})",
            EXIT_ERROR,
        ) from exc
    view = await reader.conversation(conversation_id)
    print()
    if view is None:
        print(f"as of {point}: the conversation did not exist yet")
        return
    if view.deleted:
        print(f"as of {point}: the conversation was deleted (at position {view.last_seq})")
        return
    print(_safe(f"as of {point} (last change at position {view.last_seq}):"))
    print(_safe(f"  metadata {_json(view.metadata)}"))
    items: list[dict[str, Any]] = []
    after = None
    while True:
        page = await reader.items(view, after, 100, "asc")
        items.extend(page.data)
        if not page.has_more or not page.data:
            break
        after = str(page.data[-1]["id"])
    print(f"  items ({len(items)}):")
    for item in items:
        print(_safe(f"    {item_summary(item)}"))


async def tail(ctx: Context, args: argparse.Namespace) -> int:
    conversation_id: str | None = args.conversation_id
    if conversation_id is not None:
        await existing(ctx, conversation_id)

    async def pump() -> None:
        async with contextlib.aclosing(ctx.history.follow(conversation_id, args.after)) as events:
            async for event in events:
                print(describe(event, with_conversation=conversation_id is None), flush=True)
                if ctx.stopped.is_set():
                    return

    what = f"conversation {conversation_id}" if conversation_id else "every conversation"
    print(f"following {what} after position {args.after}; Ctrl-C to stop", file=sys.stderr)
    follow = asyncio.create_task(pump())
    stopped = asyncio.create_task(ctx.stopped.wait())
    await asyncio.wait([follow, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in (follow, stopped):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopped
    try:
        await follow
    except asyncio.CancelledError:
        pass
    return EXIT_OK


def export_line(event: StoredEvent) -> str:
    body = _body(event.data)
    if body is None:  # kept, not dropped: an export is an audit copy
        record: dict[str, Any] = {
            "seq": event.seq,
            "subject": event.subject,
            "unreadable": event.data.decode("utf-8", "backslashreplace"),
        }
    else:
        record = {"seq": event.seq, **{k: v for k, v in body.items() if k != "seq"}}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


async def export(ctx: Context, args: argparse.Namespace) -> int:
    out: Path = args.out
    conversation_id: str | None = args.conversation
    snap = (
        await existing(ctx, conversation_id)
        if conversation_id is not None
        else await snapshot(ctx, None)
    )
    # Written next to the target and renamed at the end: FILE is complete or untouched.
    partial = out.with_name(out.name + ".partial")
    try:
        handle = partial.open("w", encoding="utf-8")
    except OSError as exc:
        raise Failed(f"cannot write {out}: {exc.strerror or exc}", EXIT_ERROR) from exc
    written = 0
    bar = tqdm(total=snap.count, unit="event", desc="export", file=sys.stderr)
    try:
        with handle:
            async for event in scan(ctx, conversation_id, snap.end):
                handle.write(export_line(event) + "\n")
                written += 1
                bar.update(1)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    print(f"exported {written} events to {out}")
    return EXIT_OK


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def verify(ctx: Context, args: argparse.Namespace) -> int:
    conversation_id: str | None = args.conversation_id
    snap = (
        await existing(ctx, conversation_id)
        if conversation_id is not None
        else await snapshot(ctx, None)
    )
    verifier = ChainVerifier()
    checked = 0
    conversations: set[str] = set()
    first: dict[str, Break] = {}
    async for event in scan(ctx, conversation_id, snap.end):
        checked += 1
        # Chains follow subjects, as the store does: a conversation's head is the last
        # message under conv.<id>.>, whatever the body says.
        conv = _subject_conversation(event.subject)
        conversations.add(conv)
        body = _body(event.data)
        named = body.get("conversation_id") if body is not None else None
        if isinstance(named, str) and named != conv:
            # Not fed to the chain it names: that one lives under another subject.
            first.setdefault(
                conv,
                Break(
                    conv,
                    event.seq,
                    f"names conversation {named} but is stored under {event.subject}",
                ),
            )
            continue
        found = verifier.feed(event.seq, event.data)
        if found is not None:
            first.setdefault(conv, Break(conv, found.seq, found.reason))
        elif body is not None and event.subject != conversation_subject(
            conv, str(body.get("type"))
        ):
            first.setdefault(
                conv,
                Break(conv, event.seq, f"a {body.get('type')} event stored under {event.subject}"),
            )
    counted = f"{_plural(checked, 'event')} in {_plural(len(conversations), 'conversation')}"
    if not first:
        print(f"verified {counted}: chains intact")
        return EXIT_OK
    for broken in sorted(first.values(), key=lambda b: b.seq):
        print(_safe(f"BROKEN {broken.conversation_id} at seq {broken.seq}: {broken.reason}"))
    print(f"checked {counted}: {_plural(len(first), 'chain')} broken")
    return EXIT_FAILED


# ---------------------------------------------------------------------------- running


HANDLERS: dict[str, Callable[[Context, argparse.Namespace], Awaitable[int]]] = {
    "history": history,
    "tail": tail,
    "export": export,
    "verify": verify,
    "status": status_command.run,
}


async def _connect(settings: Settings, name: str) -> NATS:
    """Connect or give up after request_timeout. nats-py retries an unreachable server
    forever on the first connect, logging a traceback per attempt: quiet that meanwhile."""
    client_log = logging.getLogger("nats.aio.client")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        return await asyncio.wait_for(
            connect(settings.nats_urls, name, timeout=settings.request_timeout),
            settings.request_timeout,
        )
    except Exception as exc:
        why = str(exc) or f"no connection within {settings.request_timeout:g}s"
        raise Failed(f"cannot reach NATS at {settings.nats_url}: {why}", EXIT_ERROR) from exc
    finally:
        client_log.setLevel(level)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    # SIGINT and SIGTERM stop a command: `tail` returns 0, the others end with 128 + the
    # signal and export removes its partial file. The flag backs up the cancel: on Python
    # 3.11, asyncio.wait_for (inside nats-py's next_msg) drops a cancellation that arrives
    # as its message does (CPython gh-86296), which happens all the time under load.
    task = asyncio.current_task()
    assert task is not None
    stopped = asyncio.Event()
    signals: list[int] = []

    def on_signal(signo: int) -> None:
        signals.append(signo)
        stopped.set()
        if args.command != "tail":
            task.cancel()

    loop = asyncio.get_running_loop()
    for signo in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signo, on_signal, signo)
    try:
        return await _run_connected(settings, args, stopped)
    except asyncio.CancelledError:
        if not signals:
            raise
        task.uncancel()
        return 128 + signals[0]


async def _run_connected(
    settings: Settings, args: argparse.Namespace, stopped: asyncio.Event
) -> int:
    nc = await _connect(settings, f"convstore-{args.command}")
    try:
        js = nc.jetstream(timeout=settings.request_timeout)
        try:
            await js.stream_info(STREAM_NAME)
        except NotFoundError:
            raise Failed(
                f"no event stream {STREAM_NAME} at {settings.nats_url}", EXIT_ERROR
            ) from None
        ctx = Context(nc, js, History(EventStore(nc, js, settings.request_timeout)), stopped)
        return await HANDLERS[args.command](ctx, args)
    except (StoreUnavailable, nats.errors.Error, TimeoutError) as exc:
        raise Failed(f"NATS: {str(exc) or type(exc).__name__}", EXIT_ERROR) from exc
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def run(args: argparse.Namespace) -> int:
    """Run one audit command; returns the process exit code."""
    settings = Settings(**({"nats_url": args.nats_url} if args.nats_url else {}))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.nats_urls:  # next to `convstore serve`: its embedded server
        url = embedded_url(settings.data_dir)
        if url is None:
            print(
                f"convstore {args.command}: --nats-url (or CONVSTORE_NATS_URL) needed, or a "
                f"`convstore serve` data dir ({settings.data_dir}; CONVSTORE_DATA_DIR)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        settings = settings.model_copy(update={"nats_url": url})
    try:
        return run_loop(_run(settings, args))
    except Failed as exc:
        print(_safe(f"convstore {args.command}: {exc}"), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # before the command's own handlers were in place
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `convstore history ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
