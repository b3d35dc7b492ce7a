"""Adapters to the outside world: PostgreSQL, MongoDB, Redis and S3.

Each module opens its client lazily, so a node whose backing service is down still
starts, reports the failure on ``/readyz`` and recovers when the service returns.
"""
