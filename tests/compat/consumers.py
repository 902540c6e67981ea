"""A Channels websocket consumer that echoes and tells what its scope looked like."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from django_sent_otel.middleware import SCOPE_KEY


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        scope: dict[str, Any] = self.scope
        await self.send(
            text_data=json.dumps(
                {
                    "echo": text_data,
                    "type": scope["type"],
                    "path": scope["path"],
                    "tracked": SCOPE_KEY in scope,
                    "keys": sorted(k for k in scope if isinstance(k, str)),
                }
            )
        )
