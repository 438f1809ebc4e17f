"""
Inbox: durable notifications, pushed in real time.

``from inbox import notify`` is the Python API of a host project (inbox/services/notify.py). The names
below are given lazily (PEP 562's module ``__getattr__``): importing ``inbox`` imports no model, so
settings, ``INSTALLED_APPS`` and the app registry can name it before Django is set up.
"""

from __future__ import annotations

from importlib import import_module

# Public name -> the module that defines it.
_LAZY = {
    "notify": "inbox.services.notify",
    "NotificationInvalid": "inbox.services.notify",
    "UnknownRecipients": "inbox.exceptions",
    "IdempotencyConflict": "inbox.exceptions",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inbox' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
