"""Credentials of a tracking URI, kept out of everything xaitk-exp writes or prints."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit


def redact_uri(uri: str) -> str:
    """The URI with any password (and token-like user info) replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None and "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    # a user name alone (``http://<token>@host``) is often the secret itself: hide it too
    netloc = f"{user}:***@{host}" if user and parts.password is not None else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, uri: str | None) -> str:
    """``text`` with the secret part of ``uri`` (password, or a lone user name) replaced by ``***``."""
    if not uri or "@" not in str(uri):
        return text
    parts = urlsplit(str(uri))
    text = text.replace(str(uri), redact_uri(str(uri)))
    userinfo = parts.netloc.rsplit("@", 1)[0]
    secret = parts.password if parts.password is not None else userinfo
    for variant in {userinfo, secret}:
        if variant and len(variant) >= 3:
            text = text.replace(f"{variant}@", "***@")
    if secret and len(secret) >= 3:
        text = text.replace(secret, "***")
    return text


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """Command-line overrides with any URI's credentials replaced (``tracking.uri=http://user:***@host``)."""
    out = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        # Hydra escapes ':' in multirun overrides (``http\\://user\\:pw@host``): unescape before parsing
        out.append(f"{key}{sep}{redact_uri(value.replace(chr(92), '').strip(chr(39) + chr(34)))}"
                   if sep and "@" in value else str(item))
    return out
