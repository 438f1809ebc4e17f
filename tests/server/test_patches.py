"""Every third-party patch is applied once at startup, and only inside its library's version range (server/patches)."""

from __future__ import annotations

import logging
from importlib import metadata

import pytest

from server import patches
from server.patches import PATCHES, Patch, in_range


def under_uvicorn():
    """What a uvicorn process has imported when Django starts (the uvicorn patches wait for it), and the patches then."""
    import uvicorn.config  # noqa: F401

    patches.apply()


def patched_attributes():
    """Every attribute the patches replace, as it is now."""
    under_uvicorn()
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol
    from daphne.http_protocol import WebRequest
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    from twisted.internet import tcp
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Http
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as Sansio

    return [
        Sansio.send, Sansio.keepalive_timeout, Sansio.handle_close, Sansio.handle_parser_exception, Sansio.data_received,
        Sansio.shutdown,
        Http.connection_made, Http.on_message_begin, Http.on_headers_complete, Http.connection_lost,
        WebSocketProtocol.serverClose, WebSocketFactory.__init__, WebRequest.__init__, tcp.Connection.write,
        protocol.hltype, protocol.hlval, twisted_websocket.hltype, twisted_websocket.hlval, WebSocketProtocol.serverSend,
        WebSocketProtocol.onPing, WebRequest.gotLength, WebRequest.handleContentChunk, WebRequest.requestReceived,
        WebRequest.check_timeouts, protocol.pformat, protocol.Timings.__str__,
    ]


def test_every_patch_is_applied_at_startup_inside_its_range():
    # ServerConfig.ready() ran when pytest-django set Django up; uvicorn's patches wait for uvicorn.
    under_uvicorn()
    assert sorted(p.name for p in patches.applied() if p in PATCHES) == sorted(p.name for p in PATCHES)
    for p in PATCHES:
        for library, versions in ((p.library, p.versions), *p.also):
            assert in_range(metadata.version(library), versions), (p.name, library)


def test_each_patch_says_what_it_patches_and_why():
    assert len({p.name for p in PATCHES}) == len(PATCHES) == 16
    for p in PATCHES:
        assert p.name == p.function.__name__
        assert p.library in {"daphne", "Twisted", "autobahn", "uvicorn"}
        assert p.reason and p.versions.startswith(">=")


def test_applying_twice_patches_nothing_twice():
    before = patched_attributes()
    assert patches.apply() == []
    for p in PATCHES:
        assert p() is True  # calling one applies it once, too
    assert patched_attributes() == before


def test_a_patch_outside_its_range_is_not_applied_and_says_so(caplog):
    called = []
    stale = Patch("stale_probe", "daphne", ">=0.1,<0.2", "a probe of the range check", lambda: called.append(True))
    with caplog.at_level(logging.WARNING, logger="server.patches"):
        assert patches.apply([stale]) == []
        assert patches.apply([stale]) == []  # said once, not at every call
    assert called == []
    assert stale not in patches.applied()
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "stale_probe" in message
    assert metadata.version("daphne") in message
    assert ">=0.1,<0.2" in message


def test_a_patch_is_not_applied_when_a_library_it_also_relies_on_is_outside_its_range(caplog):
    called = []
    stale = Patch(
        "also_probe", "daphne", ">=0,<1000", "a probe", lambda: called.append(True), also=(("autobahn", ">=0.1,<0.2"),)
    )
    with caplog.at_level(logging.WARNING, logger="server.patches"):
        assert patches.apply([stale]) == []
    assert called == []
    assert "also_probe" in caplog.text and "autobahn" in caplog.text


def test_a_library_that_is_not_installed_is_skipped_quietly(caplog):
    called = []
    absent = Patch("absent_probe", "no-such-distribution-here", ">=1.0,<2.0", "a probe", lambda: called.append(True))
    with caplog.at_level(logging.DEBUG, logger="server.patches"):
        assert patches.apply([absent]) == []
    assert called == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_patch_with_nothing_to_patch_yet_is_tried_again_later():
    calls = []
    later = Patch("later_probe", "daphne", ">=0,<1000", "a probe", lambda: calls.append(True) or len(calls) > 1)
    assert patches.apply([later]) == []
    assert patches.apply([later]) == [later]
    assert patches.apply([later]) == []
    assert calls == [True, True]


@pytest.mark.parametrize(
    "version, versions, inside",
    [
        ("4.2.3", ">=4.2,<4.3", True),
        ("4.2", ">=4.2,<4.3", True),
        ("4.3.0", ">=4.2,<4.3", False),
        ("4.1.9", ">=4.2,<4.3", False),
        ("4.3.0rc1", ">=4.2,<4.3", False),
        ("26.10.2", ">=26.10,<26.11", True),
        ("26.9.0", ">=26.10,<26.11", False),
    ],
)
def test_a_range_includes_its_lower_bound_and_not_its_upper(version, versions, inside):
    assert in_range(version, versions) is inside


def test_a_range_must_be_a_lower_and_an_upper_bound():
    with pytest.raises(ValueError):
        in_range("4.2.3", "~=4.2")
