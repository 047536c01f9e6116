"""The one place where failures become HTTP statuses and WebSocket error replies."""

from __future__ import annotations

import logging

import asyncpg
import redis
from starlette.requests import Request
from starlette.responses import JSONResponse

from arena.errors import ArenaError
from server import metrics, protocol

log = logging.getLogger("arena.errors")

# Infrastructure failures: nothing was recorded, the client may retry.
UNAVAILABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, redis.RedisError)
# Text PostgreSQL cannot store (NUL in text, \u0000 in jsonb): the request's fault, not the
# service's. Checked before UNAVAILABLE, whose PostgresError includes them.
BAD_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


def ws_error(exc: BaseException, re: str | None) -> protocol.Error:
    """The error reply for a failed request; nothing internal leaks to the client."""
    if isinstance(exc, ArenaError):
        code, zh, en = exc.code, exc.message_zh, exc.message_en
    elif isinstance(exc, protocol.FrameError):
        code, zh, en = exc.code, exc.message, exc.message_en
        re = re or exc.re
    elif isinstance(exc, BAD_TEXT):
        # The edge refuses control characters by field; this catches any path it missed,
        # which would otherwise read as "unavailable, retry" and fail the same way again.
        log.warning("text refused by PostgreSQL: %r", exc)
        code, zh, en = (
            "bad_request", "内容含有不允许的字符（如 NUL 控制字符），请删除后重试。",
            "The text contains a character that is not allowed (such as NUL); remove it.",
        )
    elif isinstance(exc, UNAVAILABLE):
        log.warning("service unavailable: %r", exc)
        code, zh, en = (
            "unavailable", "服务暂时不可用，本次操作未被记录，请重试。",
            "A service is unavailable; nothing was recorded. Please retry.",
        )
    else:
        log.exception("unexpected error", exc_info=exc)
        code, zh, en = "internal", "服务器内部错误，请重试。", "Internal server error."
    metrics.WS_ERRORS.labels(code).inc()
    return protocol.Error(re=re, code=code, message=zh, message_en=en)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette handler for ArenaError raised by an HTTP route."""
    status = exc.status if isinstance(exc, ArenaError) else 500
    if isinstance(exc, BAD_TEXT):
        status = 400
    elif isinstance(exc, UNAVAILABLE):
        status = 503  # nothing was recorded: retry
    err = ws_error(exc, None)
    headers = {}
    if isinstance(exc, ArenaError) and "retry_after" in exc.detail:
        headers["retry-after"] = str(exc.detail["retry_after"])
    return JSONResponse(
        {"code": err.code, "message": err.message, "message_en": err.message_en}, status,
        headers=headers,
    )
