"""The matching process (server.patient.pool): the same facts as the in-process matcher,
a new process after one dies, and a prompt stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from server.patient.pool import Background, MatcherGone
from server.services.library import Library

CASES = Path(__file__).resolve().parents[2] / "cases"
QUESTIONS = ["胸口疼多久了？", "抽烟吗？喝酒吗？", "以前得过什么病？", "有没有药物过敏？"]


def test_the_child_matches_as_the_server_would() -> None:
    library = Library.load(CASES, None)

    async def main() -> list[tuple[str, ...]]:
        bg = Background(CASES, embeddings=False)
        try:
            async with asyncio.timeout(60):
                return list(await asyncio.gather(*(
                    bg.match("r8c3vn", q, ()) for q in QUESTIONS
                )))
        finally:
            await bg.close()

    got = asyncio.run(main())
    matcher = library.matchers["r8c3vn"]
    assert got == [tuple(m.fact_id for m in matcher.match(q)) for q in QUESTIONS]
    assert all(got)


def test_a_dead_child_is_replaced_by_the_next_request() -> None:
    async def main() -> None:
        bg = Background(CASES, embeddings=False)
        try:
            async with asyncio.timeout(60):
                first = await bg.match("r8c3vn", QUESTIONS[0], ())
                proc = bg._proc
                assert proc is not None
                os.kill(proc.pid, signal.SIGKILL)
                while bg._proc is proc:  # until the reader sees the pipe close
                    await asyncio.sleep(0.01)
                assert await bg.match("r8c3vn", QUESTIONS[0], ()) == first
                assert bg._proc is not None and bg._proc.pid != proc.pid
        finally:
            await bg.close()

    asyncio.run(main())


def test_close_stops_the_child_even_while_it_loads_and_fails_what_waits() -> None:
    async def main() -> None:
        bg = Background(CASES, embeddings=True)  # loading e5 takes seconds
        waiting = asyncio.create_task(bg.match("r8c3vn", QUESTIONS[0], ()))
        await asyncio.sleep(0.1)
        proc = bg._proc
        assert proc is not None and not waiting.done()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await bg.close()
        assert proc.returncode is not None and loop.time() - began < 3
        with pytest.raises(MatcherGone):  # told, not left waiting for ever
            await asyncio.wait_for(waiting, 1)

    asyncio.run(main())


def test_not_ready_until_the_child_has_loaded_and_a_dead_child_is_replaced_by_the_probe(
) -> None:
    async def main() -> None:
        bg = Background(CASES, embeddings=False)
        try:
            async with asyncio.timeout(60):
                assert "loading" in (await bg.check() or "")  # jieba alone takes a second
                proc = bg._proc
                assert proc is not None
                while await bg.check() is not None:
                    await asyncio.sleep(0.01)
                # Loaded: a match is answered by the child without another load.
                assert await bg.match("r8c3vn", QUESTIONS[0], ())
                assert bg._proc is proc
                os.kill(proc.pid, signal.SIGKILL)
                while bg._proc is proc:
                    await asyncio.sleep(0.01)
                assert "loading" in (await bg.check() or "")  # a new child, loading
                assert bg._proc is not None and bg._proc.pid != proc.pid
                while await bg.check() is not None:
                    await asyncio.sleep(0.01)
        finally:
            await bg.close()
        assert "stopped" in (await bg.check() or "")
        assert bg._proc is None  # a probe after close starts nothing

    asyncio.run(main())
