"""Dashboard sessions: a signed cookie that never holds the API token, and CSRF tokens.

A session cookie reads ``v1.<expiry>.<nonce>.<mac>``:

* ``expiry``: epoch seconds after which it is refused (the cookie's ``Max-Age`` says the same to
  the browser; the server does not trust the browser to forget it);
* ``nonce``: 16 random bytes, so two sessions never share a CSRF token;
* ``mac``: HMAC-SHA256 over ``v1.<expiry>.<nonce>`` under the *session key*.

In token mode the session key is ``HMAC-SHA256(token, "heron dashboard session v1")``: the cookie
proves its holder once typed the token, without carrying it, and rotating the token (a deploy)
ends every session at once, since no cookie verifies under the new key. Without a token (open
mode, ``heron dev``) the key is random per process: the cookie then only carries the CSRF
secret. Nothing is stored server side, so a Lambda container that never saw the sign-in still
recognises the session; the cost is that signing out only clears the browser's copy (a copied
cookie stays good until it expires, at most :data:`SESSION_LIFETIME`).

The CSRF token of a session is ``HMAC-SHA256(key, "csrf." + nonce)``: each form carries it, and
a POST must send it back (compared in constant time) along with the cookie. A page on another
site can make the browser send neither: the cookie is ``SameSite=Strict`` and the site cannot
read the token from our pages.

Why the standard library and not ``itsdangerous``: the format above is a dozen lines of
``hmac``, binds the key to the token the way we need, and keeps the Lambda package free of one
more dependency; ``itsdangerous`` would sign the same thing with SHA-1 by default and bring a
serializer we do not need.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FLASH_COOKIE",
    "SESSION_COOKIE",
    "SESSION_LIFETIME",
    "Flash",
    "Session",
    "SessionKey",
]

#: Seconds a sign-in lasts (12 hours: a working day, then type the token again).
SESSION_LIFETIME = 12 * 3600
SESSION_COOKIE = "heron_session"
#: A one-shot message for the page a POST redirects to (POST/redirect/GET).
FLASH_COOKIE = "heron_flash"
FLASH_LIFETIME = 60

_VERSION = "v1"
_KEY_CONTEXT = b"heron dashboard session v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: Characters of a one-shot message kept in its cookie: escaped to ASCII JSON (up to 12 bytes a
#: character), base64 (x4/3) and signed, 250 characters stay under the 4,000 bytes read back.
FLASH_CHARS = 250


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: when it ends and the secret its CSRF token derives from."""

    expires: int
    nonce: str
    csrf: str


@dataclass(frozen=True, slots=True)
class Flash:
    """A message for the next page: ``kind`` is ``ok`` or ``error``."""

    kind: str
    text: str


class SessionKey:
    """Signs and verifies session cookies, CSRF tokens and flash messages under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_token(cls, token: str) -> SessionKey:
        """The key of every session signed in with ``token`` (never the token itself)."""
        return cls(hmac.new(token.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest())

    @classmethod
    def random(cls) -> SessionKey:
        """A key for this process only (open mode: sessions carry nothing but CSRF)."""
        return cls(secrets.token_bytes(32))

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode("ascii"), hashlib.sha256).digest())

    def new(self, now: float, lifetime: int = SESSION_LIFETIME) -> tuple[str, Session]:
        """A fresh session: its cookie value and what it verifies to."""
        expires = int(now) + lifetime
        nonce = _b64(secrets.token_bytes(16))
        body = f"{_VERSION}.{expires}.{nonce}"
        return f"{body}.{self._mac(body)}", self._session(expires, nonce)

    def _session(self, expires: int, nonce: str) -> Session:
        return Session(expires=expires, nonce=nonce, csrf=self._mac(f"csrf.{nonce}"))

    def verify(self, cookie: str | None, now: float) -> Session | None:
        """The session ``cookie`` stands for, or ``None``: missing, malformed, signed under
        another key (another token), or expired."""
        if not cookie or len(cookie) > 200 or not cookie.isascii():
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
            return None
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode("ascii"), self._mac(body).encode("ascii")):
            return None
        expires = int(parts[1])
        if expires <= now:
            return None
        return self._session(expires, parts[2])

    def check_csrf(self, session: Session, given: str | None) -> bool:
        """Whether ``given`` is ``session``'s CSRF token (constant time)."""
        if not given or not given.isascii():
            return False
        return hmac.compare_digest(given.encode("ascii"), session.csrf.encode("ascii"))

    def flash(self, kind: str, text: str) -> str:
        """The cookie value carrying a one-shot message (cut to :data:`FLASH_CHARS` characters,
        so that the cookie stays under the 4 KB a browser keeps)."""
        if len(text) > FLASH_CHARS:
            text = text[: FLASH_CHARS - 1] + "…"
        body = _b64(json.dumps({"k": kind, "t": text}, ensure_ascii=True).encode("ascii"))
        return f"{body}.{self._mac('flash.' + body)}"

    def read_flash(self, cookie: str | None) -> Flash | None:
        """The message in ``cookie``, if this key signed it."""
        if not cookie or len(cookie) > 4000 or not cookie.isascii() or "." not in cookie:
            return None
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode("ascii"), self._mac("flash." + body).encode()):
            return None
        try:
            data: Any = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(data, dict):
            return None
        kind, text = data.get("k"), data.get("t")
        if kind not in ("ok", "error") or not isinstance(text, str):
            return None
        return Flash(kind, text)


def same_token(given: str, token: str) -> bool:
    """Whether ``given`` is ``token``, in time that depends on neither (their digests are
    compared, so not even the length leaks)."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
        hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(),
    )
