"""Channel epochs: a client is never handed a restarted stream as the sequel of the old one.

The bus is driven against the real Valkey (keys under a prefix of their own), then a
real server: a spectator and a contestant hold a position (epoch, cseq) on the round
channel, Redis loses the deployment's keys, the organizer carries on until the new
stream has passed their old numbers, and each reconnects naming its old epoch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aredis

from server import protocol
from server.settings import Settings
from server.store.bus import Bus, Gap
from tests.support import Api, Client, make_round, own_schema, running_server


def _delete(url: str, prefix: str, *names: str) -> int:
    """Delete this prefix's keys (all, or those named): Redis losing them. The Valkey is
    shared with the rest of the session, so never FLUSHALL here (test_redis_faults does,
    on a Valkey of its own)."""
    r = redis.Redis.from_url(url)
    try:
        keys = [prefix + n for n in names] if names else list(r.scan_iter(f"{prefix}*"))
        return int(r.delete(*keys)) if keys else 0
    finally:
        r.close()


def _bus_run(settings: Settings, history: int, steps: Any) -> Any:
    async def run() -> Any:
        client = aredis.Redis.from_url(settings.redis_url)
        try:
            prefix = f"{settings.redis_prefix}bus-{uuid.uuid4().hex[:6]}:"
            return await steps(Bus(client, prefix, history=history), prefix)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _body(i: int) -> bytes:
    return protocol.encode(protocol.Reload(channel=f"m{i}"))


def test_the_epoch_rides_in_every_message_and_survives_until_the_counter_is_lost(
    settings: Settings,
) -> None:
    async def steps(bus: Bus, prefix: str) -> None:
        assert await bus.position("c") == ("", 0)
        for i in (1, 2, 3):
            assert await bus.publish("c", _body(i)) == i
        first, last = await bus.position("c")
        assert first and last == 3
        missed = await bus.replay("c", 1, first)
        assert isinstance(missed, list) and [c for c, _ in missed] == [2, 3]
        for _, body in missed:
            msg = protocol.decode_server(body)
            assert isinstance(msg, protocol.Reload) and msg.epoch == first
        assert await bus.replay("c", 1) == missed  # no epoch: by number, as before epochs
        assert await bus.replay("c", 3, first) == []

        # Redis loses the channel; the organizer goes on past the numbers clients hold.
        assert _delete(settings.redis_url, prefix, "seq:c", "epoch:c", "hist:c") == 3
        for i in (1, 2, 3, 4):
            assert await bus.publish("c", _body(10 + i)) == i
        second, last = await bus.position("c")
        assert second and second != first and last == 4
        assert await bus.replay("c", 1, first) == Gap(reason="epoch")
        assert await bus.replay("c", 3, first) == Gap(reason="epoch")
        again = await bus.replay("c", 2, second)
        assert isinstance(again, list) and [c for c, _ in again] == [3, 4]
        assert protocol.decode_server(again[0][1]).epoch == second

    _bus_run(settings, 500, steps)


def test_a_lost_counter_alone_starts_a_new_epoch_and_publishing_goes_on(
    settings: Settings,
) -> None:
    # An eviction, or a partial restore, can take the counter and leave the stream (whose
    # entry ids are above the restarted counter) and the old epoch behind.
    async def steps(bus: Bus, prefix: str) -> None:
        for i in (1, 2, 3):
            await bus.publish("c", _body(i))
        first, _ = await bus.position("c")
        assert _delete(settings.redis_url, prefix, "seq:c") == 1
        assert await bus.publish("c", _body(4)) == 1
        second, last = await bus.position("c")
        assert second != first and last == 1
        assert await bus.replay("c", 0, first) == Gap(reason="epoch")
        fresh = await bus.replay("c", 0, second)
        assert isinstance(fresh, list) and [c for c, _ in fresh] == [1]
        assert protocol.decode_server(fresh[0][1]) == protocol.Reload(
            channel="m4", epoch=second)

    _bus_run(settings, 500, steps)


def test_a_gap_older_than_the_history_is_trimmed_not_a_new_epoch(settings: Settings) -> None:
    async def steps(bus: Bus, prefix: str) -> None:
        for i in range(1, 8):
            await bus.publish("c", _body(i))
        epoch, _ = await bus.position("c")
        assert await bus.replay("c", 1, epoch) == Gap(reason="trimmed")
        near = await bus.replay("c", 4, epoch)
        assert isinstance(near, list) and [c for c, _ in near] == [5, 6, 7]

    _bus_run(settings, 3, steps)


# ---------------------------------------------------------------------- through a server


@pytest.fixture(scope="module")
def own(settings: Settings) -> Iterator[Settings]:
    # A schema and prefix of its own: this module deletes its keys mid-round.
    with own_schema(settings, "epochs") as s:
        yield s


@pytest.fixture(scope="module")
def url(own: Settings) -> Iterator[str]:
    with running_server(own) as u:
        yield u


def _state(c: Client, check: Any = lambda m: True) -> protocol.RoundState:
    msg: protocol.RoundState = c.until(
        lambda m: isinstance(m, protocol.RoundState) and check(m))
    return msg


def _replayed(c: Client) -> list[protocol.RoundState]:
    return [m for m in c.received if isinstance(m, protocol.RoundState) and m.cseq]


def _running(org: Api) -> tuple[str, str, str]:
    """A running round: (round id, a contestant's token, a spectator's token)."""
    _, rid, roster = make_round(org, people=1, countdown_s=0, duration_s=600)
    token = org.join(roster[0]["join_code"])["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    screen = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    return rid, token, screen


def _restart_stream(own: Settings, org: Api, rid: str, past: int) -> None:
    """Redis loses this deployment's keys; the organizer then acts until the new round
    stream has passed `past`, so numbers alone would replay it without a gap."""
    assert _delete(own.redis_url, own.redis_prefix) > 0
    actions: list[tuple[str, dict[str, Any]]] = [
        ("pause", {"reason": "重建后暂停"}), ("resume", {}),
        ("extend", {"reason": "补时", "seconds": 60})] * 3
    for action, fields in actions[:past + 1]:
        org.action(rid, action, **fields)


def test_a_spectator_from_before_redis_lost_the_round_gets_reload_then_the_state(
    url: str, own: Settings,
) -> None:
    org = Api.login(url)
    rid, _, screen = _running(org)
    ch = f"round:{rid}"
    with Client(url) as spectator:
        spectator.hello(token=screen)
        _state(spectator)
        org.action(rid, "pause", reason="第一次暂停")
        seen = _state(spectator, lambda m: m.change == "round_paused")
        assert (seen.ch, seen.cseq) == (ch, 3) and seen.epoch

    # Within the epoch, what was missed is replayed.
    org.action(rid, "resume")
    with Client(url) as spectator:
        spectator.hello(token=screen, since={ch: seen.cseq}, epoch={ch: seen.epoch})
        _state(spectator, lambda m: m.change == "")
        assert [(m.cseq, m.change, m.epoch) for m in _replayed(spectator)][:1] == [
            (4, "round_resumed", seen.epoch)]
        assert not any(isinstance(m, protocol.Reload) for m in spectator.received)

    _restart_stream(own, org, rid, past=4)
    with Client(url) as spectator:
        spectator.hello(token=screen, since={ch: 4}, epoch={ch: seen.epoch})
        reload: protocol.Reload = spectator.expect("reload")
        assert (reload.channel, reload.reason) == (ch, "epoch changed")
        now = _state(spectator)
        assert now.change == "" and now.cseq == 5 and not now.clock.paused
        # Nothing of the new stream came as if it followed message 4 of the old one.
        assert [m.cseq for m in _replayed(spectator)] == [5]
        # The new stream goes on, with its own epoch.
        org.action(rid, "pause", reason="再次暂停")
        new = _state(spectator, lambda m: m.change == "round_paused")
        assert new.cseq == 6 and new.epoch and new.epoch != seen.epoch


def test_a_contestant_from_before_redis_lost_the_round_gets_reload_then_plays_on(
    url: str, own: Settings,
) -> None:
    org = Api.login(url)
    rid, token, _ = _running(org)
    ch = f"round:{rid}"
    with Client(url) as a:
        a.hello(token=token)
        a.expect("play_state")
        assert a.answer("哪里不舒服？")[1].status == "ok"

    # A reconnect replays the missed message, from which the contestant learns the epoch.
    org.action(rid, "pause", reason="暂停")
    with Client(url) as a:
        a.hello(token=token, since={ch: 2})
        a.expect("play_state")
        replayed = _replayed(a)
        assert [(m.cseq, m.change) for m in replayed] == [(3, "round_paused")]
        epoch = replayed[0].epoch
        assert epoch

    org.action(rid, "resume")
    _restart_stream(own, org, rid, past=3)  # ends running: pause, resume, extend, pause
    org.action(rid, "resume")
    with Client(url) as a:
        a.hello(token=token, since={ch: 3}, epoch={ch: epoch})
        reload: protocol.Reload = a.expect("reload")
        assert (reload.channel, reload.reason) == (ch, "epoch changed")
        play: protocol.PlayState = a.expect("play_state")
        assert [t.question for t in play.transcript] == ["哪里不舒服？"]
        assert _replayed(a) == []
        text, end, _ = a.answer("疼了多久了？")
        assert end.status == "ok" and text


def test_every_message_that_carries_a_cseq_carries_its_epoch(url: str) -> None:
    org = Api.login(url)
    rid, token, _ = _running(org)
    with Client(url) as a, Client(url) as judge:
        a.hello(token=token)
        a.expect("play_state")
        judge.hello(token=org.token)
        judge.request("watch", round_id=rid)
        first = _state(judge)
        org.action(rid, "pause", reason="暂停")
        mine = _state(a, lambda m: m.change == "round_paused")
        for m in (first, mine):
            assert m.cseq and m.epoch, msgspec.to_builtins(m)

