"""Shared fixtures: one real nats-server per session, a projector and two API replicas."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from events.connection import connect
from events.store import EventStore, ensure_stream
from tests.fake_upstream import fake_upstream
from tests.servers import (
    SECURE_KEYS,
    Service,
    api_process,
    model_map,
    nats_server,
    secure_api_process,
)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def upstream_url() -> Iterator[str]:
    """A fake OpenAI-compatible model server (tests/fake_upstream.py)."""
    with fake_upstream() as url:
        yield url


@pytest.fixture(scope="session")
def api_urls(
    nats_url: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two stateless API replicas, one projector and two model workers, as processes.

    Models named `fake-*` go to the fake upstream, every other model to `echo`."""
    logs: Path = tmp_path_factory.mktemp("logs")
    projector = Service(["projector", "--nats-url", nats_url], logs / "projector.log").start()
    env = {"CONVSTORE_MODELS": model_map(upstream_url)}
    workers = [
        Service(["worker", "--nats-url", nats_url], logs / f"worker{i}.log", env).start()
        for i in range(2)
    ]
    apis = [api_process(nats_url, logs / f"api{i}.log") for i in range(2)]
    try:
        for service, url in apis:
            service.wait_http(url, "/readyz")
        yield [url for _, url in apis]
    finally:
        for service in [*(s for s, _ in apis), *workers, projector]:
            service.stop()


@pytest.fixture(scope="session")
def api_url(api_urls: list[str]) -> str:
    return api_urls[0]


@pytest.fixture(scope="session")
def secure_url(
    nats_url: str, api_urls: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An API replica with API keys (tests.servers.SECURE_KEYS) and small limits, on the
    session's NATS and projector. The other fixtures' replicas run in open mode."""
    service, url = secure_api_process(nats_url, tmp_path_factory.mktemp("secure"))
    try:
        service.wait_http(url, "/readyz")
        yield url
    finally:
        service.stop()


def secure_client(url: str, who: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=SECURE_KEYS[who]["key"], max_retries=0, timeout=30)


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def client(api_url: str) -> OpenAI:
    return _client(api_url)


@pytest.fixture(scope="session")
def client2(api_urls: list[str]) -> OpenAI:
    """A client of the other API replica."""
    return _client(api_urls[1])


@pytest.fixture
async def aclient(api_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{api_url}/v1", api_key="test", max_retries=0) as c:
        yield c


@pytest.fixture(scope="session")
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as c:
        yield c


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[str]:
    """A server of a test's own, for tests that need an empty log."""
    with nats_server(tmp_path / "nats") as url:
        yield url


@pytest.fixture
async def store(fresh_nats: str) -> AsyncIterator[EventStore]:
    nc = await connect([fresh_nats], "test")
    js = nc.jetstream()
    await ensure_stream(js)
    yield EventStore(nc, js)
    await nc.close()
