"""Who may do what: one table for WebSocket messages, one helper for HTTP routes.

Every client message type is listed with the roles allowed to send it; the hub
checks each frame against the table before anything else runs, and a type missing
from the table is refused for everyone (a new message must be placed here to be
usable at all). HTTP routes name their roles with `require`.
"""

from __future__ import annotations

from starlette.requests import Request

from arena.errors import Forbidden, Unauthorized
from server import protocol
from server.auth import Claims
from server.resources import Resources

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


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require(request: Request, *roles: Role) -> Claims:
    """The request's verified claims; Unauthorized without a valid token, Forbidden for
    a role not in `roles`."""
    res: Resources = request.app.state.resources
    token = bearer(request)
    if not token:
        raise Unauthorized("请先登录。", "Authentication required.")
    claims = res.signer.verify(token, res.clock())
    if claims.role not in roles:
        raise Forbidden(
            f"{_ROLE_ZH[claims.role]}无权访问此功能。",
            f"A {claims.role} may not use this route.",
        )
    return claims
