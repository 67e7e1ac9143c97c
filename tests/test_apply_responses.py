"""Response views folded without a server: lifecycle, the conversation's queue of pending
responses, redelivery, deletion and erasure, in any batching."""

from typing import Any

import pytest

from events.ids import new_id, new_response_id, response_thread
from events.schema import (
    ConversationPurged,
    ResponseCancelled,
    ResponseCompleted,
    ResponseDeleted,
    ResponseFailed,
    ResponseInProgress,
    ResponseRequested,
)
from projections.reader import ViewReader
from projections.views import ConversationView, response_key
from tests.test_apply import added, created, fold_all, msg, random_sizes


def requested(thread: str, rid: str, seq: int, **kw: Any) -> ResponseRequested:
    return ResponseRequested(
        conversation_id=thread,
        response_id=rid,
        created_at=1_700_000_000,
        model="m",
        input=[msg(f"in_{seq}")],
        seq=seq,
        **kw,
    )


def in_progress(thread: str, rid: str, seq: int, attempt: int = 1) -> ResponseInProgress:
    return ResponseInProgress(
        conversation_id=thread,
        response_id=rid,
        attempt=attempt,
        worker="w",
        context_seq=seq - 1,
        seq=seq,
    )


def completed(thread: str, rid: str, seq: int) -> ResponseCompleted:
    return ResponseCompleted(
        conversation_id=thread, response_id=rid, output=[msg(f"out_{seq}")], completed_at=1, seq=seq
    )


def test_response_ids_name_their_thread():
    conv = new_id("conv")
    rid = new_response_id(conv)
    assert rid.startswith("resp_") and response_thread(rid) == conv
    alone = new_response_id(None)
    assert response_thread(alone) == alone
    assert len({new_response_id(conv) for _ in range(100)}) == 100


@pytest.mark.parametrize("seed", range(5))
async def test_lifecycle_and_pending_queue_in_any_batching(seed: int):
    c = new_id("conv")
    r1, r2 = new_response_id(c), new_response_id(c)
    log = [
        created(c, 1),
        requested(c, r1, 2),
        requested(c, r2, 3),
        in_progress(c, r1, 4),
        added(c, "msg_in", 5),
        added(c, "msg_out", 6),
        completed(c, r1, 7),
        in_progress(c, r2, 8),
        ResponseFailed(
            conversation_id=c, response_id=r2, error={"code": "x", "message": "y"}, seq=9
        ),
    ]
    reference = await fold_all(log)
    views = await fold_all(log, random_sizes(len(log), seed, 1, 3))
    assert views.data == reference.data
    reader = ViewReader(views)
    one = await reader.response(r1)
    two = await reader.response(r2)
    assert one is not None and two is not None
    assert (one.status, one.attempt, one.output[0]["id"], one.last_seq) == (
        "completed",
        1,
        "out_7",
        7,
    )
    assert (two.status, two.error) == ("failed", {"code": "x", "message": "y"})
    assert await reader.response_input(r1) == [msg("in_2")]
    conv = ConversationView(**views.data[f"conv.{c}"])
    assert conv.pending_responses == [] and conv.last_seq == 9 and conv.next_item_pos == 2


async def test_pending_queue_keeps_request_order():
    c = "conv_a"
    views = await fold_all([created(c, 1), requested(c, "resp_1", 2), requested(c, "resp_2", 3)])
    assert ConversationView(**views.data["conv.conv_a"]).pending_responses == ["resp_1", "resp_2"]
    views = await fold_all(
        [
            created(c, 1),
            requested(c, "resp_1", 2),
            requested(c, "resp_2", 3),
            ResponseCancelled(conversation_id=c, response_id="resp_1", seq=4),
        ]
    )
    assert ConversationView(**views.data["conv.conv_a"]).pending_responses == ["resp_2"]


async def test_terminal_is_final_and_redelivery_changes_nothing():
    t = "resp_x"
    log = [
        requested(t, t, 1),
        in_progress(t, t, 2),
        ResponseCancelled(conversation_id=t, response_id=t, seq=3),
        completed(t, t, 4),  # a late outcome after a cancel does not resurrect it
    ]
    views = await fold_all([*log, *log[:2]], [4, 2])
    view = await ViewReader(views).response(t)
    assert view is not None and view.status == "cancelled" and view.output == []
    assert view.last_seq == 4


async def test_delete_and_erasure_remove_response_views():
    t = "resp_x"
    views = await fold_all(
        [requested(t, t, 1), ResponseDeleted(conversation_id=t, response_id=t, seq=2)]
    )
    assert views.data == {"checkpoint": {"seq": 2}}
    c = "conv_a"
    views = await fold_all(
        [
            created(c, 1),
            requested(c, "resp_1", 2),
            requested("resp_y", "resp_y", 3),
            ConversationPurged(conversation_id=c, purged_events=2, seq=4),
            ConversationPurged(conversation_id="resp_y", purged_events=1, seq=5),
        ]
    )
    assert not [k for k in views.data if k.startswith("resp.")]
    assert response_key(c, "resp_1") not in views.data
