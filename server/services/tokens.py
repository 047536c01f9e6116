"""Bearer tokens: standard JSON Web Tokens (pyjwt, HS256) with key ids, rotation, revocation.

Every signed-in person carries one (`Claims`): staff from /api/login, contestants from
/api/join, big screens from a spectator link. The `kid` header names the key that signed
it; keys live in PostgreSQL (`token_keys`), so every process accepts every other's tokens.
The newest key not retired signs; all keys not retired verify, so `add_key` rotates
without signing anyone out and `retire_key` later ends what the old key signed.

A token is refused before it expires when it was revoked: by its `jti` (logout), or
because its subject's generation moved on (a reissued join code ends every token of the
contestant's earlier code). Both are written to PostgreSQL first and cached in Redis,
which is what every HTTP request and WebSocket hello reads (one round trip). When Redis
has lost its data (the `loaded` marker is gone) the cache is refilled from PostgreSQL
before it is trusted, so a revocation is never forgotten.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Mapping

import asyncpg
import jwt
import msgspec
import redis.asyncio as redis

from arena.errors import NotFound, TokenExpired, Unauthorized
from server.services.accounts import Claims
from server.store import keys

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 4096
MIN_KEY_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
KEY_REFRESH_S = 60.0  # how soon a key added or retired by another process is seen here
_UNKNOWN_KID_RELOAD_S = 1.0  # at most one reload a second for kids nobody has heard of


def invalid_token() -> Unauthorized:
    return Unauthorized("登录凭证无效，请重新登录。", "Invalid credentials; please sign in again.")


def revoked_token() -> Unauthorized:
    return Unauthorized(
        "登录已失效（已退出登录，或参赛码已重新发放），请重新登录。",
        "This session has ended (signed out, or the join code was reissued); please sign in "
        "again.",
    )


def subject_of(claims: Claims) -> str:
    """The revocation subject: role and id, so a username never collides with a contestant."""
    return f"{claims.role}:{claims.sub}"


class Signer:
    """Signs and verifies JWTs with a set of named keys; no I/O.

    `keys` maps key ids to secrets (at least 32 bytes); `current` is the id that signs.
    """

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"no key named {current!r}")
        if any(len(k) < MIN_KEY_BYTES for k in keys.values()):
            raise ValueError(f"token keys must be at least {MIN_KEY_BYTES} bytes")
        self.keys = dict(keys)
        self.current = current

    def issue(self, claims: Claims) -> str:
        """The signed token; a claims without `jti` gets a fresh random one."""
        if not claims.jti:
            claims = msgspec.structs.replace(claims, jti=uuid.uuid4().hex)
        return jwt.encode(
            msgspec.to_builtins(claims), self.keys[self.current], algorithm=ALGORITHM,
            headers={"kid": self.current},
        )

    @staticmethod
    def kid_of(token: str) -> str:
        """The key id in the token's header (unverified); Unauthorized when malformed."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise invalid_token()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise invalid_token() from None
        if not isinstance(kid, str) or not kid:
            raise invalid_token()
        return kid

    def verify(self, token: str, now: float) -> Claims:
        """The claims of a genuine token; Unauthorized if forged, malformed or signed by an
        unknown key, TokenExpired if `exp` is not after `now` (server time).

        Only HS256 is accepted (never "none" or another algorithm named by the token), and
        nothing in the payload is read before the signature is checked.
        """
        key = self.keys.get(self.kid_of(token))
        if key is None:
            raise invalid_token()
        try:
            # exp is checked below against the server's clock, not pyjwt's time.time().
            payload = jwt.decode(
                token, key, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "require": ["exp", "sub", "jti"]},
            )
            claims = msgspec.convert(payload, Claims)
        except (jwt.PyJWTError, msgspec.ValidationError):
            raise invalid_token() from None
        if claims.exp <= now:
            raise TokenExpired(
                "登录已过期，请重新登录。", "Your session has expired; please sign in again."
            )
        return claims


async def add_key(pool: asyncpg.Pool) -> str:
    """Add a signing key; return its id. It signs from the next key load of each process
    (within KEY_REFRESH_S); tokens signed by older keys verify until they expire or their
    key is retired."""
    kid = uuid.uuid4().hex[:12]
    await keys.add_key(pool, kid, os.urandom(MIN_KEY_BYTES))
    return kid


async def retire_key(pool: asyncpg.Pool, kid: str) -> None:
    """Retire a key: tokens it signed are refused from the next key load of each process.
    NotFound for an unknown or already retired key."""
    if not await keys.retire_key(pool, kid):
        raise NotFound(f"签名密钥不存在或已停用：{kid}。", f"No such active token key: {kid}.")


