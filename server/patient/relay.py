"""The relay: the one path every patient answer takes from an engine to a contestant.

`Relay` wraps the configured engine (and, for an LLM, the scripted patient as a
fallback) and adds what running hundreds of interviews at once needs:

- a `Gate`: at most `llm_max_concurrent` LLM generations at once, the rest waiting in
  FIFO order and told their place (never an endless wait: `llm_queue_timeout`), and at
  most one generation per contestant;
- a `Breaker`: after `llm_breaker_failures` failed LLM turns in a row, answers come from
  the scripted patient where the round allows it (practice always does) and fail at
  once otherwise; after `llm_breaker_cooldown` one real request probes the endpoint
  and a success switches back;
- the output guard (`arena.guard`): every answer, whichever engine plays the patient,
  is watched for answer-key terms; a hit closes the upstream stream at once and the
  patient deflects in character;
- `Frames`: text is sent the moment it arrives; only pieces that arrive within one turn
  of the event loop (an upstream burst) are coalesced into one frame. No timer ever
  holds text back: the inter-token target (docs/benchmarks.md) leaves no room for one.

Nothing here touches PostgreSQL or Redis: the per-token path is a guard step, a list
append and, per frame, one encode into the connection's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Literal

from arena.cases import Case
from arena.errors import TurnInProgress
from arena.guard import GuardTerm, Leak, OutputGuard, deflection, guard_terms
from arena.matching import QuestionMatcher
from arena.patient import PatientView, Turn
from server.metrics import (
    ANSWER_GAP,
    ANSWER_TTFT,
    LLM_ACTIVE,
    LLM_BREAKER,
    LLM_ERRORS,
    LLM_FALLBACKS,
    LLM_GUARD_HITS,
    LLM_QUEUE_WAIT,
    LLM_QUEUED,
)
from server.patient.llm import (
    Delta,
    Finished,
    LLMFailure,
    OpenAIEngine,
    PatientEngine,
    ScriptedEngine,
)
from server.settings import Settings

log = logging.getLogger("arena.relay")

BreakerState = Literal["closed", "open", "half_open"]
_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


class Breaker:
    """Closed → open after `threshold` failures in a row → half-open after `cooldown_s`,
    when exactly one request (the probe) may try → closed on its success, open again on
    its failure. A turn ended by the contestant says nothing about the endpoint:
    `released` gives its probe ticket back."""

    def __init__(
        self, *, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = max(1, threshold)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state: BreakerState = "closed"
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False
        LLM_BREAKER.set(0)

    def _set(self, state: BreakerState) -> None:
        if state != self.state:
            log.warning("LLM circuit breaker %s -> %s", self.state, state)
            self.state = state
            LLM_BREAKER.set(_GAUGE[state])

    def allow(self) -> Literal["yes", "probe", "no"]:
        """Whether a request may go to the endpoint now ("probe": it is the one test)."""
        if self.state == "closed":
            return "yes"
        if self.state == "open":
            if self._clock() - self._opened_at < self.cooldown_s:
                return "no"
            self._set("half_open")
        if self._probing:
            return "no"
        self._probing = True
        return "probe"

    def succeeded(self) -> None:
        self.failures = 0
        self._probing = False
        self._set("closed")

    def failed(self) -> None:
        self.failures += 1
        self._probing = False
        if self.state == "half_open" or self.failures >= self.threshold:
            self._opened_at = self._clock()
            self._set("open")

    def released(self, probe: bool) -> None:
        if probe:
            self._probing = False


class _Waiter:
    __slots__ = ("fut", "granted", "key", "notify", "told")

    def __init__(self, key: str, notify: Callable[[int], None], fut: asyncio.Future[None]) -> None:
        self.key, self.notify, self.fut = key, notify, fut
        self.told = 0
        self.granted = False


class Gate:
    """At most `cap` generations at once, one per key; the rest wait first come, first
    served. A waiter is told its place when it joins, again when the place changes (at
    most every `notice_s`, only those whose place changed) and 0 when its turn comes."""

    def __init__(self, cap: int, *, notice_s: float = 0.25) -> None:
        self.cap = max(1, cap)
        self.notice_s = notice_s
        self.active: set[str] = set()
        self.queue: deque[_Waiter] = deque()
        self._waiting: set[str] = set()
        self._notice: asyncio.TimerHandle | None = None
        self._noticed_at = 0.0

    def positions(self) -> dict[str, int]:
        return {w.key: i for i, w in enumerate(self.queue, 1)}

    async def acquire(self, key: str, notify: Callable[[int], None], timeout: float) -> None:
        if key in self.active or key in self._waiting:
            raise TurnInProgress(
                "病人还在回答上一个问题，请稍候。", "The patient is still answering."
            )
        if len(self.active) < self.cap and not self.queue:
            self._take(key)
            return
        w = _Waiter(key, notify, asyncio.get_running_loop().create_future())
        self.queue.append(w)
        self._waiting.add(key)
        LLM_QUEUED.set(len(self.queue))
        w.told = len(self.queue)
        notify(w.told)
        try:
            async with asyncio.timeout(timeout):
                await w.fut
        except BaseException as exc:
            if w.granted:  # handed a slot just as it gave up: pass it on
                self.release(key)
            else:
                self._waiting.discard(key)
                with contextlib.suppress(ValueError):
                    self.queue.remove(w)
                LLM_QUEUED.set(len(self.queue))
                self._changed()
            if isinstance(exc, TimeoutError):
                LLM_ERRORS.labels(engine="llm", kind="busy").inc()
                raise LLMFailure("busy", detail=f"queued over {timeout:g} s") from None
            raise
        notify(0)

    def _take(self, key: str) -> None:
        self.active.add(key)
        LLM_ACTIVE.set(len(self.active))

    def release(self, key: str) -> None:
        self.active.discard(key)
        handed = False
        while self.queue and len(self.active) < self.cap:
            w = self.queue.popleft()
            self._waiting.discard(w.key)
            if w.fut.done():  # cancelled while queued; its own cleanup already ran
                continue
            w.granted = True
            self._take(w.key)
            w.fut.set_result(None)
            handed = True
        LLM_ACTIVE.set(len(self.active))
        if handed:
            LLM_QUEUED.set(len(self.queue))
            self._changed()

    def _changed(self) -> None:
        if self._notice is not None or not self.queue:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._noticed_at + self.notice_s - loop.time())
        self._notice = loop.call_later(delay, self._tell)

    def _tell(self) -> None:
        self._notice = None
        self._noticed_at = asyncio.get_running_loop().time()
        for i, w in enumerate(self.queue, 1):
            if w.told != i and not w.fut.done():
                w.told = i
                w.notify(i)


class Frames:
    """One answer's text on its way out, coalesced only within one loop iteration.

    The first piece goes out at once and opens a window that closes when the event loop
    comes round again (`call_soon`); pieces that arrive before then, the rest of a burst
    read in one go, are held and sent as one frame when it closes. Contestant-side
    latency is measured here: TTFT from `accepted`, then the gap between frames.
    """

    __slots__ = ("_emit", "_held", "_last", "_loop", "_open", "accepted", "engine")

    def __init__(self, emit: Callable[[str], None], accepted: float) -> None:
        self._emit = emit
        self.accepted = accepted
        self.engine: str | None = None  # label for the TTFT metric, set by the caller
        self._held: list[str] = []
        self._open = False
        self._last = 0.0
        self._loop = asyncio.get_running_loop()

    def push(self, text: str) -> None:
        if self._open:
            self._held.append(text)
            return
        self._send(text)
        self._open = True
        self._loop.call_soon(self._close)

    def _close(self) -> None:
        self._open = False
        self.flush()

    def flush(self) -> None:
        """Send what is held; call before the answer's end message."""
        if self._held:
            text = "".join(self._held)
            self._held.clear()
            self._send(text)

    def _send(self, text: str) -> None:
        now = time.perf_counter()
        if self._last:
            ANSWER_GAP.observe(now - self._last)
        else:
            ANSWER_TTFT.labels(engine=self.engine or "unknown").observe(now - self.accepted)
        self._last = now
        self._emit(text)


class Generation:
    """One patient answer through the relay: `texts()` is the text to show (guarded);
    afterwards `engine`, `finished` and `leak` say how it went. Raises LLMFailure."""

    def __init__(
        self,
        relay: Relay,
        *,
        key: str,
        case: Case,
        view: PatientView,
        history: Sequence[Turn],
        question: str,
        seed: int,
        fallback_ok: bool,
        on_queued: Callable[[int], None],
    ) -> None:
        self.relay = relay
        self.key, self.case, self.view = key, case, view
        self.history, self.question, self.seed = history, question, seed
        self.fallback_ok = fallback_ok
        self.on_queued = on_queued
        self.engine: PatientEngine = relay.primary
        self.finished: Finished | None = None
        self.leak: Leak | None = None
        self.queued_s = 0.0

    async def texts(self) -> AsyncGenerator[str, None]:
        """The answer's text as it may be shown; close it (aclosing) if you stop early."""
        relay = self.relay
        engine, probe = relay.choose(self.fallback_ok)
        if engine is relay.primary and relay.fallback is not None:
            began = time.perf_counter()
            try:
                await relay.gate.acquire(self.key, self.on_queued, relay.queue_timeout)
            except BaseException:
                relay.breaker.released(probe)
                raise
            self.queued_s = time.perf_counter() - began
            LLM_QUEUE_WAIT.observe(self.queued_s)
            try:
                if relay.breaker.state == "open" and not probe:
                    # The breaker opened while this answer waited: don't join the failures.
                    engine, probe = relay.choose(self.fallback_ok)
                if engine is relay.primary:
                    shown = False
                    try:
                        async for text in self._run(engine, probe):
                            shown = True
                            yield text
                        return
                    except LLMFailure as failure:
                        # Nothing shown yet and the endpoint is now declared down: this very
                        # turn can still be answered by the fallback, where it is allowed.
                        if shown or failure.partial or not self._can_fall_back():
                            raise
                        log.warning("LLM turn failed (%s); answering with the fallback", failure)
                    engine, probe = relay.fallback, False
            finally:
                relay.gate.release(self.key)
        async for text in self._run(engine, probe):
            yield text

    def _can_fall_back(self) -> bool:
        return self.fallback_ok and self.relay.breaker.state == "open"

    async def _run(self, engine: PatientEngine, probe: bool) -> AsyncGenerator[str, None]:
        relay = self.relay
        self.engine = engine
        if engine is not relay.primary:
            LLM_FALLBACKS.inc()
        judged = engine is not relay.primary or relay.fallback is None  # no breaker verdict
        guard = relay.guard(self.case, self.question, self.history)
        started = time.perf_counter()
        stream = engine.stream(self.view, self.history, self.question)
        try:
            try:
                async for ev in stream:
                    if isinstance(ev, Delta):
                        safe = guard.feed(ev.text)
                        if safe:
                            yield safe
                        if guard.leak is not None:
                            break
                    else:
                        self.finished = ev
            finally:
                # At once on a guard hit: closing the response is how vLLM learns to stop.
                await stream.aclose()  # type: ignore[attr-defined]
            if guard.leak is None:
                tail = guard.flush()
                if tail:
                    yield tail
        except LLMFailure as failure:
            if not judged:
                judged = True
                if failure.kind == "length":  # the model ran long; the endpoint is fine
                    relay.breaker.succeeded()
                else:
                    relay.breaker.failed()
            raise
        finally:
            if not judged and guard.leak is None and self.finished is None:
                relay.breaker.released(probe)  # the contestant left; no verdict
        if not judged:
            relay.breaker.succeeded()
        if guard.leak is not None:
            self.leak = guard.leak
            LLM_GUARD_HITS.inc()
            log.warning(
                "output guard: %s term %r in case %s, turn ended in character",
                guard.leak.kind, guard.leak.term, self.case.id,
            )
            done = self.finished
            self.finished = Finished(
                finish_reason="guard", usage=done.usage if done else None,
                ttft_ms=done.ttft_ms if done else None,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            yield deflection(self.view, self.seed)


class Relay:
    """The patient engine the server holds (`Context.engine`): the configured engine
    plus the gate, breaker, fallback and guard around it."""

    def __init__(
        self,
        settings: Settings,
        primary: PatientEngine,
        fallback: PatientEngine | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback  # None: the primary is the scripted patient already
        self.name = primary.name
        self.gate = Gate(settings.llm_max_concurrent)
        self.queue_timeout = settings.llm_queue_timeout
        self.breaker = Breaker(
            threshold=settings.llm_breaker_failures, cooldown_s=settings.llm_breaker_cooldown,
            clock=clock,
        )
        self._terms: dict[str, tuple[GuardTerm, ...]] = {}

    def choose(self, fallback_ok: bool) -> tuple[PatientEngine, bool]:
        """The engine for the next answer, and whether it is the breaker's probe."""
        if self.fallback is None:
            return self.primary, False
        verdict = self.breaker.allow()
        if verdict != "no":
            return self.primary, verdict == "probe"
        if fallback_ok:
            return self.fallback, False
        LLM_ERRORS.labels(engine=self.primary.name, kind="unavailable").inc()
        raise LLMFailure("unavailable", detail="circuit breaker open")

    def guard(self, case: Case, question: str, history: Sequence[Turn] = ()) -> OutputGuard:
        """A fresh guard for one answer; the case's terms are extracted once. It reads the
        answers already shown (`history`), so a term spelled a letter per answer, or a
        bare "对" to a follow-up of a guessed diagnosis, completes here and is caught."""
        terms = self._terms.get(case.id)
        if terms is None:
            terms = self._terms[case.id] = guard_terms(case)
        return OutputGuard(terms, allowed_text=question, history=history)

    def generate(
        self, *, key: str, case: Case, view: PatientView, history: Sequence[Turn],
        question: str, seed: int, fallback_ok: bool, on_queued: Callable[[int], None],
    ) -> Generation:
        """One answer through the gate, breaker and guard (see Generation)."""
        return Generation(
            self, key=key, case=case, view=view, history=history, question=question,
            seed=seed, fallback_ok=fallback_ok, on_queued=on_queued,
        )

    async def check(self) -> str | None:
        return await self.primary.check()

    async def aclose(self) -> None:
        await self.primary.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()


def make_engine(settings: Settings, matchers: Mapping[str, QuestionMatcher] | None = None) -> Relay:
    """The LLM engine when LLM_BASE_URL is set (with the scripted patient as its fallback),
    else the offline scripted patient; either behind the relay."""
    scripted = ScriptedEngine(settings, matchers=matchers)
    if settings.llm_base_url:
        return Relay(settings, OpenAIEngine(settings), scripted)
    return Relay(settings, scripted, None)
