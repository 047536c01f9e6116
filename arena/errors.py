"""Domain errors.

Every failure a user can cause is an `ArenaError` with a stable machine code and
a message in Chinese first and English second. `server/wire/errors.py` maps them
to HTTP statuses and WebSocket error replies in one place; nothing else in the
server invents user-facing error text.
"""

from __future__ import annotations


class ArenaError(Exception):
    """Base of all domain errors: `code` is stable, messages are for people."""

    code = "arena_error"

    def __init__(self, message_zh: str, message_en: str, **detail: object) -> None:
        super().__init__(message_en)
        self.message_zh = message_zh
        self.message_en = message_en
        self.detail = detail


class BadRequest(ArenaError):
    code = "bad_request"


class NotFound(ArenaError):
    code = "not_found"


class CaseNotFound(NotFound):
    code = "case_not_found"


class CaseInvalid(ArenaError):
    """A case file failed validation; `problems` lists every one with its path."""

    code = "case_invalid"

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(
            f"病例文件 {source} 有 {len(problems)} 处错误：" + "；".join(problems),
            f"case file {source} has {len(problems)} problem(s): " + "; ".join(problems),
            problems=problems,
        )
        self.problems = problems


class IllegalTransition(ArenaError):
    code = "illegal_transition"


class RoundNotRunning(ArenaError):
    code = "round_not_running"


class DeadlinePassed(ArenaError):
    code = "deadline_passed"


class UnknownOrder(ArenaError):
    code = "unknown_order"


class AlreadySubmitted(ArenaError):
    code = "already_submitted"


class TurnInProgress(ArenaError):
    code = "turn_in_progress"


class DuplicateRequest(ArenaError):
    """A retried request whose first copy was already applied."""

    code = "duplicate_request"


class Unauthorized(ArenaError):
    """No valid credentials: a bad token, or a wrong username or password."""

    code = "unauthorized"


class TokenExpired(Unauthorized):
    code = "token_expired"


class Forbidden(ArenaError):
    """Signed in, but this role may not do this."""

    code = "forbidden"


class JoinCodeInvalid(ArenaError):
    code = "join_code_invalid"


class JoinCodeUsed(ArenaError):
    """The join code was already redeemed (by this person on another device, or someone else)."""

    code = "join_code_used"


class RateLimited(ArenaError):
    """Too many attempts from one client or account within the window."""

    code = "rate_limited"


class PayloadTooLarge(ArenaError):
    code = "payload_too_large"


class CaseUnavailable(NotFound):
    """The case is not open to practice for this caller (a draft, contest-only, or used by a
    round whose results are not published); to them it is as if it did not exist."""

    code = "case_unavailable"


class CaseReserved(ArenaError):
    """The case is used by a round whose results are not published: it stays out of practice."""

    code = "case_reserved"


class ModelUnavailable(ArenaError):
    """The LLM endpoint is not configured, or failed a request that is not a patient turn
    (drafting a case)."""

    code = "model_unavailable"
