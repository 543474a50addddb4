"""URLs as they may be shown or stored: without passwords or tokens.

A mirror URL can carry secrets: ``https://user:password@host/...`` or a signed link
(``?X-Amz-Signature=...``, ``?token=...``). Requests use the real URL; everything a person
or a file sees (errors, progress lines, ``record.json``, ``pin.json``, an essence's
metadata, ``--list --json``) goes through :func:`redact_url`. Only query values whose key
looks secret are masked (:func:`is_secret_key`): public registry links such as
``https://drive.usercontent.google.com/download?id=...&export=download`` must stay usable
when shown, since people copy them to fetch a file by hand.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "***"
_USERINFO = re.compile(r"(?<=://)[^/\s@'\"]+@")
_QUERY_VALUE = re.compile(r"(?<=[?&])([^=&#\s'\"]+)=[^&#\s'\")]+")
_SECRET_KEYS = frozenset({
    "token", "access_token", "sig", "signature", "key", "apikey", "api_key", "password", "pass",
    "secret", "auth", "credential", "credentials", "session",
})
# also caught inside longer names (refresh_token, client_secret, X-Goog-Signature, ...)
_SECRET_PARTS = ("token", "secret", "passw", "signature", "credential", "apikey", "api_key")
_SECRET_PREFIXES = ("x-amz-", "x-goog-")


def is_secret_key(key: str) -> bool:
    """Whether a query parameter named ``key`` (case-insensitive, percent-decoded) may carry a
    secret: a known name, one containing token/secret/password/signature/credential/apikey,
    or a cloud signing parameter (``X-Amz-*``, ``X-Goog-*``)."""
    key = unquote_plus(key).strip().lower()
    return (key in _SECRET_KEYS or key.startswith(_SECRET_PREFIXES)
            or any(part in key for part in _SECRET_PARTS))


def _redact_item(item: str) -> str:
    if "=" not in item:
        return MASK  # a bare item may be the token itself (``?<token>``): no key says it is not
    key = item.split("=", 1)[0]
    return f"{key}={MASK}" if is_secret_key(key) else item


def redact_url(url: str) -> str:
    """``url`` with its userinfo replaced by ``***`` and each secret-looking query value
    (:func:`is_secret_key`) or bare query item by ``***``; the fragment is dropped.
    Idempotent; text that is not a URL with a host is returned as is."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:  # e.g. a port that is not a number: show nothing after the scheme
        return f"{url.split(':', 1)[0]}://{MASK}" if "://" in url else url
    if not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        shown = host or ""
        if ":" in shown:  # an IPv6 literal
            shown = f"[{shown}]"
        netloc = f"{MASK}@{shown}{f':{port}' if port is not None else ''}"
    query = "&".join(_redact_item(item) for item in parts.query.split("&") if item) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_in(text: str, url: str) -> str:
    """``text`` (say, a library's error message) with every secret of ``url`` masked: the
    whole URL, its password and its query string wherever they appear."""
    redacted = redact_url(url)
    text = text.replace(url, redacted)
    try:
        parts = urlsplit(url)
        password, user = parts.password, parts.username
    except ValueError:
        return text
    if password:
        text = text.replace(password, MASK)
    elif user and len(user) >= 8:  # a token given as the user name (https://TOKEN@host)
        text = text.replace(user, MASK)
    if parts.query:
        text = text.replace(parts.query, urlsplit(redacted).query)
    # a redirect target (a signed CDN link, say) may be quoted too
    text = _USERINFO.sub(f"{MASK}@", text)
    return _QUERY_VALUE.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret_key(m.group(1)) else m.group(0), text)


def host_of(url: str) -> str:
    """``host[:port]`` of ``url``, never its userinfo."""
    return redact_url(url).split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
