"""Passwords, tokens, staff accounts and join codes against real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import jwt
import msgspec
import pytest
import redis.asyncio as aioredis

from arena.errors import (
    BadRequest,
    JoinCodeInvalid,
    JoinCodeUsed,
    NotFound,
    TokenExpired,
    Unauthorized,
)
from arena.roster import RosterRow, make_join_code
from server.services.accounts import Accounts, Claims, Roster, hash_password, verify_password
from server.services.tokens import Signer, Tokens
from server.settings import Settings
from server.store.audit import AuditLog
from server.wire.errors import status_of
from tests.support import FakeClock

KEY = b"k" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@asynccontextmanager
async def database(settings: Settings, schema: str | None = None) -> AsyncIterator[asyncpg.Pool]:
    audit = await AuditLog.open(settings.database_url, schema or settings.database_schema)
    try:
        await audit.migrate()
        yield audit.pool
    finally:
        await audit.close()


def unique(prefix: str) -> str:
    # The schema is shared by the whole test run: names must not collide across tests.
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def codes(*fixed: str) -> Iterator[str]:
    yield from fixed
    while True:
        yield make_join_code(lambda n: uuid.uuid4().bytes[:n])


# --- passwords -----------------------------------------------------------------------------


def test_password_hash_verifies_and_is_salted() -> None:
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a.startswith("scrypt$16384$8$1$") and len(a.split("$")) == 6
    assert a != b  # fresh salt each time
    assert verify_password("correct horse", a) and verify_password("correct horse", b)
    assert not verify_password("correct horsE", a)
    assert not verify_password("correct horse", "scrypt$16384$8$1$!!$!!")
    assert not verify_password("correct horse", "md5$abc")
    # A corrupt row asking for 4 GiB of memory is refused, not obeyed.
    _, _, _, _, salt, key = a.split("$")
    assert not verify_password("correct horse", f"scrypt$1048576$32$1${salt}${key}")


def test_password_length_is_enforced() -> None:
    for pw in ("short", "x" * 129):
        with pytest.raises(BadRequest) as info:
            hash_password(pw)
        assert info.value.message_zh.startswith("密码长度须为 8 到 128 个字符")
    assert verify_password("x" * 128, hash_password("x" * 128))


# --- tokens --------------------------------------------------------------------------------


def claims(exp: float = 2000.0) -> Claims:
    return Claims(role="contestant", sub="c1", name="张三", competition_id="comp", exp=exp,
                  jti="j1")


def signer(key: bytes = KEY, kid: str = "k1") -> Signer:
    return Signer({kid: key}, kid)


def test_token_is_a_standard_jwt_with_a_key_id() -> None:
    token = signer().issue(claims())
    assert "=" not in token and token.count(".") == 2
    header, payload, _ = token.split(".")
    assert json.loads(unb64(header)) == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    assert json.loads(unb64(payload))["jti"] == "j1"
    # Any JWT library with the key reads it: nothing here is our own format.
    standard = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert standard["sub"] == "c1"
    assert signer().verify(token, now=1000.0) == claims()
    fresh = signer().verify(signer().issue(msgspec.structs.replace(claims(), jti="")), 1000.0)
    assert len(fresh.jti) == 32  # a token is never issued without its own id


def test_tampered_payload_is_refused() -> None:
    header, payload, sig = signer().issue(claims()).split(".")
    forged = b64(unb64(payload).replace(b'"contestant"', b'"organizer"'))
    assert forged != payload
    with pytest.raises(Unauthorized) as info:
        signer().verify(f"{header}.{forged}.{sig}", now=1000.0)
    assert type(info.value) is Unauthorized
    assert info.value.message_zh == "登录凭证无效，请重新登录。"


def test_tampered_signature_other_key_or_unknown_kid_is_refused() -> None:
    header, payload, sig = signer().issue(claims()).split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    for token in (f"{header}.{payload}.{flipped}", signer(b"o" * 32).issue(claims()),
                  signer(kid="k2").issue(claims())):
        with pytest.raises(Unauthorized):
            signer().verify(token, now=1000.0)


def test_other_algorithms_are_refused() -> None:
    # "none", and HS512 (with a key long enough for it): only HS256 is ever accepted.
    body = msgspec.to_builtins(claims())
    unsigned = jwt.encode(body, None, algorithm="none", headers={"kid": "k1"})  # type: ignore[arg-type]
    other = jwt.encode(body, KEY * 2, algorithm="HS512", headers={"kid": "k1"})
    for token in (unsigned, other):
        with pytest.raises(Unauthorized):
            signer().verify(token, now=1000.0)


def test_expired_token() -> None:
    token = signer().issue(claims(exp=2000.0))
    assert signer().verify(token, now=1999.9).sub == "c1"
    with pytest.raises(TokenExpired) as info:
        signer().verify(token, now=2000.0)
    assert info.value.code == "token_expired" and status_of(info.value) == 401
    assert info.value.message_zh == "登录已过期，请重新登录。"


@pytest.mark.parametrize("token", [
    "", ".", "garbage", "a.b.c", "a.b", "x" * 5000, "令牌.签名.x",
])
def test_garbage_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized) as info:
        signer().verify(token, now=0.0)
    assert type(info.value) is Unauthorized


def test_signed_but_wrong_shape_is_unauthorized() -> None:
    # Only a key holder could make these; still no crash if one ever did.
    for body in ({"role": "admin", "sub": "x", "exp": 9, "jti": "j"},
                 {"role": "judge", "sub": 5, "exp": 9, "jti": "j"},
                 {"role": "judge", "sub": "x", "jti": "j"}):
        token = jwt.encode(body, KEY, algorithm="HS256", headers={"kid": "k1"})
        with pytest.raises(Unauthorized):
            signer().verify(token, now=0.0)


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Signer({"k": b"s" * 31}, "k")


# --- keys and revocation, shared through PostgreSQL and Redis ------------------------------


@asynccontextmanager
async def tokens_in(settings: Settings, schema: str, clock: FakeClock
                    ) -> AsyncIterator[tuple[Tokens, Tokens]]:
    """Two Tokens services on one fresh schema and Redis prefix: two processes."""
    prefix = f"{settings.redis_prefix}{schema}:"
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        async with database(settings, schema) as one, database(settings, schema) as two:
            try:
                a, b = await asyncio.gather(Tokens.open(one, client, prefix, clock),
                                            Tokens.open(two, client, prefix, clock))
                yield a, b
            finally:
                await one.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await client.aclose()


def test_first_key_agrees_across_processes_and_rotates(settings: Settings) -> None:
    clock = FakeClock(1000.0)

    async def run() -> None:
        async with tokens_in(settings, f"{settings.database_schema}_keys", clock) as (a, b):
            assert a.signer is not None and b.signer is not None
            assert a.signer.keys == b.signer.keys and len(a.signer.keys) == 1  # one key made
            old, _ = await a.issue(claims(exp=5000.0))
            assert (await b.verify(old)).sub == "c1"

            new_kid = await b.add_key()  # rotation on process b
            new, _ = await b.issue(claims(exp=5000.0))
            assert jwt.get_unverified_header(new)["kid"] == new_kid
            assert (await a.verify(new)).sub == "c1"  # a learns the new key on first sight
            assert (await b.verify(old)).sub == "c1"  # and old tokens still work

            await b.retire_key(jwt.get_unverified_header(old)["kid"])
            with pytest.raises(Unauthorized):
                await b.verify(old)
            assert (await b.verify(new)).sub == "c1"
            with pytest.raises(NotFound):
                await b.retire_key("no-such-key")

    asyncio.run(run())


def test_logout_and_reissue_revoke_everywhere_even_after_redis_loses_it(
        settings: Settings) -> None:
    clock = FakeClock(1000.0)

    async def run() -> None:
        async with tokens_in(settings, f"{settings.database_schema}_revoke", clock) as (a, b):
            first, first_claims = await a.issue(claims(exp=5000.0))
            second, _ = await a.issue(claims(exp=5000.0))
            other, _ = await a.issue(Claims(role="judge", sub="c1", exp=5000.0))
            assert first_claims.iat == 1000.0 and first_claims.jti
            await b.revoke(first_claims)  # logout on process b
            for svc in (a, b):
                with pytest.raises(Unauthorized) as info:
                    await svc.verify(first)
                assert "重新登录" in info.value.message_zh
                assert (await svc.verify(second)).sub == "c1"  # only that one token

            await a.revoke_subject("contestant:c1")  # the organizer reissues c1's code
            third, _ = await a.issue(claims(exp=5000.0))  # the new code's token, same instant
            with pytest.raises(Unauthorized):
                await b.verify(second)
            assert (await b.verify(third)).sub == "c1"
            assert (await b.verify(other)).role == "judge"  # a judge named c1 is not c1

            # Redis loses everything: PostgreSQL still knows, and the cache is refilled.
            await a.r.delete(*[k async for k in a.r.scan_iter(match=f"{a.prefix}*")])
            for token in (first, second):
                with pytest.raises(Unauthorized):
                    await b.verify(token)
            assert (await a.verify(third)).sub == "c1"

    asyncio.run(run())


def test_keys_command_rotates_and_retires(settings: Settings) -> None:
    """`arena keys add` / `retire`, against the database a server uses."""
    schema = f"{settings.database_schema}_cli"
    env = {**os.environ, "DATABASE_URL": settings.database_url, "DATABASE_SCHEMA": schema,
           "DATA_DIR": str(settings.data_dir)}

    def arena(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server.cli", "keys", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    async def first_key() -> str:
        async with database(settings, schema) as pool:
            tokens = await Tokens.open(pool, aioredis.Redis.from_url(settings.redis_url),
                                       f"{settings.redis_prefix}cli:", FakeClock())
            assert tokens.signer is not None
            await tokens.r.aclose()
            return tokens.signer.current

    async def drop() -> None:
        async with database(settings, schema) as pool:
            await pool.execute(f"DROP SCHEMA {schema} CASCADE")

    try:
        old = asyncio.run(first_key())
        added = arena("add")
        assert added.returncode == 0, added.stderr
        new = added.stdout.strip()
        listed = arena("list").stdout
        assert f"{old}  " in listed and "仅验证" in listed and f"{new}  " in listed
        assert "签名中" in listed.splitlines()[-1]  # the newest key signs
        assert arena("retire", old).returncode == 0
        assert "停用" in arena("list").stdout.splitlines()[0]
        again = arena("retire", old)
        assert again.returncode == 1 and "已停用" in again.stdout
    finally:
        asyncio.run(drop())


# --- staff accounts ------------------------------------------------------------------------


def test_accounts_add_login_and_refusals(settings: Settings) -> None:
    async def run() -> None:
        async with database(settings) as pool:
            accounts = Accounts(pool)
            name = unique("org_")
            before = await accounts.count("organizer")
            await accounts.add(name, "organizer", "s3cret-pass", display_name=" 王  老师 ")
            assert await accounts.count("organizer") == before + 1
            assert await accounts.login(name, "s3cret-pass") == ("organizer", "王 老师")

            with pytest.raises(BadRequest) as dup:
                await accounts.add(name, "judge", "another-pass")
            assert dup.value.message_zh.startswith("用户名已存在")
            for bad in ("x", "has space", "名字", "a" * 33):
                with pytest.raises(BadRequest):
                    await accounts.add(bad, "judge", "another-pass")
            with pytest.raises(BadRequest):
                await accounts.add(unique("j_"), "judge", "short")

            with pytest.raises(Unauthorized) as wrong_info:
                await accounts.login(name, "s3cret-pasS")
            wrong = wrong_info.value
            with pytest.raises(Unauthorized) as unknown_info:
                await accounts.login(unique("nobody_"), "s3cret-pass")
            unknown = unknown_info.value
            # One answer for both, so the reply does not say which usernames exist.
            assert wrong.message_zh == unknown.message_zh == "用户名或密码错误。"
            with pytest.raises(Unauthorized):
                await accounts.login("不合法 的名字", "s3cret-pass")

            await accounts.set_password(name, "new-secret-1")
            assert await accounts.login(name, "new-secret-1") == ("organizer", "王 老师")
            with pytest.raises(Unauthorized):
                await accounts.login(name, "s3cret-pass")
            with pytest.raises(NotFound):
                await accounts.set_password(unique("nobody_"), "new-secret-1")

    asyncio.run(run())


# --- rosters and join codes ----------------------------------------------------------------


def test_roster_import_and_redeem_once(settings: Settings) -> None:
    async def run() -> None:
        async with database(settings) as pool:
            roster = Roster(pool)
            comp = unique("comp_")
            await roster.create_competition(" 2025 临床技能  大赛 ", "admin", comp)
            listed = {c.id: c for c in await roster.competitions()}
            assert listed[comp].title == "2025 临床技能 大赛" and listed[comp].created_at > 0
            with pytest.raises(BadRequest):
                await roster.create_competition("again", "admin", comp)

            rows = [RosterRow(name="张三", school="协和", team="红", email="z@x.cn"),
                    RosterRow(name="李四", school="复旦")]
            first = await roster.import_rows(comp, rows[:1], codes())
            taken = first[0].join_code
            # A code already taken is skipped; lower case from the source is normalized.
            people = await roster.import_rows(comp, rows[1:], codes(taken, "abcd-efgh"))
            assert people[0].join_code == "ABCD-EFGH" != taken
            everyone = await roster.contestants(comp)
            assert [(c.name, c.redeemed) for c in everyone] == [("张三", False), ("李四", False)]

            me = await roster.redeem(taken.lower().replace("-", " "))
            assert me.id == first[0].id and me.redeemed and me.email == "z@x.cn"
            assert (await roster.get(me.id)).redeemed
            with pytest.raises(JoinCodeUsed) as used:
                await roster.redeem(taken)
            assert used.value.message_zh.startswith("该参赛码已被使用")

            fresh = await roster.reissue(me.id, make_join_code(lambda n: uuid.uuid4().bytes[:n]))
            again = await roster.get(me.id)
            assert again.join_code == fresh and not again.redeemed
            with pytest.raises(JoinCodeInvalid):
                await roster.redeem(taken)  # the old code is gone
            assert (await roster.redeem(fresh)).id == me.id

            with pytest.raises(NotFound):
                await roster.import_rows(unique("nope_"), rows, codes())
            with pytest.raises(NotFound):
                await roster.get(unique("nope_"))
            with pytest.raises(NotFound):
                await roster.reissue(unique("nope_"), "2345-6789")

    asyncio.run(run())


def test_import_is_all_or_nothing(settings: Settings) -> None:
    async def run() -> None:
        async with database(settings) as pool:
            roster = Roster(pool)
            comp = unique("comp_")
            await roster.create_competition("赛事", "admin", comp)
            [first] = await roster.import_rows(comp, [RosterRow(name="甲")], codes())
            # 乙 is inserted with the second code, 丙 collides and then the codes run out:
            # the whole import rolls back, 乙 included.
            rows = [RosterRow(name="丙"), RosterRow(name="乙")]
            fresh = make_join_code(lambda n: uuid.uuid4().bytes[:n])
            with pytest.raises(ValueError):
                await roster.import_rows(comp, rows, iter([first.join_code, fresh]))
            assert [c.name for c in await roster.contestants(comp)] == ["甲"]

    asyncio.run(run())


def test_racing_redeems_let_exactly_one_in(settings: Settings) -> None:
    async def run() -> None:
        async with database(settings) as pool:
            roster = Roster(pool)
            comp = unique("comp_")
            await roster.create_competition("抢码", "admin", comp)
            [person] = await roster.import_rows(comp, [RosterRow(name="王五")], codes())
            results = await asyncio.gather(
                *(roster.redeem(person.join_code) for _ in range(5)), return_exceptions=True
            )
            wins = [r for r in results if not isinstance(r, BaseException)]
            losses = [r for r in results if isinstance(r, BaseException)]
            assert len(wins) == 1 and wins[0].id == person.id
            assert len(losses) == 4 and all(isinstance(e, JoinCodeUsed) for e in losses)

    asyncio.run(run())


def test_unknown_and_malformed_codes_are_invalid(settings: Settings) -> None:
    async def run() -> None:
        async with database(settings) as pool:
            roster = Roster(pool)
            for code in ("ZZZZ-ZZZZ", "not a code", ""):
                with pytest.raises(JoinCodeInvalid) as info:
                    await roster.redeem(code)
                assert info.value.message_zh.startswith("参赛码无效")
                assert status_of(info.value) == 403

    asyncio.run(run())
