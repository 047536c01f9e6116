"""Who may do what: one table for WebSocket messages, one helper for HTTP routes.

Every client message type is listed with the roles allowed to send it; the hub
checks each frame against the table before anything else runs, and a type missing
from the table is refused for everyone (a new message must be placed here to be
usable at all). HTTP routes name their roles with `require`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request

from arena.errors import Forbidden, Unauthorized
from server import protocol
from server.services.accounts import Claims

Role = protocol.Role
EVERYONE: frozenset[Role] = frozenset(
    ("student", "contestant", "judge", "organizer", "spectator")
)
STAFF: frozenset[Role] = frozenset(("judge", "organizer"))

MESSAGE_ROLES: dict[str, frozenset[Role]] = {
    "hello": EVERYONE,
    "ping": EVERYONE,
    "start_practice": frozenset(("student",)),
    "ask": frozenset(("student", "contestant")),
    "order": frozenset(("student", "contestant")),
    "submit": frozenset(("student", "contestant")),
    "watch": STAFF,
    "open_transcript": STAFF,
    "adjudicate": frozenset(("judge",)),
    "override": frozenset(("judge",)),
}

_ROLE_ZH = {"student": "练习学员", "contestant": "选手", "judge": "评委", "organizer": "组织者",
            "spectator": "观众"}


def check_message(role: Role, msg: protocol.ClientMsg) -> None:
    """Raise Forbidden unless `role` may send this message type."""
    kind = msg.__struct_config__.tag
    if role not in MESSAGE_ROLES.get(str(kind), frozenset()):
        raise Forbidden(
            f"{_ROLE_ZH[role]}无权执行此操作（{kind}）。", f"A {role} may not send {kind!r}.",
        )


# Where the edge (server/edge.py) leaves the verified claims of a request's bearer token, or
# the error verifying it raised: tokens are verified (revocation included) once per
# request, before any route, and a route that needs no token never fails on a bad one.
AUTH_SCOPE_KEY = "arena.auth"


def bearer_of(scope: MutableMapping[str, Any]) -> str:
    """The bearer token in an ASGI scope's Authorization header, or ""."""
    header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
    scheme, _, token = header.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer(request: Request) -> str:
    return bearer_of(request.scope)


def require(request: Request, *roles: Role) -> Claims:
    """The request's verified claims; Unauthorized without a valid token (a revoked one
    included), Forbidden for a role not in `roles`."""
    if not bearer(request):
        raise Unauthorized("请先登录。", "Authentication required.")
    outcome = request.scope.get(AUTH_SCOPE_KEY)
    if isinstance(outcome, Exception):
        raise outcome
    if not isinstance(outcome, Claims):
        raise RuntimeError("the edge middleware did not verify this request's token")
    claims = outcome
    if claims.role not in roles:
        raise Forbidden(
            f"{_ROLE_ZH[claims.role]}无权访问此功能。",
            f"A {claims.role} may not use this route.",
        )
    return claims


def optional(request: Request) -> Claims | None:
    """The caller's verified claims, or None without a token or with a refused one: for
    routes anyone may call, where a stale token is simply no token."""
    outcome = request.scope.get(AUTH_SCOPE_KEY)
    return outcome if isinstance(outcome, Claims) else None
