"""`rebuild` while the API keeps serving writes and reads."""

import asyncio

import httpx

from projections.active import current, meta_bucket
from projections.rebuild import fold_log, rebuild
from projections.store import BUCKET, MemoryViews
from projections.worker import run_projector
from tests.servers import api_process
from tests.test_projector import kv_snapshot, wait_caught_up


async def test_rebuild_under_concurrent_writes_matches_a_fresh_fold(store, fresh_nats, tmp_path):
    js = store.js
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector([fresh_nats], stop))
    api, url = api_process(fresh_nats, tmp_path / "api.log")
    failures: list[str] = []
    done = asyncio.Event()
    try:
        await asyncio.to_thread(api.wait_http, url, "/readyz")
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            convs = [(await http.post("/v1/conversations", json={})).json()["id"] for _ in range(4)]
            for conv in convs:  # some history for the rebuild to fold
                for n in range(20):
                    await http.post(
                        f"/v1/conversations/{conv}/items",
                        json={
                            "items": [{"type": "message", "role": "user", "content": f"seed {n}"}]
                        },
                    )

            async def writer(conv: str) -> None:
                n = 0
                while not done.is_set():
                    r = await http.post(
                        f"/v1/conversations/{conv}/items",
                        json={
                            "items": [{"type": "message", "role": "user", "content": f"live {n}"}]
                        },
                    )
                    item = r.json()["data"][0]["id"] if r.status_code == 200 else None
                    got = await http.get(f"/v1/conversations/{conv}/items/{item}")
                    if r.status_code != 200 or got.status_code != 200:
                        failures.append(f"{r.status_code} {got.status_code} {got.text[:200]}")
                    if n % 5 == 0:
                        await http.post(
                            f"/v1/conversations/{conv}", json={"metadata": {"n": str(n)}}
                        )
                    n += 1

            writers = [asyncio.create_task(writer(c)) for c in convs]
            await asyncio.sleep(0.5)
            last, generation = await rebuild(store)
            await asyncio.sleep(1.0)  # keep writing on the new generation
            done.set()
            await asyncio.gather(*writers)
            assert failures == [], failures[:5]
            assert last > 80 and generation.bucket != BUCKET
            assert await current(await meta_bucket(js)) == generation

            await wait_caught_up(js, store, generation.bucket)
            live = await kv_snapshot(js, generation.bucket)
            fresh = MemoryViews()
            await fold_log(store, fresh)
            assert live == fresh.data
            page = (
                await http.get(
                    f"/v1/conversations/{convs[0]}/items", params={"limit": 100, "order": "asc"}
                )
            ).json()
            assert [i["content"][0]["text"] for i in page["data"][:20]] == [
                f"seed {n}" for n in range(20)
            ]
        assert BUCKET not in [name async for name in _buckets(js)]  # old generation dropped
    finally:
        done.set()
        stop.set()
        await projector
        api.stop()


async def _buckets(js):
    for info in await js.streams_info():
        if info.config.name.startswith("KV_"):
            yield info.config.name.removeprefix("KV_")
