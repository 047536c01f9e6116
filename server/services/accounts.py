"""Who is asking: staff passwords, signed tokens, rosters and join codes.

Organizers and judges sign in with a username and password (scrypt hashes in
`accounts`). Contestants redeem a join code bound to them on the roster, once;
a second device needs a new code from the organizer. Spectators get a link.
Every one of them then carries a signed token with these `Claims`
(server/tokens.py: JSON Web Tokens, rotated keys, revocation).

scrypt costs ~50 ms of CPU on purpose; the async methods run it in a thread so
the event loop keeps streaming to everyone else meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Iterator
from typing import Literal

import asyncpg
import msgspec

from arena.errors import (
    BadRequest,
    JoinCodeInvalid,
    JoinCodeUsed,
    NotFound,
    Unauthorized,
)
from arena.roster import RosterRow, normalize_join_code
from server.store import accounts as store
from server.store import competitions

Role = Literal["organizer", "judge", "contestant", "spectator"]
StaffRole = Literal["organizer", "judge"]

STAFF_TTL_S = 12 * 3600.0  # a long competition day
CONTESTANT_TTL_S = 24 * 3600.0  # a code is redeemed once, so the token must outlast the event
SPECTATOR_TTL_S = 7 * 24 * 3600.0  # a big-screen link set up days ahead

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 128  # scrypt's cost is flat, but nobody needs a megabyte of password

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1  # 16 MiB, ~50 ms: OWASP's scrypt minimum
_SCRYPT_SALT_BYTES, _SCRYPT_KEY_BYTES = 16, 32
_SCRYPT_MAX_MEMORY = 64 << 20  # what a stored hash may ask for: 4x today's cost
_USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{2,32}$")


# --- passwords -----------------------------------------------------------------------------


def _check_length(pw: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(pw) <= MAX_PASSWORD_CHARS:
        raise BadRequest(
            f"密码长度须为 {MIN_PASSWORD_CHARS} 到 {MAX_PASSWORD_CHARS} 个字符。",
            f"A password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters.",
        )


def _scrypt(pw: str, salt: bytes, n: int, r: int, p: int, dklen: int = _SCRYPT_KEY_BYTES
            ) -> bytes:
    return hashlib.scrypt(
        pw.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAX_MEMORY + (1 << 20), dklen=dklen
    )


def hash_password(pw: str) -> str:
    """Encode as "scrypt$N$r$p$<salt b64>$<hash b64>"; BadRequest unless 8..128 characters."""
    _check_length(pw)
    salt = os.urandom(_SCRYPT_SALT_BYTES)
    key = _scrypt(pw, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join([
        "scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P),
        base64.b64encode(salt).decode(), base64.b64encode(key).decode(),
    ])


def verify_password(pw: str, encoded: str) -> bool:
    """True when `pw` matches; False for a wrong password or a malformed hash.

    The parameters are read from the hash, so raising the cost later keeps
    old hashes valid; they are bounded so a corrupt row cannot ask for gigabytes.
    """
    if not MIN_PASSWORD_CHARS <= len(pw) <= MAX_PASSWORD_CHARS:
        return False  # no stored hash was made from such a password
    try:
        scheme, n_s, r_s, p_s, salt_b64, key_b64 = encoded.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_b64, validate=True)
        key = base64.b64decode(key_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    if scheme != "scrypt" or not 16 <= len(key) <= 64 or not (n >= 2 and r >= 1 and 1 <= p <= 16):
        return False
    if 128 * n * r > _SCRYPT_MAX_MEMORY:
        return False
    try:
        return hmac.compare_digest(_scrypt(pw, salt, n, r, p, len(key)), key)
    except ValueError:  # n not a power of two, and the like
        return False


@functools.cache
def _dummy_hash() -> str:
    # Checked against when the username is unknown, so that answer costs a hash too.
    return hash_password(os.urandom(16).hex())


# --- tokens --------------------------------------------------------------------------------


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    sub: str  # username, contestant id, or spectator link id
    name: str = ""  # shown in the UI; never trusted for authorization
    competition_id: str = ""
    round_id: str = ""
    exp: float  # server time, seconds since the epoch
    # Set when issued (server/tokens.py): the token's own id, for signing out one token;
    # the server time it was issued; its subject's generation, for revoking all of them.
    jti: str = ""
    iat: float = 0.0
    gen: int = 0


def ttl_for(role: Role) -> float:
    """How long a token for this role lives."""
    if role == "contestant":
        return CONTESTANT_TTL_S
    if role == "spectator":
        return SPECTATOR_TTL_S
    return STAFF_TTL_S


# --- staff accounts ------------------------------------------------------------------------


class Accounts:
    """Organizer and judge accounts in the `accounts` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add(
        self, username: str, role: StaffRole, password: str, display_name: str = ""
    ) -> None:
        """Create an account; BadRequest for a bad username, role or password, or a taken name."""
        if not _USERNAME.match(username):
            raise BadRequest(
                "用户名须为 2 到 32 个英文字母、数字或 _ . - 符号。",
                "A username must be 2 to 32 letters, digits or _ . - characters.",
            )
        if role not in ("organizer", "judge"):
            raise BadRequest(f"未知的账号角色：{role}。", f"Unknown account role: {role}.")
        display_name = " ".join(display_name.split())[:64]
        encoded = await asyncio.to_thread(hash_password, password)
        if not await store.add_account(self.pool, username, role, display_name, encoded):
            raise BadRequest(f"用户名已存在：{username}。", f"Username already exists: {username}.")

    async def set_password(self, username: str, password: str) -> None:
        """Replace a password; NotFound for an unknown user."""
        encoded = await asyncio.to_thread(hash_password, password)
        if not await store.set_password_hash(self.pool, username, encoded):
            raise NotFound(f"用户不存在：{username}。", f"No such user: {username}.")

    async def login(self, username: str, password: str) -> tuple[StaffRole, str]:
        """(role, display name) when the password is right; Unauthorized otherwise.

        An unknown user and a wrong password get the same answer after the same
        work, so neither the message nor the timing tells which usernames exist.
        """
        row = None
        if _USERNAME.match(username):
            row = await store.account(self.pool, username)
        stored = row["password_hash"] if row is not None else None
        ok = await asyncio.to_thread(lambda: verify_password(password, stored or _dummy_hash()))
        if row is None or not ok:
            raise Unauthorized("用户名或密码错误。", "Wrong username or password.")
        return row["role"], row["display_name"]

    async def count(self, role: StaffRole) -> int:
        return await store.count_accounts(self.pool, role)


