"""Background: matching questions for scoring, in a low-priority child process.

Matching a question embeds it and segments it with jieba: 3-5 ms of CPU, most of it
pure Python. The patient's answer does not need it and the score is only computed at
submission, so it runs here, in one child process (`python -m server.patient.pool`)
that loads the same case library and then runs at nice 19 (it loads at the server's
priority: until it has loaded the server is not ready, and a busy machine starved a
load at nice 19 for tens of seconds). A thread was tried first: it held the GIL for up
to the 5 ms switch interval at a time, so a burst of questions stalled the event loop
that relays the answers, and a niced thread holding the GIL is a priority inversion. A
process shares nothing with the loop but the CPU, and the kernel gives it only what the
server, PostgreSQL and Valkey leave idle.

The child speaks JSON lines on stdin/stdout: a request per line, a reply per line in
the same order, after a first reply with id 0 once it has loaded the library: until
then a match would wait seconds, so `/readyz` says not ready (`check`). Writes are
buffered by the transport, so a burst of 500 questions never blocks the loop. If the
child dies its pending matches fail (the turns stay unmatched and are matched again when
the contestant rejoins) and the next request, or the next readiness probe, starts a new
child. `arena_background_backlog` shows how far behind it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from pathlib import Path

import msgspec

from server.metrics import BACKGROUND_BACKLOG

log = logging.getLogger(__name__)

NICE = 19  # only what everything else leaves idle


class MatchRequest(msgspec.Struct, array_like=True):
    id: int
    case_id: str
    question: str
    topic: tuple[str, ...]


class MatchReply(msgspec.Struct, array_like=True):
    id: int
    fact_ids: tuple[str, ...] = ()
    error: str = ""


class MatcherGone(Exception):
    """The matching process stopped, or could not match, before it answered."""


class Background:
    def __init__(
        self, cases_dir: Path, *, embeddings: bool, cache_dir: Path | None = None,
    ) -> None:
        # "" = no embedding cache (an argv entry cannot be None).
        self._args = (str(cases_dir), "1" if embeddings else "0", str(cache_dir or ""))
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[str, ...]]] = {}
        self._encode = msgspec.json.Encoder().encode
        self._starting = asyncio.Lock()
        self._loaded = False  # the running child has said it loaded the library
        self._closed = False

    async def start(self) -> None:
        """Start the child now, so that it loads the library while the server starts.

        `_proc` is cleared only when the reader has seen the child's output end (and
        failed what it held), so a new child never starts with old requests pending."""
        if self._proc is not None:
            return
        async with self._starting:
            if self._proc is not None:
                return
            if self._closed:
                raise MatcherGone("the server is stopping")
            self._loaded = False
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.patient.pool", *self._args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=1 << 20,
            )
            self._reader = asyncio.create_task(
                self._read(self._proc), name="arena-matcher-replies"
            )

    async def check(self) -> str | None:
        """None once a child has loaded the library, else why not (for /readyz).

        A child that died is replaced here, so a probe brings matching back before the
        next submission has to wait for it."""
        if self._closed:
            return "题目匹配已停止 (question matching stopped)"
        await self.start()
        if not self._loaded:
            return "题目匹配正在加载病例库 (question matching is loading the case library)"
        return None

    async def match(self, case_id: str, question: str, topic: tuple[str, ...]) -> tuple[str, ...]:
        """The facts `question` asks about, as `QuestionMatcher.match` finds them."""
        await self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        rid = next(self._ids)
        fut: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        BACKGROUND_BACKLOG.inc()
        try:
            proc.stdin.write(self._encode(MatchRequest(rid, case_id, question, topic)) + b"\n")
            return await fut
        finally:
            BACKGROUND_BACKLOG.dec()
            self._pending.pop(rid, None)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        decode = msgspec.json.Decoder(MatchReply).decode
        try:
            while line := await proc.stdout.readline():
                reply = decode(line)
                if reply.id == 0:
                    self._loaded = self._proc is proc
                    continue
                fut = self._pending.get(reply.id)
                if fut is None or fut.done():
                    continue
                if reply.error:
                    fut.set_exception(MatcherGone(reply.error))
                else:
                    fut.set_result(reply.fact_ids)
        except (OSError, ValueError, msgspec.DecodeError):
            log.exception("reading the matching process failed")
        if self._proc is proc:
            log.error("the matching process stopped; pending matches fail")
            self._proc = None
        # Every request still pending was written to this child (or the server is closing).
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MatcherGone("matching process stopped"))

    async def close(self) -> None:
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # end of input: the child exits after its current match
        try:
            # Mid-load it may not read the end for seconds: a test server stops sooner.
            async with asyncio.timeout(1.0):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader


def _serve(cases_dir: str, embeddings: bool, cache_dir: str = "") -> None:
    """The child: load the library as the server does, then match a line at a time."""
    from server.services.library import Library  # only the child loads it a second time

    library = Library.load(
        Path(cases_dir), "auto" if embeddings else None, Path(cache_dir) if cache_dir else None,
    )
    with contextlib.suppress(OSError):
        os.nice(NICE)
    out = sys.stdout.buffer
    encode = msgspec.json.Encoder().encode
    out.write(encode(MatchReply(0)) + b"\n")  # loaded: matches are answered at once now
    out.flush()
    decode = msgspec.json.Decoder(MatchRequest).decode
    for line in sys.stdin.buffer:
        req = decode(line)
        try:
            matches = library.matchers[req.case_id].match(req.question, topic=req.topic)
            reply = MatchReply(req.id, tuple(m.fact_id for m in matches))
        except Exception as exc:  # one bad request must not end the child
            reply = MatchReply(req.id, error=f"{type(exc).__name__}: {exc}")
        out.write(encode(reply) + b"\n")
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2] == "1", sys.argv[3] if len(sys.argv) > 3 else "")
