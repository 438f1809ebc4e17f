"""autobahn's debug-log labels are formatted only when a message is written (server/patches/autobahn.py)."""

from __future__ import annotations

from server.patches.autobahn import lazy_autobahn_log_labels


def test_autobahn_builds_a_debug_log_label_only_when_the_message_is_written(monkeypatch):
    import click
    from autobahn import util
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol

    lazy_autobahn_log_labels()
    lazy_autobahn_log_labels()  # twice is harmless

    class Peer:
        def sendData(self):
            pass

    peer = Peer()
    expected = "{func} sent {n} bytes for {peer}".format(
        func=util.hltype(peer.sendData), n=util.hlval(42), peer=util.hlval("tcp:127.0.0.1:1", color="green")
    )
    styled = []
    real_style = click.style
    monkeypatch.setattr(click, "style", lambda *a, **k: styled.append(a) or real_style(*a, **k))
    for module in (protocol, twisted_websocket):
        labels = dict(func=module.hltype(peer.sendData), n=module.hlval(42), peer=module.hlval("tcp:127.0.0.1:1", color="green"))
        assert styled == []  # built, not formatted: a dropped debug message costs no colouring
        assert "{func} sent {n} bytes for {peer}".format(**labels) == expected
        assert styled
        styled.clear()


def test_autobahn_pretty_prints_a_new_sockets_options_only_when_the_debug_message_is_written():
    from pprint import pformat

    from autobahn.websocket import protocol

    from server.patches.autobahn import lazy_autobahn_options_dump

    lazy_autobahn_options_dump()

    class Option:
        reprs = 0

        def __repr__(self):
            Option.reprs += 1
            return "Option()"

    options = [("openHandshakeTimeout", Option(), "WebSocketServerFactory")]
    label = protocol.pformat(options)
    assert Option.reprs == 0  # built, not formatted: a dropped debug message costs no pretty-printing
    assert "\n{attrs}".format(attrs=label) == "\n" + pformat(options)
    assert Option.reprs > 0


def test_autobahns_timings_still_print_as_a_string():
    from pprint import pformat

    from autobahn.websocket import protocol

    from server.patches.autobahn import lazy_autobahn_options_dump

    lazy_autobahn_options_dump()
    timings = protocol.Timings()
    timings.track("onOpen")
    assert isinstance(str(timings), str)
    assert str(timings) == pformat(timings._timings)