# --- competitions and rosters --------------------------------------------------------------


class Competition(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str
    created_by: str
    created_at: float  # seconds since the epoch


class Contestant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    competition_id: str
    name: str
    school: str
    team: str
    email: str
    join_code: str
    redeemed: bool


_MAX_CODE_TRIES = 20  # a collision is ~1 in 10^7 per code; 20 rounds in a row means a bug


def _next_code(codes: Iterator[str]) -> str:
    code = next(codes, None)
    if code is None:  # a caller's bug, not a user's: say so rather than StopIteration
        raise ValueError("the join code source ran out")
    return code


def _contestant(row: asyncpg.Record) -> Contestant:
    return Contestant(
        id=row["id"], competition_id=row["competition_id"], name=row["name"],
        school=row["school"], team=row["team"], email=row["email"],
        join_code=row["join_code"], redeemed=row["redeemed"],
    )


class Roster:
    """Competitions, their contestants and the join codes bound to them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_competition(self, title: str, created_by: str, id: str) -> None:
        """Create a competition; BadRequest for an empty or long title or a taken id."""
        title = " ".join(title.split())
        if not 1 <= len(title) <= 100:
            raise BadRequest("赛事名称须为 1 到 100 个字。", "A title must be 1 to 100 characters.")
        if not await competitions.add(self.pool, id, title, created_by):
            raise BadRequest(
                f"赛事编号已存在：{id}。", f"A competition with id {id} already exists."
            )

    async def competitions(self) -> list[Competition]:
        """Every competition, oldest first."""
        rows = await competitions.listing(self.pool)
        return [
            Competition(id=r["id"], title=r["title"], created_by=r["created_by"],
                        created_at=r["created_at"].timestamp())
            for r in rows
        ]

    async def import_rows(
        self, competition_id: str, rows: list[RosterRow], codes: Iterator[str]
    ) -> list[Contestant]:
        """Add every row with the next code from `codes`, all or none; return them in row order.

        A code already taken (by anyone, in any competition) is skipped and that
        row takes the next one. Codes are stored normalized. NotFound for an
        unknown competition.
        """
        ids = [uuid.uuid4().hex[:16] for _ in rows]
        assigned = await store.add_contestants(
            self.pool, competition_id, ids, rows,
            lambda: normalize_join_code(_next_code(codes)), _MAX_CODE_TRIES,
        )
        if assigned is None:
            raise NotFound(
                f"赛事不存在：{competition_id}。", f"No such competition: {competition_id}."
            )
        return [
            Contestant(id=ids[i], competition_id=competition_id, name=row.name,
                       school=row.school, team=row.team, email=row.email,
                       join_code=assigned[ids[i]], redeemed=False)
            for i, row in enumerate(rows)
        ]

    async def contestants(self, competition_id: str) -> list[Contestant]:
        """The roster of a competition, by name."""
        rows = await store.contestants(self.pool, competition_id)
        return [_contestant(r) for r in rows]

    async def get(self, contestant_id: str) -> Contestant:
        row = await store.contestant(self.pool, contestant_id)
        if row is None:
            raise NotFound("选手不存在。", "No such contestant.", contestant_id=contestant_id)
        return _contestant(row)

    async def redeem(self, code: str) -> Contestant:
        """Use a join code, once: the contestant it is bound to.

        JoinCodeInvalid for a malformed or unknown code, JoinCodeUsed for one
        already redeemed. One UPDATE both checks and marks, so of two phones
        racing with the same code exactly one gets in.
        """
        code = normalize_join_code(code)
        row = await store.redeem(self.pool, code)
        if row is not None:
            return _contestant(row)
        if await store.code_taken(self.pool, code):
            raise JoinCodeUsed(
                "该参赛码已被使用。如需在另一台设备登录，请联系组织者重新发放参赛码。",
                "This join code has already been used. To sign in on another device, "
                "ask the organizer for a new code.",
            )
        raise JoinCodeInvalid(
            "参赛码无效，请核对后重试。", "Invalid join code; please check it and try again."
        )

    async def release(self, contestant_id: str) -> None:
        """Undo `redeem` when no token came of it (no round to enter yet, a service failed),
        so the code is not spent on nothing."""
        await store.unredeem(self.pool, contestant_id)

    async def reissue(self, contestant_id: str, code: str) -> str:
        """Bind a new, unredeemed code to a contestant (the old one stops working); return it.

        NotFound for an unknown contestant. A code already taken raises
        asyncpg.UniqueViolationError (about 1 in 10^7 with random codes): call
        again with a fresh one.
        """
        code = normalize_join_code(code)
        if not await store.set_code(self.pool, contestant_id, code):
            raise NotFound("选手不存在。", "No such contestant.", contestant_id=contestant_id)
        return code
