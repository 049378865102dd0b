"""What never reaches a record, a message or stderr: DSN passwords and secrets in URL paths.

- ``describe_dsn(dsn)``: ``host:port/db`` of a URL (``postgresql://…``) or libpq key=value DSN.
- ``mask(text, *secrets)``: ``text`` with URL passwords (``scheme://user:***@``), ``password=***``
  style pairs (key=value DSNs, query strings) and the given secrets replaced.
- ``http_path(path, host)``: a request path without query or fragment, ids and secret-looking
  segments templated, and the paths of known webhook / bot-token services (Slack, Discord,
  Telegram, Teams, Zapier, IFTTT, Mattermost) plus the user's ``redact.http_paths`` templated.
"""
from __future__ import annotations

import fnmatch
import re
from urllib.parse import quote, unquote

__all__ = ["describe_dsn", "mask", "url_dsn", "keyword_dsn", "http_path", "configure",
           "path_template_problem", "KNOWN_HTTP_PATHS"]

# -- DSNs ----------------------------------------------------------------------------------
_KEYWORD = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s]*@")
_PAIR_SECRET = re.compile(
    r"(?i)\b((?:ssl)?password|passwd|pwd|secret|token|api_?key|access_?token)(\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|[^\s&'\";,]*)")


def keyword_dsn(dsn: str) -> dict | None:
    """The pairs of a libpq ``key=value`` DSN (``host=db port=5432 password='x y'``), else None."""
    text = (dsn or "").strip()
    if not text or "://" in text or "=" not in text:
        return None
    out, pos = {}, 0
    while pos < len(text):
        m = _KEYWORD.match(text, pos)
        if m is None or m.end() == pos:
            return None
        value = m.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[m.group(1).lower()] = value
        pos = m.end()
    return out


def url_dsn(dsn: str) -> str:
    """``dsn`` as a ``postgresql://`` URL (asyncpg reads only those); a URL is returned as it is."""
    pairs = keyword_dsn(dsn)
    if pairs is None:
        return dsn
    user, password = pairs.pop("user", None), pairs.pop("password", None)
    host, port = pairs.pop("host", None), pairs.pop("port", None)
    database = pairs.pop("dbname", None)
    auth = ""
    if user:
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    elif password:
        pairs["password"] = password
    netloc = auth
    if host and not host.startswith("/"):
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    elif host:
        pairs["host"] = host
        if port:
            pairs["port"] = port
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs.items())
    return f"postgresql://{netloc}/{quote(database or '', safe='')}" + (f"?{query}" if query else "")


def describe_dsn(dsn: str) -> str:
    """``host:port/db`` of a DSN — safe to print (no user, password or parameters)."""
    from urllib.parse import parse_qs, urlsplit
    try:
        u = urlsplit(url_dsn(dsn))
        if not u.scheme:
            return "<unparsable DSN>"
        q = parse_qs(u.query)
        host = (q.get("host") or [None])[-1] or (u.hostname or "localhost")
        port = (q.get("port") or [None])[-1] or u.port or 5432
        db = unquote(u.path.lstrip("/")) or (q.get("dbname") or [""])[-1] or "?"
        return f"{host}:{port}/{db}"
    except Exception:  # noqa: BLE001
        return "<unparsable DSN>"


