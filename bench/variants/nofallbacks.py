"""The service without the fallbacks' scheduler (issue 20): what scheduling Web Push and e-mail costs a send."""

from notifications_site.settings import *  # noqa: F401,F403
from notifications_site.settings import INBOX

INBOX["DELIVERY_BACKENDS"] = [b for b in INBOX["DELIVERY_BACKENDS"] if b != "inbox.fallback.FallbackScheduler"]
