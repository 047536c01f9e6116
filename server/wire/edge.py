"""The HTTP edge: what every request passes before any route runs.

`Edge` is one ASGI middleware, outermost in the app, so its order is the order below:

1. the request body is read here, counted as it arrives, and refused with 413 past
   `max_body_bytes` (a Content-Length that says so is refused before a byte is read),
   so no route and no authentication ever sees an oversized body;
2. a bearer token is verified (signature, expiry, revocation: server/tokens.py) and the
   outcome left in the scope, where `access.require` reads it: revocation is checked on
   every request, and routes stay synchronous about who is asking;
3. every response gets the security headers (CSP, X-Frame-Options and friends).

WebSocket handshakes pass through untouched here; the hub checks their Origin itself.
`redact_access_log` keeps tokens and join codes in query strings out of access logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from arena.errors import ArenaError, PayloadTooLarge
from server import metrics
from server.sessions.context import Context
from server.wire import errors
from server.wire.access import AUTH_SCOPE_KEY, bearer_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The pages load only their own modules and styles (no inline script or style markup) and
# talk only to their own origin; nothing may frame them (clickjacking a judge's override),
# and a link (a big-screen URL carries its token) never leaks through Referer.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; connect-src 'self'"
)
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_FIXED_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _csp(scope: Scope) -> bytes:
    # Older Safari (phones!) does not count ws:/wss: to the same host as 'self': name it.
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
    if not _HOST.match(host):
        return _CSP.encode()
    return f"{_CSP} ws://{host} wss://{host}".encode()


class Edge:
    """Body limit, token verification and security headers for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        res: Context = scope["app"].state.context
        csp = _csp(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _FIXED_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                message["headers"] = headers
            await send(message)

        body = await _read_body(scope, receive, res.settings.max_body_bytes)
        if isinstance(body, ArenaError):
            metrics.REQUESTS_REFUSED.labels("body_too_large").inc()
            response = await errors.http_error(Request(scope), body)
            response.headers["connection"] = "close"  # the rest of the body is not read
            await response(scope, receive, send_with_headers)
            return
        token = bearer_of(scope)
        if token:
            try:
                scope[AUTH_SCOPE_KEY] = await res.tokens.verify(token)
            except Exception as exc:  # refused or unavailable: the route decides if it matters
                scope[AUTH_SCOPE_KEY] = exc

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect comes

        await self.app(scope, replay, send_with_headers)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | ArenaError:
    """The whole request body, or PayloadTooLarge as soon as it is known to exceed `limit`."""
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is not None and (not length.isdigit() or int(length) > limit):
        return _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"请求内容过大（上限 {limit // 1024} KB）。",
        f"Request body too large (limit {limit // 1024} KB).",
    )


# --- access logs -------------------------------------------------------------------------

# Query parameters that carry a credential: the big-screen link (?k=), a token or a join
# code. Their values never reach a log line.
_SECRET_PARAM = re.compile(r"([?&](?:k|token|access_token|code|join_code)=)[^&#\s\"]*", re.I)


def redact(text: str) -> str:
    """`text` with every credential-carrying query parameter's value replaced by ***."""
    return _SECRET_PARAM.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """Rewrites uvicorn's access-log records (the path with its query string is an arg)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access and error loggers (once; idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
