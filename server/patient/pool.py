"""The matching pool: questions matched for scoring in a low-priority worker process.

Matching a question embeds it and segments it with jieba: milliseconds of CPU, most of
it pure Python. The patient's answer does not need it and the score is only computed at
submission, so it runs in a `concurrent.futures.ProcessPoolExecutor` of one worker at
nice 19. A thread was tried first: it held the GIL for up to the 5 ms switch interval
at a time, so a burst of questions stalled the event loop that relays the answers, and
a niced thread holding the GIL is a priority inversion. A process shares nothing with
the loop but the CPU, and the kernel gives it only what the server, PostgreSQL and
Valkey leave idle.

Start-up is where the time went (docs/benchmarks.md, restart): a worker that imported
the server, loaded jieba's dictionary, the intent bank and the e5 model and built every
case's matcher took seconds, while the server did the same again. Now `start` does it
once, in the server, before it listens (the scripted patient needs the matchers too),
and forks the worker from it, which has everything at once, shared copy-on-write. A fork
is only safe while the server has one thread: a worker started later (after one died),
or beside other threads (a test server), is spawned instead and loads for itself.

`check` says not ready (for `/readyz`) until the worker has answered a first request,
and starts a new worker when the last one died. A match the dead worker held is tried
once more on a new one, then fails (`MatcherGone`: the turn stays unmatched and is
matched again when the contestant rejoins). The worker exits when the server does, even
after a `kill -9`. `arena_background_backlog` shows how far behind it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import msgspec

from arena.cases import Case
from server.metrics import BACKGROUND_BACKLOG
from server.services.library import Library

log = logging.getLogger(__name__)

NICE = 19  # only what everything else leaves idle

_Request = tuple[str, str, tuple[str, ...]]  # case id, question, topic (the turn before)


class MatcherGone(Exception):
    """The matching process stopped, or could not match, before it answered."""


class _WorkerDied(MatcherGone):
    """The worker died holding the request (or before it took it)."""


class _Source(msgspec.Struct, frozen=True):
    """What a spawned worker needs to build the library the server has (a forked one
    inherits the library itself)."""

    cases: bytes  # the server's decoded cases, re-encoded: not re-read from the folder
    embeddings: bool
    cache_dir: str  # "" = no disk cache

    def library(self) -> Library:
        cases = msgspec.json.decode(self.cases, type=list[Case])
        cache = Path(self.cache_dir) if self.cache_dir else None
        return Library(cases, "auto" if self.embeddings else None, cache)


class Background:
    """Question matching for scoring, in a worker process (see the module docstring)."""

    def __init__(self, library: Library, *, nice: int = NICE) -> None:
        self._library = library
        self._nice = nice
        self._executor: ProcessPoolExecutor | None = None
        self._ready: asyncio.Future[None] | None = None  # the worker's first answer
        self._closed = False
        self._batch: list[tuple[_Request, asyncio.Future[tuple[str, ...]]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        procs = _processes(self._executor)
        return procs[0].pid if procs else None

    async def start(self) -> None:
        """Start the worker if none is running. The first start builds every matcher
        here, blocking the loop for a second or more: call it before the server listens."""
        if self._closed:
            raise MatcherGone("the server is stopping")
        if _dead(self._executor):
            self._drop(self._executor)  # died since: replaced now, not at the next failure
        if self._executor is not None:
            return
        matchers = self._library.matchers
        # jieba's dictionary, the intent bank, the e5 model and every case's matcher, on
        # this thread (so that a fork below is still safe): the server needs them too, and
        # a forked worker inherits them. At once after the first start.
        matchers.warm()
        source: Library | _Source
        if _single_threaded():
            context, source = "fork", self._library  # inherited, never pickled
        else:  # a fork now could inherit a lock another thread holds
            context, source = "spawn", _Source(
                msgspec.json.encode(list(self._library.cases.values())), matchers.embeds,
                str(matchers.cache_dir or ""),
            )
        self._executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context(context),
            initializer=_load, initargs=(source, self._nice),
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns of any fork while the process has another OS thread;
            # here the only one is OpenBLAS's (see _single_threaded). The first submit forks.
            warnings.filterwarnings("ignore", ".*use of fork", DeprecationWarning)
            self._ready = self._submit(_ping)
        # Read by `check` when a probe comes; a worker that dies first must not be logged
        # as an error nobody retrieved.
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    def renew(self) -> None:
        """The library changed (the case editor published a case): the next request starts
        a worker that has it. The running worker finishes what it holds, then exits; until
        then nothing is matched against a library that lacks the case."""
        executor, self._executor, self._ready = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=False)

    async def check(self) -> str | None:
        """None once the worker answers, else why not (for /readyz). A worker that died
        is replaced here, so a probe brings matching back before a submission needs it."""
        if self._closed:
            return "题目匹配已停止 (question matching stopped)"
        await self.start()
        ready = self._ready
        if ready is not None and ready.done() and ready.exception() is not None:
            self._drop(self._executor)
            await self.start()
            ready = self._ready
        if ready is None or not ready.done():
            return "题目匹配正在加载病例库 (question matching is loading the case library)"
        return None

    async def match(self, case_id: str, question: str, topic: tuple[str, ...]) -> tuple[str, ...]:
        """The facts `question` asks about, as `QuestionMatcher.match` finds them."""
        BACKGROUND_BACKLOG.inc()
        try:
            try:
                return await self._queued((case_id, question, topic))
            except _WorkerDied:
                # Once more, on a new worker: the request may have reached the last one in
                # the moment between its death and the executor noticing it.
                return await self._queued((case_id, question, topic))
        finally:
            BACKGROUND_BACKLOG.dec()

    def _queued(self, request: _Request) -> asyncio.Future[tuple[str, ...]]:
        """`request` joins the batch the next loop iteration sends.

        The executor hands every submission and every result to the worker through a
        thread of its own, which takes the GIL from the event loop each time it wakes. A
        hundred students asking at once were a hundred wake-ups while their answers began:
        server CPU per relayed token +7-15 % and TTFT p50 +25 ms against the child process
        this pool replaced (docs/benchmarks.md, "The rebuild (issue 11)"). A batch is one.
        """
        loop = asyncio.get_running_loop()
        out: asyncio.Future[tuple[str, ...]] = loop.create_future()
        if not self._batch:
            task = loop.create_task(self._flush())
            self._flushing.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._flushing.discard)
        self._batch.append((request, out))
        return out

    async def _flush(self) -> None:
        batch, self._batch = self._batch, []
        try:
            await self.start()
            results = await self._submit(_match_many, [request for request, _ in batch])
        except MatcherGone as exc:  # a dead worker (the callers try once more), or stopping
            for _, out in batch:
                if not out.done():
                    out.set_exception(exc)
            return
        for (_, out), result in zip(batch, results, strict=True):
            if out.done():  # the caller stopped waiting
                continue
            if isinstance(result, str):  # that request failed alone; the worker goes on
                out.set_exception(MatcherGone(result))
            else:
                out.set_result(result)

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """`fn(*args)` in the worker, as an asyncio future that fails only with MatcherGone."""
        executor = self._executor
        assert executor is not None
        loop = asyncio.get_running_loop()
        out: asyncio.Future[Any] = loop.create_future()
        try:
            done = executor.submit(fn, *args)
        except (BrokenProcessPool, RuntimeError) as exc:  # died, or shut down
            self._drop(executor)
            raise _WorkerDied(f"matching process stopped ({exc})") from exc

        def settle(done: Future[Any]) -> None:
            if out.done():  # the caller stopped waiting
                return
            if done.cancelled():
                out.set_exception(MatcherGone("the server is stopping"))
            elif isinstance(exc := done.exception(), BrokenProcessPool):
                self._drop(executor)
                out.set_exception(_WorkerDied("matching process stopped"))
            elif exc is not None:  # one bad request; the worker goes on
                out.set_exception(MatcherGone(f"{type(exc).__name__}: {exc}"))
            else:
                out.set_result(done.result())

        def relay(done: Future[Any]) -> None:  # on the executor's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, done)

        done.add_done_callback(relay)
        return out

    def _drop(self, executor: ProcessPoolExecutor | None) -> None:
        """Forget `executor` (its worker died or failed to load); the next call starts one."""
        if executor is None or executor is not self._executor:
            return
        log.error("the matching process stopped; pending matches fail")
        self._executor, self._ready = None, None
        procs = _processes(executor)
        executor.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            with contextlib.suppress(OSError, ValueError):
                p.kill()

    async def close(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        procs = _processes(executor)
        executor.shutdown(wait=False, cancel_futures=True)  # it exits after its current match
        # Mid-load it may not read the end for seconds: a test server stops sooner.
        await asyncio.to_thread(_reap, procs, 1.0)


def _single_threaded() -> bool:
    """Whether a fork is safe: no other Python thread can hold a lock the worker needs.
    (numpy's OpenBLAS has a native thread of its own, and re-creates its pool in a child
    through pthread_atfork.)"""
    return threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


def _dead(executor: ProcessPoolExecutor | None) -> bool:
    """Whether `executor`'s worker has died. The executor's own thread marks it broken;
    before it has, the worker's exit is seen here first."""
    if executor is None:
        return False
    return bool(executor._broken) or any(not p.is_alive() for p in _processes(executor))


