"""The production channel layer, against the real Redis, keeping a list of what fan-out asked it to send."""

from __future__ import annotations

from realtime.layers import BatchingRedisChannelLayer

# Every group_send_many call of every RecordingLayer: a list of [(group, message), ...].
CALLS: list[list[tuple[str, dict]]] = []


class RecordingLayer(BatchingRedisChannelLayer):
    async def group_send_many(self, messages):
        CALLS.append(list(messages))
        return await super().group_send_many(messages)

    async def group_send(self, group, message):
        CALLS.append([(group, message)])
        return await super().group_send(group, message)
