"""The object store: exported transcripts and score cards, as files or S3 objects.

A local folder by default; MinIO (or any S3 endpoint) when S3_ENDPOINT is set.
The minio client is synchronous, so calls run in a worker thread to keep the
event loop free.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Protocol

from minio import Minio


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...
    async def get(self, key: str) -> bytes: ...


class FolderStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a file

    async def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()


class S3Store:
    def __init__(self, client: Minio, bucket: str) -> None:
        self.client, self.bucket = client, bucket
        self._ready = False

    async def _ensure_bucket(self) -> None:
        if not self._ready:
            if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
                await asyncio.to_thread(self.client.make_bucket, self.bucket)
            self._ready = True

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._ensure_bucket()
        await asyncio.to_thread(
            self.client.put_object, self.bucket, key, io.BytesIO(data), len(data),
            content_type=content_type,
        )

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return await asyncio.to_thread(read)


def open_store(
    *, endpoint: str, access_key: str, secret_key: str, bucket: str, secure: bool, folder: Path
) -> ObjectStore:
    if not endpoint:
        return FolderStore(folder)
    return S3Store(Minio(endpoint, access_key, secret_key, secure=secure), bucket)
