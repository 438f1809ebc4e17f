"""realtime.layers.compat: the layer starts only on the channels-redis releases its internals were checked against."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from realtime.layers import BatchingRedisChannelLayer, compat


@pytest.mark.parametrize("version", ["4.3.0", "4.3.7", "4.3.1.post1"])
def test_a_checked_release_is_accepted(version):
    compat.check_channels_redis(version)


@pytest.mark.parametrize("version", ["4.2.1", "4.4.0", "4.4.0b1", "5.0.0", "3.4.1", "main"])
def test_any_other_release_is_refused_with_what_to_do(version):
    with pytest.raises(ImproperlyConfigured, match=rf"channels-redis {version} is installed.*realtime/layers/compat.py"):
        compat.check_channels_redis(version)


def test_the_installed_release_is_a_checked_one():
    compat.check_channels_redis()


def test_the_layer_refuses_to_start_outside_the_range(monkeypatch):
    monkeypatch.setattr(compat, "installed_version", lambda: "4.4.0")
    with pytest.raises(ImproperlyConfigured, match="checked against channels-redis 4.3.x"):
        BatchingRedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
