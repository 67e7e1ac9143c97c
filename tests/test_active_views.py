"""A request reads one views bucket, even when the pointer flips in the middle of it."""

import asyncio

from events.connection import connect
from events.schema import ConversationCreated, ItemAdded
from projections.active import ActiveViews, Generation, flip, meta_bucket
from projections.fold import Folder
from projections.reader import ViewReader
from projections.store import KVViews, open_bucket
from tests.test_projector import message


async def test_a_request_keeps_the_bucket_its_wait_was_satisfied_in(fresh_nats):
    """Until the projector notices a flip, the old bucket still moves on: a request that
    saw the conversation there must not look for its item in the new, lagging bucket."""
    nc = await connect([fresh_nats], "test")
    js = nc.jetstream()
    meta = await meta_bucket(js)
    conv = "conv_pinned"
    item = message("hello")
    created = ConversationCreated(conversation_id=conv, created_at=1, seq=1)
    added = ItemAdded(conversation_id=conv, item=item, seq=2)
    old, new = "views_old", "views_new"
    await Folder(KVViews(js, await open_bucket(js, old), old)).fold([created, added])
    await Folder(KVViews(js, await open_bucket(js, new), new)).fold([created])  # lagging
    await flip(meta, Generation(old, "p_old"))
    views = ActiveViews(js, poll=3600)  # refreshed by hand below
    await views.start()
    reader = ViewReader(views, wait_timeout=2)

    async def request() -> dict | None:
        await reader.conversation_at(conv, 2)  # satisfied in the old bucket
        await flip(meta, Generation(new, "p_new"))
        await views._refresh()  # the API notices the flip mid-request
        assert views.generation.bucket == new
        return await reader.item(conv, item["id"])

    assert await asyncio.create_task(request()) == item
    # a later request reads the new bucket
    assert await asyncio.create_task(reader.item(conv, item["id"])) is None
    await views.stop()
    await nc.close()
