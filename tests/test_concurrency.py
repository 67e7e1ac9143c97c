"""Concurrent writers and read-your-writes across API replicas."""

import asyncio

import httpx


async def test_50_concurrent_appends_read_your_writes(api_urls):
    a, b = api_urls
    async with httpx.AsyncClient(timeout=60) as http:
        conv = (await http.post(f"{a}/v1/conversations", json={})).json()["id"]

        async def writer(n: int) -> tuple[str, bool]:
            write, read = (a, b) if n % 2 else (b, a)
            r = await http.post(
                f"{write}/v1/conversations/{conv}/items",
                json={"items": [{"type": "message", "role": "user", "content": f"w{n}"}]},
            )
            assert r.status_code == 200, r.text
            item_id = r.json()["data"][0]["id"]
            # Another replica, right after the write's response: must see it.
            got = await http.get(f"{read}/v1/conversations/{conv}/items/{item_id}")
            page = await http.get(f"{read}/v1/conversations/{conv}/items", params={"limit": 100})
            visible = item_id in [i["id"] for i in page.json()["data"]]
            return item_id, got.status_code == 200 and visible

        results = await asyncio.gather(*(writer(n) for n in range(50)))
        assert all(seen for _, seen in results), "a write was not visible to a later read"
        written = {item_id for item_id, _ in results}
        assert len(written) == 50

        pages = [
            (
                await http.get(
                    f"{url}/v1/conversations/{conv}/items", params={"limit": 100, "order": "asc"}
                )
            ).json()
            for url in (a, b, a)
        ]
        ids = [i["id"] for i in pages[0]["data"]]
        assert len(ids) == 50 and set(ids) == written  # none lost, none duplicated
        assert all([i["id"] for i in p["data"]] == ids for p in pages)  # one stable order
        texts = sorted(i["content"][0]["text"] for i in pages[0]["data"])
        assert texts == sorted(f"w{n}" for n in range(50))


async def test_read_your_writes_metadata_and_delete(api_urls):
    a, b = api_urls
    async with httpx.AsyncClient(timeout=30) as http:
        conv = (await http.post(f"{a}/v1/conversations", json={})).json()["id"]
        for n in range(20):
            await http.post(f"{a}/v1/conversations/{conv}", json={"metadata": {"n": str(n)}})
            got = (await http.get(f"{b}/v1/conversations/{conv}")).json()
            assert "metadata" in got, got
            assert got["metadata"] == {"n": str(n)}
        await http.delete(f"{b}/v1/conversations/{conv}")
        assert (await http.get(f"{a}/v1/conversations/{conv}")).status_code == 404
        listed = (await http.get(f"{a}/v1/conversations", params={"limit": 100})).json()
        assert conv not in [c["id"] for c in listed["data"]]
