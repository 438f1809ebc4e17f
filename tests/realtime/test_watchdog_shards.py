"""
Two Redis shards (``REDIS_URLS``): a lost shard closes only the sockets it concerns, those whose
group lives on it, or every socket of the process when it holds the process' receive key. Each test
has its own two redis-servers, and kills one like a crash or flushes it.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from channels.layers import channel_layers, get_channel_layer

from realtime import publisher

from .conftest import PrivateRedis, build_application

pytestmark = pytest.mark.django_db(transaction=True)

CHECK_SECONDS = 0.2
WITHIN_A_FEW_CHECKS = 10 * CHECK_SECONDS
USERS_PER_SHARD = 2


@pytest.fixture
def two_shards(settings, tmp_path):
    """The production layer over two private redis-servers, as notifications_site/settings/realtime.py builds it from REDIS_URLS."""
    shards = []
    for index in range(2):
        workdir = tmp_path / f"shard{index}"
        workdir.mkdir()
        shards.append(PrivateRedis(workdir).start())
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": shard.url, "socket_timeout": 1.0, "socket_connect_timeout": 1.0} for shard in shards],
                "prefix": f"test-{uuid.uuid4().hex[:8]}",
            },
        }
    }
    settings.REALTIME = {**settings.REALTIME, "SEND_TIMEOUT": 1.0, "LAYER_CHECK_SECONDS": CHECK_SECONDS}
    channel_layers.backends.clear()
    # The application's import runs django.setup(), which configures logging and so drops the
    # handler that captures the test's log records: import it before the test starts.
    build_application()
    yield shards
    channel_layers.backends.clear()
    for shard in shards:
        shard.stop()


@pytest.fixture
def users_by_shard(two_shards, make_user) -> dict[int, list]:
    """USERS_PER_SHARD users whose group lives on each shard."""
    layer = get_channel_layer()
    found: dict[int, list] = {0: [], 1: []}
    while min(map(len, found.values())) < USERS_PER_SHARD:
        user = make_user()
        on = found[layer.consistent_hash(publisher.group_for_user(user.pk))]
        if len(on) < USERS_PER_SHARD:
            on.append(user)
    return found


async def process_key_shard() -> int:
    """The shard of this process' receive key, which every socket of the process reads through."""
    layer = get_channel_layer()
    return layer.consistent_hash(layer.non_local_name(await layer.new_channel()))


def lose(shard: PrivateRedis, how: str) -> None:
    if how == "killed":
        shard.stop()
    else:
        client = shard.client()
        client.flushall()  # the shard's own private redis-server
        client.close()


async def synced_sockets(socket_factory, users) -> list:
    sockets = []
    for user in users:
        sock = await socket_factory(user)
        await sock.until_sync_done()
        sockets.append(sock)
    return sockets


@pytest.mark.parametrize("how", ["killed", "flushed"])
async def test_a_lost_shard_closes_only_the_sockets_whose_group_lives_on_it(two_shards, users_by_shard, socket_factory, send, caplog, how):
    kept = await process_key_shard()
    lost = 1 - kept
    doomed = await synced_sockets(socket_factory, users_by_shard[lost])
    spared = await synced_sockets(socket_factory, users_by_shard[kept])

    with caplog.at_level(logging.WARNING, logger="realtime.watchdog"):
        lose(two_shards[lost], how)
        for sock in doomed:
            assert await sock.close_code(timeout=WITHIN_A_FEW_CHECKS) == 1012
        for sock in spared:
            assert await sock.silent(3 * CHECK_SECONDS), "a socket whose group and process key are on the healthy shard stays open"

    created = await send(*users_by_shard[lost], *users_by_shard[kept], title="after the loss")
    ids = {n.recipient_id: n.id for n in created}
    for sock, user in zip(spared, users_by_shard[kept]):
        frame = await sock.frame()
        assert frame["type"] == "notification.created"
        assert frame["notification"]["id"] == ids[user.pk]

    closing = [r.getMessage() for r in caplog.records if r.name == "realtime.watchdog"]
    assert len(closing) == 1, closing
    assert closing[0].startswith(f"closing {len(doomed)} of {len(doomed) + len(spared)} socket(s) with 1012, "
                                 f"those whose group or process key is on shard {lost} of 2: shard {lost}: the channel layer ")


@pytest.mark.parametrize("how", ["killed", "flushed"])
async def test_losing_the_shard_of_the_process_key_closes_every_socket_of_the_process(two_shards, users_by_shard, socket_factory, how):
    lost = await process_key_shard()
    sockets = await synced_sockets(socket_factory, users_by_shard[0] + users_by_shard[1])

    lose(two_shards[lost], how)
    for sock in sockets:
        assert await sock.close_code(timeout=WITHIN_A_FEW_CHECKS) == 1012
