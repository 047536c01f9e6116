"""The case library: every case file in the cases folder, validated at load.

A case with a mistake is refused with its path and every problem; the server
does not start half-loaded, because a contestant must never meet a broken case.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from arena.cases import Case, check_case
from arena.errors import CaseInvalid, CaseNotFound
from arena.matching import QuestionMatcher
from arena.patient import PatientView, patient_view


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


class Library:
    """Loaded cases with their patient views and question matchers, built once."""

    def __init__(self, cases: list[Case]) -> None:
        self.cases = {c.id: c for c in cases}
        self.views = {c.id: patient_view(c) for c in cases}
        self.matchers = {c.id: QuestionMatcher(c.facts) for c in cases}

    @classmethod
    def load(cls, folder: Path) -> Library:
        report = check_folder(folder)
        for path, problems in report.items():
            if problems:
                raise CaseInvalid(str(path), problems)
        return cls([check_case(p.read_bytes())[0] for p in report])  # type: ignore[misc]

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
