"""The one place where failures become HTTP statuses and WebSocket error replies.

Domain errors (`arena.errors`), frame errors (`protocol.FrameError`), LLM failures and
infrastructure failures (PostgreSQL, Redis, sockets) are all worded and given a status
here; nothing else in the server builds an error reply.
"""

from __future__ import annotations

import logging

import asyncpg
import redis
from starlette.requests import Request
from starlette.responses import JSONResponse

from arena import errors as domain
from arena.errors import ArenaError
from server import metrics, protocol
from server.patient.llm import LLMFailure

log = logging.getLogger("arena.errors")

# The HTTP status of each domain error; a subclass not listed takes its nearest base's.
STATUS: dict[type[ArenaError], int] = {
    ArenaError: 400,
    domain.NotFound: 404,
    domain.IllegalTransition: 409,
    domain.RoundNotRunning: 409,
    domain.DeadlinePassed: 409,
    domain.AlreadySubmitted: 409,
    domain.TurnInProgress: 409,
    domain.DuplicateRequest: 409,
    domain.Unauthorized: 401,
    domain.Forbidden: 403,
    domain.JoinCodeInvalid: 403,
    domain.JoinCodeUsed: 409,
    domain.RateLimited: 429,
    domain.PayloadTooLarge: 413,
    domain.CaseReserved: 409,
    domain.ModelUnavailable: 502,
}


def status_of(exc: BaseException) -> int:
    if isinstance(exc, ArenaError):
        return next(STATUS[c] for c in type(exc).__mro__ if c in STATUS)
    if isinstance(exc, protocol.FrameError):
        return 400
    if isinstance(exc, BAD_TEXT):
        return 400
    if isinstance(exc, LLMFailure):
        return 502
    if isinstance(exc, UNAVAILABLE):
        return 503  # nothing was recorded: retry
    return 500


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
    elif isinstance(exc, LLMFailure):
        code, zh, en = f"llm_{exc.kind}", exc.message_zh, exc.message_en
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
    status = status_of(exc)
    err = ws_error(exc, None)
    headers = {}
    if isinstance(exc, ArenaError) and "retry_after" in exc.detail:
        headers["retry-after"] = str(exc.detail["retry_after"])
    return JSONResponse(
        {"code": err.code, "message": err.message, "message_en": err.message_en}, status,
        headers=headers,
    )


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    """A path that names nothing: the same reply shape as every other error."""
    return JSONResponse(
        {"code": "not_found", "message": "页面不存在。", "message_en": "Not found."}, 404)
