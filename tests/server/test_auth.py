"""Passwords, tokens, staff accounts and join codes against real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from arena.errors import (
    BadRequest,
    JoinCodeInvalid,
    JoinCodeUsed,
    NotFound,
    TokenExpired,
    Unauthorized,
)
from arena.roster import RosterRow, make_join_code
from server.audit import AuditLog
from server.auth import (
    Accounts,
    Claims,
    Roster,
    Signer,
    hash_password,
    load_secret,
    verify_password,
)
from server.settings import Settings

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
    return Claims(role="contestant", sub="c1", name="张三", competition_id="comp", exp=exp)


def test_token_round_trip() -> None:
    signer = Signer(KEY)
    token = signer.issue(claims())
    assert "=" not in token and token.count(".") == 1
    assert signer.verify(token, now=1000.0) == claims()


def test_tampered_payload_is_refused() -> None:
    signer = Signer(KEY)
    payload, sig = signer.issue(claims()).split(".")
    forged = b64(unb64(payload).replace(b'"contestant"', b'"organizer"'))
    assert forged != payload
    with pytest.raises(Unauthorized) as info:
        signer.verify(f"{forged}.{sig}", now=1000.0)
    assert type(info.value) is Unauthorized
    assert info.value.message_zh == "登录凭证无效，请重新登录。"


def test_tampered_signature_or_other_key_is_refused() -> None:
    signer = Signer(KEY)
    payload, sig = signer.issue(claims()).split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    for token in (f"{payload}.{flipped}", Signer(b"o" * 32).issue(claims())):
        with pytest.raises(Unauthorized):
            signer.verify(token, now=1000.0)


def test_expired_token() -> None:
    signer = Signer(KEY)
    token = signer.issue(claims(exp=2000.0))
    assert signer.verify(token, now=1999.9).sub == "c1"
    with pytest.raises(TokenExpired) as info:
        signer.verify(token, now=2000.0)
    assert info.value.code == "token_expired" and info.value.status == 401
    assert info.value.message_zh == "登录已过期，请重新登录。"


@pytest.mark.parametrize("token", [
    "", ".", "garbage", "a.b.c", "x" * 5000, "令牌.签名",
])
def test_garbage_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized) as info:
        Signer(KEY).verify(token, now=0.0)
    assert type(info.value) is Unauthorized


def test_signed_but_wrong_shape_is_unauthorized() -> None:
    # Only a key holder could make these; still no crash if one ever did.
    signer = Signer(KEY)
    for body in (b"[]", b'{"role":"admin","sub":"x","exp":9}', b"\xff"):
        payload = b64(body)
        sig = b64(hmac.new(KEY, payload.encode(), hashlib.sha256).digest())
        assert signer.verify(signer.issue(claims()), now=0.0)  # the same recipe is accepted
        with pytest.raises(Unauthorized):
            signer.verify(f"{payload}.{sig}", now=0.0)


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Signer(b"short")


# --- the shared key ------------------------------------------------------------------------


def test_load_secret_agrees_across_calls_and_pools(settings: Settings) -> None:
    # A fresh schema so the key is created here, by two pools racing like two processes.
    schema = f"{settings.database_schema}_key"

    async def run() -> None:
        async with database(settings, schema) as one, database(settings, schema) as two:
            try:
                a, b = await asyncio.gather(load_secret(one), load_secret(two))
                assert a == b and len(a) == 32
                assert await load_secret(one) == a and await load_secret(two) == a
            finally:
                await one.execute(f"DROP SCHEMA {schema} CASCADE")

    asyncio.run(run())


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
                assert info.value.message_zh.startswith("参赛码无效") and info.value.status == 403

    asyncio.run(run())