async def list_keys(pool: asyncpg.Pool) -> list[tuple[str, float, float | None]]:
    """Every key, oldest first: (kid, created, retired or None), seconds since the epoch."""
    rows = await keys.all_keys(pool)
    return [(r["kid"], r["created_at"].timestamp(),
             r["retired_at"].timestamp() if r["retired_at"] else None) for r in rows]


class Tokens:
    """The server's tokens: keys from PostgreSQL, revocations in PostgreSQL and Redis."""

    def __init__(
        self, pool: asyncpg.Pool, client: redis.Redis, prefix: str, clock: Callable[[], float]
    ) -> None:
        self.pool = pool
        self.r = client
        self.prefix = f"{prefix}tokens:"
        self.cache = keys.RevocationCache(client, self.prefix)
        self.clock = clock
        self.signer: Signer | None = None
        self._loaded_at = -math.inf  # time.monotonic() of the last key load
        self._unknown_at = -math.inf  # ... and of the last one made for an unknown kid

    @classmethod
    async def open(
        cls, pool: asyncpg.Pool, client: redis.Redis, prefix: str, clock: Callable[[], float]
    ) -> Tokens:
        tokens = cls(pool, client, prefix, clock)
        await tokens.load_keys()
        return tokens

    # --- keys ------------------------------------------------------------------------------

    async def load_keys(self) -> None:
        """Read the keys not retired; create the first one if there is none."""
        rows = await keys.active_keys(
            self.pool, lambda: (uuid.uuid4().hex[:12], os.urandom(MIN_KEY_BYTES))
        )
        self.signer = Signer(dict(rows), rows[-1][0])
        self._loaded_at = time.monotonic()

    async def add_key(self) -> str:
        """A new signing key (rotation), used here at once; returns its id."""
        kid = await add_key(self.pool)
        await self.load_keys()
        return kid

    async def retire_key(self, kid: str) -> None:
        """Stop accepting tokens signed by `kid` (here at once, elsewhere within
        KEY_REFRESH_S); NotFound for an unknown or already retired key."""
        await retire_key(self.pool, kid)
        await self.load_keys()

    def _signer(self) -> Signer:
        if self.signer is None:
            raise RuntimeError("Tokens.open() loads the keys first")
        return self.signer

    # --- issuing and verifying -------------------------------------------------------------

    async def issue(self, claims: Claims) -> tuple[str, Claims]:
        """Sign `claims` with a fresh jti, the issue time and the subject's generation."""
        _, generation = await self._state("", subject_of(claims))
        claims = msgspec.structs.replace(
            claims, jti=uuid.uuid4().hex, iat=self.clock(), gen=generation
        )
        return self._signer().issue(claims), claims

    async def verify(self, token: str) -> Claims:
        """The claims of a genuine, current, unrevoked token.

        Unauthorized for a forged, malformed or revoked token or one signed by a retired
        key; TokenExpired for an expired one.
        """
        kid = Signer.kid_of(token)
        now = time.monotonic()
        if kid not in self._signer().keys and now - self._unknown_at > _UNKNOWN_KID_RELOAD_S:
            self._unknown_at = now  # made-up kids cannot make every request a query
            await self.load_keys()
        elif now - self._loaded_at > KEY_REFRESH_S:
            await self.load_keys()
        claims = self._signer().verify(token, self.clock())
        revoked, generation = await self._state(claims.jti, subject_of(claims))
        if revoked or claims.gen < generation:
            raise revoked_token()
        return claims

    # --- revocation ------------------------------------------------------------------------

    async def revoke(self, claims: Claims) -> None:
        """Sign this one token out (logout), everywhere, until it would have expired."""
        await keys.revoke(self.pool, claims.jti, subject_of(claims), claims.exp)
        ttl = math.ceil(claims.exp - self.clock())
        if ttl > 0:
            await self.cache.revoke(claims.jti, ttl)

    async def revoke_subject(self, subject: str) -> int:
        """End every token `subject` holds now (tokens issued afterwards work); return the
        subject's new generation (tokens of an older one are refused)."""
        generation = await keys.next_generation(self.pool, subject)
        await self.cache.set_generation(subject, generation)
        return generation

    async def _state(self, jti: str, subject: str) -> tuple[bool, int]:
        """(whether `jti` is revoked, the subject's generation), from the Redis cache."""
        loaded, revoked, generation = await self.cache.read(jti, subject)
        if not loaded:
            await self._fill_cache()
            loaded, revoked, generation = await self.cache.read(jti, subject)
        return revoked, generation

    async def _fill_cache(self) -> None:
        """Copy every live revocation from PostgreSQL to Redis, then mark the cache whole."""
        now = self.clock()
        revoked, subjects = await keys.live_revocations(self.pool, now)
        await self.cache.fill(revoked, subjects, now)
