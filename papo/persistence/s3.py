"""S3 access through aioboto3, for any S3-compatible server (AWS, MinIO, moto)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3
from botocore.config import Config


@dataclass(frozen=True, slots=True)
class S3Location:
    endpoint_url: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str


class S3Storage:
    """One aioboto3 session; clients are opened per operation, as aioboto3 intends."""

    def __init__(self, location: S3Location, *, timeout: float = 5.0) -> None:
        self.location = location
        self._session = aioboto3.Session(
            aws_access_key_id=location.access_key_id,
            aws_secret_access_key=location.secret_access_key,
            region_name=location.region,
        )
        self._config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        )

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        async with self._session.client(
            "s3", endpoint_url=self.location.endpoint_url, config=self._config
        ) as client:
            yield client

    async def ensure_bucket(self) -> None:
        async with self.client() as client:
            try:
                await client.head_bucket(Bucket=self.location.bucket)
            except client.exceptions.ClientError:
                await client.create_bucket(Bucket=self.location.bucket)

    async def ping(self) -> None:
        async with self.client() as client:
            await client.head_bucket(Bucket=self.location.bucket)
