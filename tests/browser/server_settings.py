"""
Settings of the daphne processes the browser tests start: the production settings, plus the test
password hasher.

Users made by the tests get MD5 hashes (notifications_site.settings_test, for speed); the browser
tests sign in with a password, so the server must verify those hashes. With PBKDF2 alone every
sign-in would fail, and a PBKDF2 hash costs seconds on a busy 2-core machine.
"""

from notifications_site.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
