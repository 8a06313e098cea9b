"""Parsing and normalisation of one URL: the reference every vectorised path agrees with.

Normalisation (what makes two spellings of the same page one string):

* scheme and host lower-cased, trailing dots of the host removed, credentials
  (``user:pass@``) dropped, default ports (``:80`` for http, ``:443`` for https) removed;
* path: percent-escapes of unreserved characters decoded (``%7E`` → ``~``), every
  other escape upper-cased (``%c3%a9`` → ``%C3%A9``), characters that must be escaped
  escaped (a space → ``%20``, ``é`` → ``%C3%A9``), a stray ``%`` escaped as ``%25``,
  ``.`` and ``..`` segments resolved, repeated slashes collapsed, the trailing slash
  removed (``/items/1/`` → ``/items/1``; the root stays ``/``);
* query: ``+`` and ``%20`` both read as a space, parameters decoded, sorted by name
  (the order of repeated names kept) and re-encoded one canonical way; tracking
  parameters (``utm_*``, ``gclid``, ``fbclid``, ``msclkid``, … and the project's
  ``urls.tracking_params``) are set apart from the meaningful ones;
* the fragment (``#…``) is dropped: browsers never send it to the server; so are
  session ids written into the path (``;jsessionid=…``).

>>> p = parse_url("HTTPS://Shop.Example.com:443/items/1/1234/?utm_source=x&b=2&a=1")
>>> p.normalized
'https://shop.example.com/items/1/1234?a=1&b=2'
>>> p.tracking
(('utm_source', 'x'),)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from clickloop.errors import InvalidInputError

#: Parameters that identify a campaign or a click, never the page. Any name starting
#: with ``utm_`` is tracking too. Extend per project with ``urls.tracking_params``.
TRACKING_PARAMS: Final[frozenset[str]] = frozenset(
    {
        "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "gad_source",  # Google Ads
        "fbclid", "igshid", "igsh",  # Meta
        "msclkid",  # Microsoft Ads
        "yclid", "ysclid",  # Yandex
        "twclid", "ttclid", "li_fat_id", "epik", "sccid", "rdt_cid",  # X, TikTok, LinkedIn, …
        "mc_cid", "mc_eid",  # Mailchimp
        "_hsenc", "_hsmi", "__hssc", "__hstc", "__hsfp", "hsctatracking",  # HubSpot
        "mkt_tok", "oly_anon_id", "oly_enc_id", "vero_id", "vero_conv", "wickedid",
        "_ga", "_gl", "_openstat", "s_cid", "cmpid", "at_medium", "at_campaign",
        "spm", "srsltid",
        "phpsessid", "jsessionid", "aspsessionid", "cfid", "cftoken",  # session ids
    }
)  # fmt: skip
TRACKING_PREFIXES: Final = ("utm_",)
DEFAULT_PORTS: Final = {"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# characters allowed unescaped in a normalised path (RFC 3986 pchar plus "/")
PATH_SAFE: Final = "-._~!$&'()*+,;=:@/"
_PATH_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + PATH_SAFE
)
# characters left unescaped in a normalised query name or value (besides unreserved)
QUERY_SAFE: Final = "-._~!$'()*,;:@/?"

# RFC 3986, appendix B (tolerant: any scheme; the authority must follow "//")
_URL: Final = re.compile(
    r"^([A-Za-z][A-Za-z0-9+.\-]*):(//([^/?#]*))([^?#]*)(?:\?([^#]*))?(?:#.*)?$"
)
_AUTHORITY: Final = re.compile(r"^(?:[^@]*@)?(\[[0-9A-Za-z:.%]+\]|[^:\[\]]*)(?::([0-9]*))?$")
_ESCAPE_OR_BAD: Final = re.compile(r"%[0-9A-Fa-f]{2}|%|[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]+")
_SLASHES: Final = re.compile(r"/{2,}")
_SESSION: Final = re.compile(r";(?:jsessionid|phpsessid|sid)=[^/;]*", re.I)
_WS: Final = " \t\r\n\x0b\x0c\x00"


def is_tracking(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """True when query parameter ``name`` only tracks a campaign or a click.

    >>> is_tracking("utm_source"), is_tracking("GCLID"), is_tracking("q")
    (True, True, False)
    """
    low = name.lower()
    return low in TRACKING_PARAMS or low in extra or low.startswith(TRACKING_PREFIXES)


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """One URL, parsed and normalised (see the module docstring for the rules)."""

    scheme: str
    host: str
    port: str | None  # None for the scheme's default port
    path: str  # normalised, percent-encoded canonically, starts with "/"
    query: tuple[tuple[str, str | None], ...]  # meaningful parameters, decoded, sorted
    tracking: tuple[tuple[str, str | None], ...]  # tracking parameters, decoded, as found

    @property
    def segments(self) -> tuple[str, ...]:
        """Path segments in their canonical encoded form (``()`` for ``/``)."""
        return () if self.path == "/" else tuple(self.path[1:].split("/"))

    @property
    def netloc(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def query_string(self) -> str:
        return encode_query(self.query)

    @property
    def normalized(self) -> str:
        """The canonical spelling: equal for every spelling of the same page."""
        q = self.query_string
        return f"{self.scheme}://{self.netloc}{self.path}" + (f"?{q}" if q else "")

    def param(self, name: str) -> str | None:
        """The first value of a meaningful query parameter (``""`` for ``?name``)."""
        for k, v in self.query:
            if k == name:
                return "" if v is None else v
        return None


def parse_url(url: str, *, tracking: Iterable[str] = ()) -> ParsedUrl:
    """Parse and normalise an absolute URL; raise :class:`InvalidInputError` if it is not one.

    ``tracking`` adds parameter names (case-insensitive) to :data:`TRACKING_PARAMS`.

    >>> parse_url("http://EXAMPLE.com:80/a/./b/../c//d/?q=red+shirt#top").normalized
    'http://example.com/a/c/d?q=red+shirt'
    """
    parsed = try_parse_url(url, _extra(tuple(tracking)))
    if parsed is None:
        shown = url if len(url) <= 200 else url[:200] + "…"
        raise InvalidInputError(
            f"not an absolute URL with a host: {shown!r}",
            hint="URLs look like https://host/path?query (scheme, '://', a host)",
        )
    return parsed


@functools.lru_cache(maxsize=64)
def _extra(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


def try_parse_url(url: str | None, extra: frozenset[str] = frozenset()) -> ParsedUrl | None:
    """Like :func:`parse_url` but ``None`` for anything that is not an absolute URL."""
    if not url:
        return None
    m = _URL.match(url.strip(_WS))
    if m is None:
        return None
    scheme = m.group(1).lower()
    host_port = parse_authority(m.group(3), scheme)
    if host_port is None:
        return None
    host, port = host_port
    path = normalize_path(m.group(4))
    meaningful, tracked = split_query(m.group(5), extra)
    return ParsedUrl(scheme, host, port, path, meaningful, tracked)


def normalize(url: str, *, tracking: Iterable[str] = ()) -> str:
    """The canonical spelling of ``url`` without its tracking parameters.

    >>> normalize("https://shop.example.com/search?q=red%20shirt&gclid=abc")
    'https://shop.example.com/search?q=red+shirt'
    """
    return parse_url(url, tracking=tracking).normalized


def parse_authority(authority: str, scheme: str) -> tuple[str, str | None] | None:
    """``(host, port)`` from ``[user[:pass]@]host[:port]``; ``None`` when malformed."""
    m = _AUTHORITY.match(authority)
    if m is None:
        return None
    host = normalize_host(m.group(1))
    if not host:
        return None
    port = m.group(2) or None
    if port is not None:
        if int(port) > 65535:
            return None
        port = str(int(port))
        if DEFAULT_PORTS.get(scheme) == port:
            port = None
    return host, port


def normalize_host(host: str) -> str:
    """Lower-case, without trailing dots (``Shop.Example.COM.`` → ``shop.example.com``)."""
    return host.lower().rstrip(".")


def normalize_path(path: str) -> str:
    """The canonical form of a URL path (see the module docstring).

    >>> normalize_path("/caf%c3%a9/%7Euser/a b/")
    '/caf%C3%A9/~user/a%20b'
    """
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    path = _ESCAPE_OR_BAD.sub(_fix_escape, path)
    if ";" in path:  # after decoding: ;jsession%69d= is a session id too
        path = _SESSION.sub("", path)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        path = remove_dot_segments(path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


def _fix_escape(m: re.Match[str]) -> str:
    text = m.group(0)
    if text == "%":
        return "%25"
    if text[0] == "%" and len(text) == 3:
        ch = chr(int(text[1:], 16))
        return ch if ch in _UNRESERVED else text.upper()
    return quote(text, safe="")


def remove_dot_segments(path: str) -> str:
    """Resolve ``.`` and ``..`` segments (RFC 3986, section 5.2.4)."""
    out: list[str] = []
    parts = path.split("/")
    for part in parts[1:]:
        if part == "..":
            if out:
                out.pop()
        elif part != ".":
            out.append(part)
    trailing = parts[-1] in (".", "..")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def split_query(
    query: str | None, extra: frozenset[str] = frozenset()
) -> tuple[tuple[tuple[str, str | None], ...], tuple[tuple[str, str | None], ...]]:
    """Decode ``a=1&b=x+y`` into ``(meaningful, tracking)`` pairs; meaningful ones sorted.

    A parameter without ``=`` has the value ``None``; ``+`` and ``%20`` are spaces.
    """
    if not query:
        return (), ()
    meaningful: list[tuple[str, str | None]] = []
    tracked: list[tuple[str, str | None]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        raw_name, eq, raw_value = piece.partition("=")
        name = decode_component(raw_name)
        if not name:
            continue
        value = decode_component(raw_value) if eq else None
        (tracked if is_tracking(name, extra) else meaningful).append((name, value))
    meaningful.sort(key=lambda kv: kv[0])
    return tuple(meaningful), tuple(tracked)


def decode_component(text: str) -> str:
    """A query name or value as text: ``+`` is a space, escapes decoded (bad UTF-8 → U+FFFD)."""
    if "%" not in text and "+" not in text:
        return text
    return unquote_plus(text, errors="replace")


def decode_segment(segment: str) -> str:
    """A path segment as text (``caf%C3%A9`` → ``café``; ``+`` stays a plus)."""
    return unquote(segment, errors="replace") if "%" in segment else segment


def encode_query(pairs: Iterable[tuple[str, str | None]]) -> str:
    """Serialise decoded pairs one canonical way (spaces as ``+``)."""
    out = []
    for name, value in pairs:
        n = quote_plus(name, safe=QUERY_SAFE)
        out.append(n if value is None else f"{n}={quote_plus(value, safe=QUERY_SAFE)}")
    return "&".join(out)


def encode_segment(text: str) -> str:
    """The canonical encoded form of one path segment given as text."""
    return normalize_path("/" + quote(text, safe=PATH_SAFE.replace("/", "")))[1:]


# -- registrable domain -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _extractor() -> object:
    import tldextract

    # Only the suffix list bundled with the package: no network fetch, no cache files.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


@functools.lru_cache(maxsize=65536)
def registrable_domain(host: str) -> str:
    """The registrable domain (eTLD+1) of a host, from tldextract's bundled suffix list.

    IP addresses and single-label hosts are their own domain.

    >>> registrable_domain("www.shop-two.co.uk")
    'shop-two.co.uk'
    """
    if not host:
        return host
    if host.startswith("[") or _IPV4.match(host):
        return host
    ext = _extractor()(host)  # type: ignore[operator]
    return ext.top_domain_under_public_suffix or host


_IPV4: Final = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
