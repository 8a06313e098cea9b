"""Bearer-token authentication for the HTTP collector.

A ``collector`` source lists the tokens it accepts (usually ``["${COLLECTOR_TOKEN}"]``).
Requests send ``Authorization: Bearer <token>``; the presented token is
compared with every configured token in constant time (SHA-256 digests
compared with :func:`hmac.compare_digest`, so neither the position of a match
nor a token's length shows in the response time).

* **No tokens configured: authentication is disabled.** Anyone who can reach
  the port may send events; the collector logs a warning at start-up and
  ``clickloop doctor`` reports it. This suits a collector bound to loopback or
  behind a gateway that authenticates.
* ``pixel_public: true`` lets ``GET /v1/p.gif`` through without a token
  (browsers cannot add headers to an ``<img>``); ``POST /v1/events`` still
  needs one.
* An empty token (``${COLLECTOR_TOKEN:-}`` with the variable unset) is a
  configuration error, never a way to switch authentication off by accident.

>>> from pydantic import SecretStr
>>> auth = CollectorAuth.from_tokens([SecretStr("s3cret")], pixel_public=True)
>>> auth.check("Bearer s3cret")
>>> auth.check(None, pixel=True)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from clickloop.config.infra import CollectorSourceConfig
from clickloop.errors import AuthError, ConfigError


@dataclass(frozen=True)
class CollectorAuth:
    """The tokens a collector accepts (as digests) and whether the pixel is public."""

    digests: tuple[bytes, ...]
    pixel_public: bool = False

    @classmethod
    def from_tokens(
        cls, tokens: Sequence[SecretStr], *, pixel_public: bool = False, where: str = "tokens"
    ) -> CollectorAuth:
        digests = []
        for i, token in enumerate(tokens):
            value = token.get_secret_value()
            if not value.strip():
                raise ConfigError(
                    f"{where}[{i}] is empty",
                    hint="set the environment variable it names, or remove the entry "
                    "(an empty list disables authentication)",
                )
            digests.append(_digest(value.encode()))
        return cls(tuple(digests), pixel_public)

    @classmethod
    def from_config(cls, source: CollectorSourceConfig, name: str = "") -> CollectorAuth:
        where = f"sources.{name}.tokens" if name else "tokens"
        return cls.from_tokens(source.tokens, pixel_public=source.pixel_public, where=where)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def check(self, authorization: str | None, *, pixel: bool = False) -> None:
        """Return if the request may pass, else raise :class:`AuthError` (HTTP 401)."""
        if not self.digests or (pixel and self.pixel_public):
            return
        if not authorization:
            raise AuthError(
                "missing bearer token",
                hint="send the header 'Authorization: Bearer <token>'",
            )
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthError(
                "the Authorization header is not 'Bearer <token>'",
                hint="send the header 'Authorization: Bearer <token>'",
            )
        given = _digest(presented.strip().encode("utf-8", "surrogateescape"))
        match = False
        for digest in self.digests:  # no early exit: every token is compared
            match |= hmac.compare_digest(digest, given)
        if not match:
            raise AuthError("invalid bearer token", hint="check the token the client sends")

    def describe(self) -> str:
        """``"2 token(s), public pixel"`` — never the tokens themselves."""
        if not self.digests:
            return "authentication disabled (no tokens)"
        return f"{len(self.digests)} token(s)" + (", public pixel" if self.pixel_public else "")


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()
