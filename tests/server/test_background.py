"""The matching pool (server.patient.pool): the same facts as the in-process matcher,
forked or spawned; a new worker after one dies; a prompt stop; no orphan after a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from arena.cases import Case
from server.patient.pool import Background, MatcherGone
from server.services.library import Library

# Starts what it needs itself (or needs no service): the external pass skips it.
pytestmark = pytest.mark.own_services

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "cases"
QUESTIONS = ["胸口疼多久了？", "抽烟吗？喝酒吗？", "以前得过什么病？", "有没有药物过敏？"]


@pytest.fixture(scope="module")
def library() -> Library:
    return Library.load(CASES, None)


@pytest.fixture
def other_thread() -> Iterator[None]:
    """A second thread, as a running server has: the pool must spawn, not fork."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    yield
    stop.set()
    thread.join()


def _expected(library: Library) -> list[tuple[str, ...]]:
    matcher = library.matchers["r8c3vn"]
    return [tuple(m.fact_id for m in matcher.match(q)) for q in QUESTIONS]


async def _matches(bg: Background) -> list[tuple[str, ...]]:
    async with asyncio.timeout(120):
        return list(await asyncio.gather(*(bg.match("r8c3vn", q, ()) for q in QUESTIONS)))


def test_a_forked_worker_matches_as_the_server_would(library: Library) -> None:
    async def main() -> list[tuple[str, ...]]:
        bg = Background(library)
        try:
            await bg.start()
            # The fork inherits what `start` loaded here: the worker itself loads nothing.
            assert library.matchers._resolved is not None
            return await _matches(bg)
        finally:
            await bg.close()

    got = asyncio.run(main())
    assert got == _expected(library)
    assert all(got)


def test_a_spawned_worker_matches_the_same(library: Library, other_thread: None) -> None:
    async def main() -> list[tuple[str, ...]]:
        bg = Background(library)
        try:
            return await _matches(bg)
        finally:
            await bg.close()

    assert asyncio.run(main()) == _expected(library)


def test_a_bad_request_fails_alone(library: Library) -> None:
    async def main() -> None:
        bg = Background(library)
        try:
            async with asyncio.timeout(60):
                with pytest.raises(MatcherGone, match="KeyError"):
                    await bg.match("no_such_case", QUESTIONS[0], ())
                pid = bg.pid
                assert await bg.match("r8c3vn", QUESTIONS[0], ())
                assert bg.pid == pid
        finally:
            await bg.close()

    asyncio.run(main())


def test_a_dead_worker_is_replaced_by_the_next_request(library: Library) -> None:
    async def main() -> None:
        bg = Background(library)
        try:
            async with asyncio.timeout(60):
                first = await bg.match("r8c3vn", QUESTIONS[0], ())
                pid = bg.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)  # the next request, at once, is answered
                assert await bg.match("r8c3vn", QUESTIONS[0], ()) == first
                assert bg.pid is not None and bg.pid != pid
        finally:
            await bg.close()

    asyncio.run(main())


def test_close_stops_the_worker_even_while_it_loads_and_fails_what_waits(
        other_thread: None) -> None:
    async def main() -> None:
        # Spawned, the worker loads jieba, the intent bank and the e5 model itself: seconds.
        bg = Background(Library.load(CASES, "auto"))
        waiting = asyncio.create_task(bg.match("r8c3vn", QUESTIONS[0], ()))
        await asyncio.sleep(0.3)
        pid = bg.pid
        assert pid is not None and not waiting.done()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await bg.close()
        assert loop.time() - began < 3
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        with pytest.raises(MatcherGone):  # told, not left waiting for ever
            await asyncio.wait_for(waiting, 1)

    asyncio.run(main())


def test_not_ready_until_the_worker_answers_and_a_dead_worker_is_replaced_by_the_probe(
        library: Library, other_thread: None) -> None:
    async def main() -> None:
        bg = Background(library)
        try:
            async with asyncio.timeout(120):
                assert "loading" in (await bg.check() or "")  # spawned: it imports, loads
                pid = bg.pid
                assert pid is not None
                while await bg.check() is not None:
                    await asyncio.sleep(0.01)
                # Ready: a match is answered by the same worker, without another load.
                assert await bg.match("r8c3vn", QUESTIONS[0], ())
                assert bg.pid == pid
                os.kill(pid, signal.SIGKILL)
                # Seen by the next probe once the kernel has reaped it: a new worker, loading.
                while (status := await bg.check()) is None:
                    await asyncio.sleep(0.01)
                assert "loading" in status
                assert bg.pid is not None and bg.pid != pid
                while await bg.check() is not None:
                    await asyncio.sleep(0.01)
        finally:
            await bg.close()
        assert "stopped" in (await bg.check() or "")
        assert bg.pid is None  # a probe after close starts nothing

    asyncio.run(main())


@pytest.mark.parametrize("threads", [False, True], ids=["forked", "spawned"])
def test_the_worker_exits_when_the_server_is_killed(threads: bool) -> None:
    code = """if True:
        import asyncio, sys, threading
        from pathlib import Path
        from server.patient.pool import Background
        from server.services.library import Library
        if sys.argv[2] == "1":  # a second thread: the worker is spawned, not forked
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        bg = Background(Library.load(Path(sys.argv[1]), None))
        async def main():
            await bg.match("r8c3vn", "抽烟吗", ())
            print(bg.pid, flush=True)
            await asyncio.sleep(600)
        asyncio.run(main())
    """
    with subprocess.Popen(
        [sys.executable, "-c", code, str(CASES), str(int(threads))],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    ) as server:
        try:
            assert server.stdout is not None
            worker = psutil.Process(int(server.stdout.readline()))
            assert worker.ppid() == server.pid
            server.kill()
            server.wait(10)
            end = time.monotonic() + 10
            while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < end, "the worker outlived the server"
                time.sleep(0.05)
        finally:
            server.kill()


def test_a_case_published_at_run_time_is_matched_after_renew(library: Library) -> None:
    """The case editor adds a case to the running library; the worker it started with does
    not have it. After `renew` the next match runs in a worker that does."""
    case = msgspec.json.decode(msgspec.json.encode(library.cases["r8c3vn"]), type=Case)
    added = msgspec.structs.replace(case, id="pub001")
    fresh = Library.load(CASES, None)  # the module's library stays as it was

    async def main() -> tuple[tuple[str, ...], tuple[str, ...]]:
        bg = Background(fresh)
        try:
            await bg.start()
            before = await bg.match("r8c3vn", QUESTIONS[0], ())
            fresh.add(added)
            bg.renew()
            async with asyncio.timeout(120):
                return before, await bg.match("pub001", QUESTIONS[0], ())
        finally:
            await bg.close()

    before, after = asyncio.run(main())
    assert after == before and after