def mask(text: str, *secrets: str) -> str:
    """``text`` with passwords in URLs and ``password=…`` pairs, and every given secret, masked."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        password = _password_of(secret)
        for form in {password, unquote(password or ""), quote(unquote(password or ""), safe="")}:
            if form and len(form) >= 3:
                text = text.replace(form, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _PAIR_SECRET.sub(r"\1\2***", text)


def _password_of(dsn):
    pairs = keyword_dsn(dsn)
    if pairs is not None:
        return pairs.get("password")
    m = _URL_PASSWORD.search(dsn)
    return m.group(0)[len(m.group(1)):-1] if m else None


# -- HTTP paths ----------------------------------------------------------------------------
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_MAX_PATH = 200
#: ``host/path`` templates of services whose URLs carry a secret in the path. ``{name}`` replaces
#: one segment (or the rest of a segment after a literal prefix, ``bot{token}``); ``*`` keeps one;
#: a host may start with ``*.``; a template without a host applies to every host.
KNOWN_HTTP_PATHS = (
    "hooks.slack.com/services/{team}/{channel}/{token}",
    "hooks.slack.com/workflows/{team}/{workflow}/{id}/{token}",
    "hooks.slack.com/triggers/{team}/{id}/{token}",
    "discord.com/api/webhooks/{id}/{token}", "discord.com/api/*/webhooks/{id}/{token}",
    "*.discord.com/api/webhooks/{id}/{token}", "*.discord.com/api/*/webhooks/{id}/{token}",
    "discordapp.com/api/webhooks/{id}/{token}", "discordapp.com/api/*/webhooks/{id}/{token}",
    "api.telegram.org/bot{token}", "api.telegram.org/file/bot{token}",
    "*.webhook.office.com/webhookb2/{id}/IncomingWebhook/{token}/{owner}",
    "outlook.office.com/webhook/{id}/IncomingWebhook/{token}/{owner}",
    "hooks.zapier.com/hooks/catch/{account}/{token}",
    "maker.ifttt.com/trigger/*/with/key/{key}", "maker.ifttt.com/trigger/*/json/with/key/{key}",
    "/hooks/{token}",
)
_TEMPLATE = re.compile(r"(?:(?P<host>(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+))?(?P<path>(?:/[^/?#\s]+)+)")
_SEGMENT = re.compile(r"[^{}*]*(?:\{[A-Za-z_][A-Za-z0-9_]*\})?|\*")


def path_template_problem(text):
    """Why ``text`` is not a ``redact.http_paths`` template, or None."""
    m = _TEMPLATE.fullmatch(text or "")
    if m is None:
        return (f"bad path template {text!r}: expected an optional host and a path, "
                f"e.g. 'api.example.com/v1/keys/{{key}}' or '/internal/{{secret}}'")
    for part in m.group("path").split("/")[1:]:
        if not _SEGMENT.fullmatch(part) or part == "":
            return (f"bad path template {text!r}: segment {part!r} may hold one {{name}} at its "
                    f"end, or be '*'")
    return None


class _Template:
    __slots__ = ("host", "segments")

    def __init__(self, text):
        m = _TEMPLATE.fullmatch(text)
        self.host = (m.group("host") or "").lower() or None
        self.segments = []
        for part in m.group("path").split("/")[1:]:
            if part == "*":
                self.segments.append(None)
            elif "{" in part:
                prefix = part[:part.index("{")]
                self.segments.append((prefix, part))
            else:
                self.segments.append((part, None))

    def apply(self, host, segments):
        """The templated segments when this template matches (a prefix of) the path, else None."""
        if self.host is not None and not fnmatch.fnmatchcase(host, self.host):
            return None
        if len(segments) < len(self.segments):
            return None
        out = []
        for want, have in zip(self.segments, segments):
            if want is None:
                out.append(have)
                continue
            literal, placeholder = want
            if placeholder is None:
                if have != literal:
                    return None
                out.append(have)
            elif have.startswith(literal) and len(have) > len(literal):
                out.append(placeholder)
            else:
                return None
        return out


_known = [_Template(t) for t in KNOWN_HTTP_PATHS]
_user: list = []


def configure(section: dict | None) -> None:
    """Take the ``redact:`` section of autoperf.yaml (``http_paths``: the user's templates)."""
    global _user
    _user = [_Template(t) for t in (section or {}).get("http_paths") or ()]


def _segment(segment: str) -> str:
    """``123`` -> ``{id}``; UUIDs, long hex, long mixed letters+digits, ``@``/``=``/``%`` -> a placeholder."""
    if not segment:
        return segment
    if segment.isdigit():
        return "{id}"
    if _UUID.fullmatch(segment):
        return "{uuid}"
    if "@" in segment or "=" in segment or "%" in segment:
        return "{value}"
    if _HEX.fullmatch(segment):
        return "{hex}"
    if len(segment) >= 16 and any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment):
        return "{token}"
    if len(segment) >= 32:
        return "{token}"
    return segment


def http_path(path: str, host: str | None = None) -> str:
    """The path without query/fragment, secrets and ids templated, at most 200 characters."""
    if not path:
        return "/"
    for sep in ("?", "#", ";"):
        cut = path.find(sep)
        if cut >= 0:
            path = path[:cut]
    segments = path.split("/")
    head, rest = segments[:1], segments[1:]
    host = (host or "").lower()
    for template in (*_user, *_known):
        done = template.apply(host, rest)
        if done is not None:
            rest = done + [_segment(s) for s in rest[len(done):]]
            break
    else:
        rest = [_segment(s) for s in rest]
    out = "/".join(head + rest)
    return out if len(out) <= _MAX_PATH else out[:_MAX_PATH - 3] + "..."