def _processes(executor: ProcessPoolExecutor | None) -> list[BaseProcess]:
    # The executor keeps its workers private; their liveness is what readiness needs.
    return list(executor._processes.values()) if executor is not None else []


def _reap(procs: list[BaseProcess], timeout: float) -> None:
    for p in procs:
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            p.join()


# ---- in the worker ------------------------------------------------------------------

_library: Library | None = None


def _load(source: Library | _Source, nice: int) -> None:
    """The worker's initializer: every matcher built, then nice."""
    global _library
    # A forked worker has the server's signal handlers and its event loop's wakeup fd: a
    # signal here must neither wake the server's loop nor run its shutdown. Ctrl-C is
    # the server's to handle; it stops the worker.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, name="arena-pool-orphan", daemon=True).start()
    library = source if isinstance(source, Library) else source.library()
    # A spawned worker builds every matcher here, at the server's priority: until then the
    # server is not ready, and a busy machine starved such a load at nice 19 for tens of
    # seconds. A forked one has them.
    library.matchers.warm()
    with contextlib.suppress(OSError):
        os.nice(nice)
    _library = library


def _exit_with_parent() -> None:
    """Exit when the server does, however it stopped: a worker waiting for requests on
    a queue whose writing end it holds itself would otherwise outlive a `kill -9`."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(0)


def _ping() -> None:
    """Answered once the initializer has run: the worker is ready."""


def _match(case_id: str, question: str, topic: tuple[str, ...]) -> tuple[str, ...]:
    assert _library is not None
    matches = _library.matchers[case_id].match(question, topic=topic)
    return tuple(m.fact_id for m in matches)


def _match_many(requests: list[_Request]) -> list[tuple[str, ...] | str]:
    """Each request's facts, or why that request failed (the others still count)."""
    out: list[tuple[str, ...] | str] = []
    for case_id, question, topic in requests:
        try:
            out.append(_match(case_id, question, topic))
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
    return out
