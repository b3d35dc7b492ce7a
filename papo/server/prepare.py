"""Makes configured services ready for papo: schema migrated, bucket created.

``papo dev`` and the test suite run this at start-up; production runs ``papo migrate up``
as a deploy step and provisions its bucket once.
"""

from __future__ import annotations

import logging

import asyncpg

from papo.persistence import migrate
from papo.persistence.s3 import S3Location, S3Storage
from papo.server.config import Settings

log = logging.getLogger("papo.prepare")


async def prepare_services(settings: Settings) -> None:
    """Bring the schema up to date and make sure the bucket exists."""
    if settings.urls.database:
        connection = await asyncpg.connect(settings.urls.database, timeout=10)
        try:
            applied = await migrate.migrate_up(connection)
        finally:
            await connection.close()
        if applied:
            log.info("applied migrations %s", ", ".join(f"{v:04d}" for v in applied))
    if settings.urls.s3:
        await S3Storage(
            S3Location(
                settings.urls.s3,
                settings.s3.bucket,
                settings.s3.region,
                settings.s3.access_key_id,
                settings.s3.secret_access_key,
            )
        ).ensure_bucket()
