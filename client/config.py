"""Where to report: the service URL and token, from arguments or the environment.

``SCA_PROGRESS_URL`` names the service.  Either its base URL
(``http://host:8080``), or, as the spec's examples set it, a URL ending in
``/status`` or ``/status/<key>``; the key in the latter becomes the default
key of a reporter.  An ``amqp://`` or ``amqps://`` URL reports over AMQP
instead; ``?exchange=NAME`` in it names the exchange (default ``progress``).
``SCA_PROGRESS_TOKEN`` is sent as ``Authorization: Bearer`` over REST.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

URL_ENV = "SCA_PROGRESS_URL"
TOKEN_ENV = "SCA_PROGRESS_TOKEN"
#: Where ``sca-progress serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_EXCHANGE = "progress"


@dataclass(frozen=True)
class Target:
    """A parsed service URL."""

    scheme: str            # http, https, amqp or amqps
    url: str               # REST: the base URL (no /status); AMQP: the broker URL without our parameters
    key: str | None = None  # the key a /status/<key> URL named
    exchange: str = DEFAULT_EXCHANGE  # AMQP only

    @property
    def is_amqp(self) -> bool:
        return self.scheme in ("amqp", "amqps")


#: Why a URL was refused, when it names no service we can talk to.
SCHEMES_REASON = "must be http(s):// or amqp(s)://"


class BadUrl(ValueError):
    """A service URL that cannot be used: *url* as given, *reason* (``SCHEMES_REASON`` for a
    wrong or missing scheme), and *source*, where it came from (``url``, ``--url``,
    ``SCA_PROGRESS_URL``)."""

    def __init__(self, url: str, reason: str, source: str = "url") -> None:
        super().__init__(f"bad {source} {url!r}: {reason}")
        self.url, self.reason, self.source = url, reason, source

    def named(self, source: str) -> BadUrl:
        """The same problem, told as coming from *source*."""
        return BadUrl(self.url, self.reason, source)


def parse_url(url: str, exchange: str | None = None) -> Target:
    """Split *url* into what a transport needs; raises BadUrl (a ValueError) for other schemes."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "amqp", "amqps"):
        raise BadUrl(url, SCHEMES_REASON)
    if scheme in ("http", "https") and not parts.netloc:
        raise BadUrl(url, "no host")
    try:
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise BadUrl(url, "bad port") from None
    if scheme in ("amqp", "amqps"):
        query = parse_qsl(parts.query, keep_blank_values=True)
        from_url = [v for k, v in query if k == "exchange"]
        rest = urlencode([(k, v) for k, v in query if k != "exchange"])
        name = exchange or (from_url[-1] if from_url else "") or DEFAULT_EXCHANGE
        return Target(scheme, urlunsplit((scheme, parts.netloc, parts.path, rest, "")), exchange=name)
    path, key = parts.path.rstrip("/"), None
    segments = path.split("/")
    if "status" in segments:
        at = len(segments) - 1 - segments[::-1].index("status")
        rest = segments[at + 1:]
        if len(rest) <= 1:
            key = unquote(rest[0]) if rest and rest[0] else None
            path = "/".join(segments[:at])
    return Target(scheme, urlunsplit((scheme, parts.netloc, path, "", "")), key=key)


def resolve(url: str | None = None, token: str | None = None, exchange: str | None = None,
            environ=os.environ, url_source: str = "url") -> tuple[Target, str | None]:
    """The target and token: arguments first, then SCA_PROGRESS_URL / SCA_PROGRESS_TOKEN, then defaults.

    A URL that cannot be used raises BadUrl naming where it came from: *url_source*
    for the argument (``--url`` for the commands), SCA_PROGRESS_URL for the variable."""
    try:
        target = parse_url(url or environ.get(URL_ENV) or DEFAULT_URL, exchange)
    except BadUrl as e:
        raise e.named(url_source if url else URL_ENV) from None
    return target, token if token is not None else (environ.get(TOKEN_ENV) or None)
