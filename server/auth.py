"""JWT bearer authentication and key-prefix scopes.

Off unless configured: ``--jwt-secret`` (HS256) or ``--jwt-public-key FILE``
(RS256 or ES256, chosen by the key's type).  Only those algorithms are
accepted; ``exp`` is required, ``nbf`` and (when configured) ``iss`` and
``aud`` are checked.  Dates (``exp``, ``nbf``, ``iat``) must be JSON numbers,
and are checked with CLOCK_SKEW_S seconds of leeway for clocks that disagree.

Scopes come from the ``scope`` claim (space-separated, OAuth style) or a
``scopes`` claim (a list):

    read:<key>    read <key> and everything below it
    write:<key>   write <key> and everything below it
    read:*  write:*   every key
    admin         delete (and everything read:* and write:* allow)

Matching is by whole segments: ``read:_portal.job1`` covers ``_portal.job1``
and ``_portal.job1.stage`` but not ``_portal.job10``.  Listing a namespace
(``_portal``) needs read on it; the top level needs ``read:*``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sca_progress.engine.errors import Forbidden, Unauthorized

from .settings import Settings

#: Shortest --jwt-secret that draws no warning: HS256's key should be as long as its hash.
MIN_SECRET_BYTES = 32
#: Seconds by which a token's exp and nbf may be off (clocks of the issuer and
#: this server disagree): a token is refused CLOCK_SKEW_S seconds after exp.
CLOCK_SKEW_S = 5
log = logging.getLogger("sca_progress.auth")

#: How long an SSE ticket may wait to be used, in ms.
TICKET_TTL_MS = 60_000


@dataclass
class Grant:
    """What one verified token allows."""

    subject: str
    expires: float  # seconds since the epoch
    token_id: str  # for per-token rate limits
    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    admin: bool = False

    @staticmethod
    def _covers(prefixes: list[str], key: str) -> bool:
        return any(p == "*" or key == p or key.startswith(p + ".") for p in prefixes)

    def can_read(self, key: str) -> bool:
        return self.admin or self._covers(self.read, key)

    def can_write(self, key: str) -> bool:
        return self.admin or self._covers(self.write, key)

    def check_read(self, key: str) -> None:
        if not self.can_read(key):
            raise Forbidden(f"the token may not read {key!r}")

    def check_write(self, key: str) -> None:
        if not self.can_write(key):
            raise Forbidden(f"the token may not write {key!r}")

    def check_admin(self) -> None:
        if not self.admin:
            raise Forbidden("deleting needs the admin scope")

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes) -> "Grant":
        return cls(**orjson.loads(data))


#: The grant used when auth is off: everything is allowed.
OPEN = Grant(subject="anonymous", expires=float("inf"), token_id="anonymous", admin=True)


class Authorizer:
    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer or None
        self.audience = settings.jwt_audience or None
        self.key = None
        self.algorithms: list[str] = []
        if settings.jwt_secret and settings.jwt_public_key:
            raise SystemExit("give --jwt-secret or --jwt-public-key, not both")
        if settings.jwt_secret:
            self.key, self.algorithms = settings.jwt_secret, ["HS256"]
            if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
                log.warning("--jwt-secret is %d bytes: HS256 wants at least %d random bytes (RFC 7518); "
                            "a short secret can be guessed offline from any token",
                            len(settings.jwt_secret.encode()), MIN_SECRET_BYTES)
        elif settings.jwt_public_key:
            pem = Path(settings.jwt_public_key).read_bytes()
            self.key = serialization.load_pem_public_key(pem)
            if isinstance(self.key, rsa.RSAPublicKey):
                self.algorithms = ["RS256"]
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                self.algorithms = ["ES256"]
            else:
                raise SystemExit("--jwt-public-key: an RSA or EC (P-256) public key in PEM is needed")

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def verify(self, token: str | None) -> Grant:
        """The grant of a bearer token; raises Unauthorized with the reason."""
        if not self.enabled:
            return OPEN
        if not token:
            raise Unauthorized("a bearer token is required")
        try:
            claims = jwt.decode(token, self.key, algorithms=self.algorithms, issuer=self.issuer,
                                audience=self.audience, options={"require": ["exp"], "verify_aud": bool(self.audience)},
                                leeway=CLOCK_SKEW_S)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet (nbf)") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(f"the token's algorithm is not accepted (only {', '.join(self.algorithms)})") from None
        except jwt.InvalidTokenError as e:
            raise Unauthorized(f"invalid token: {e}") from None
        for claim in ("exp", "nbf", "iat"):
            # PyJWT takes a numeric string for a date; RFC 7519 says NumericDate: a JSON number.
            if claim in claims and (type(claims[claim]) not in (int, float) or not math.isfinite(claims[claim])):
                raise Unauthorized(f"invalid token: the {claim} claim must be a number of seconds "
                                   "since the epoch (a JSON number, not a string)")
        scopes = claims.get("scope", "")
        items = scopes.split() if isinstance(scopes, str) else []
        if isinstance(claims.get("scopes"), list):
            items += [s for s in claims["scopes"] if isinstance(s, str)]
        grant = Grant(subject=str(claims.get("sub", "")), expires=float(claims["exp"]),
                      token_id=str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest()[:24]))
        for item in items:
            kind, _, prefix = item.partition(":")
            if kind == "admin" and not prefix:
                grant.admin = True
            elif kind in ("read", "write") and prefix:
                getattr(grant, kind).append(prefix)
        return grant


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def new_ticket() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
