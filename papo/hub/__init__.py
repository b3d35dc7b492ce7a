"""The real-time core: connections, rooms, DMs, presence, typing and fan-out.

The hub speaks to the outside only through its ports (``Broker``, ``Presence``,
``History``, ``RoomStore``), each a small Protocol in its own module with an in-memory
adapter beside it. It knows nothing about HTTP, PostgreSQL, MongoDB or Redis.
"""
