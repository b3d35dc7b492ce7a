"""Django Channels under uvicorn: a JSON consumer with groups on the in-memory layer."""

from __future__ import annotations

import sys
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000},
        }
    },
)
django.setup()

import uvicorn  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class BenchConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if content["op"] == "pub":
            await self.channel_layer.group_send(
                content["room"], {"type": "room.message", "data": content["data"]}
            )
        elif content["op"] == "join":
            await self.channel_layer.group_add(content["room"], self.channel_name)
            await self.send_json({"op": "joined"})

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["data"])


application = ProtocolTypeRouter({"websocket": URLRouter([path("", BenchConsumer.as_asgi())])})

if __name__ == "__main__":
    uvicorn.run(
        application,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        loop="uvloop",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )
