"""The object store through the real minio client against an S3 endpoint (moto server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from server.store.objects import FolderStore, ObjectStore, open_store
from tests.support import free_port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def roundtrip(store: ObjectStore) -> None:
    async def run() -> None:
        await store.put("attempts/a1.json", b'{"total": 87.5}', "application/json")
        await store.put("attempts/a1.json", '{"total": 90, "名": "李"}'.encode(),
                        "application/json")
        assert await store.get("attempts/a1.json") == '{"total": 90, "名": "李"}'.encode()

    asyncio.run(run())


def test_s3_store_with_minio_client(s3_endpoint: str, tmp_path: Path) -> None:
    store = open_store(endpoint=s3_endpoint, access_key="test", secret_key="testtesttest",
                       bucket="clinic-arena", secure=False, folder=tmp_path)
    assert not isinstance(store, FolderStore)
    roundtrip(store)


def test_folder_store(tmp_path: Path) -> None:
    store = open_store(endpoint="", access_key="", secret_key="", bucket="", secure=False,
                       folder=tmp_path)
    roundtrip(store)
    assert (tmp_path / "attempts" / "a1.json").exists()
    with pytest.raises(ValueError):
        asyncio.run(store.put("../escape.json", b"{}", "application/json"))
