"""Tutorial password hashes: bcrypt over an HMAC-SHA256 of the password, so any length works.

bcrypt reads at most 72 bytes, and bcrypt 5 refuses longer input outright (a ValueError, which was
an HTTP 500 on the claim and change-password pages). A new hash is ``bcrypt(base64(HMAC-SHA256(
password)))`` stored with the prefix ``PREFIX``: 44 bytes of input whatever the password's length,
every byte of the password counting. Hashes stored before (plain bcrypt, no prefix) still open:
they are checked as they were, and ``needs_rehash`` says to store the new form after a login.
A password an admin set (``stackhub users reset-password``) is stored with ``ADMIN_PREFIX``: such a
name is not "claimed" (spawner.hub.accounts lets an admin make it staff without a take-over).

A name whose account an admin deleted while its home is kept holds ``RETIRED`` instead of a hash:
it never opens and cannot be claimed again (spawner.hub.tutorial_auth).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import bcrypt

PREFIX = b"$stackhub-sha256$"
# a password an admin set (a reset): the name is not an attendee's own until its owner changes it
ADMIN_PREFIX = b"$stackhub-sha256-admin$"
RETIRED = b"!retired"
# a fixed key: this is a length fold, not a pepper (the hashes' secret is bcrypt's cost and salt)
_KEY = b"stackhub tutorial password"


def _folded(password: str) -> bytes:
    return base64.b64encode(hmac.new(_KEY, password.encode("utf8"), hashlib.sha256).digest())


def hash_password(password: str, *, by_admin: bool = False) -> bytes:
    """The stored form of ``password`` (any length; runs bcrypt: call it off the event loop)."""
    return (ADMIN_PREFIX if by_admin else PREFIX) + bcrypt.hashpw(_folded(password), bcrypt.gensalt())


def owner_chosen(stored: bytes | None) -> bool:
    """Whether the name's password is one its holder chose (a claim or their own change; an old
    plain-bcrypt hash counts too), not an admin's reset or a retired name."""
    return stored is not None and stored != RETIRED and not stored.startswith(ADMIN_PREFIX)


def check_password(password: str, stored: bytes) -> bool:
    """Whether ``password`` opens ``stored`` (either form); never raises on odd input."""
    try:
        for prefix in (PREFIX, ADMIN_PREFIX):
            if stored.startswith(prefix):
                return bcrypt.checkpw(_folded(password), stored[len(prefix):])
        if stored == RETIRED:
            return False
        raw = password.encode("utf8")
        # an old plain-bcrypt hash: only passwords of at most 72 bytes could have made it
        return len(raw) <= 72 and bcrypt.checkpw(raw, stored)
    except ValueError:  # a damaged record opens nothing
        return False


def needs_rehash(stored: bytes) -> bool:
    return not stored.startswith((PREFIX, ADMIN_PREFIX)) and stored != RETIRED
