"""The shared order menu: every exam and test, with a normal result for cases silent on it.

A menu built from each case's own items hints at the diagnosis: a case that lists
"冠状动脉造影" is a heart case. So every case is played with one menu, the catalogue
(`catalogue.tsv` beside this module), and a case gives results only for what it lists.
An item of the case answers for the catalogue entries it `covers`, or, when it names
none, for those whose name or an alias equals the item's name or one of its aliases
("肝肾功能及电解质" with aliases 肝功能|肾功能|电解质 answers for all three). Ordering an
entry no item answers for returns the entry's `normal` result.

A case item that answers for no entry is still orderable, but shows on the menu under
its own name, which may cue the answer; `cues` lists them for `arena cases check`.

Orders may also be typed (the organizer hides the menu): `find` reads a contestant's
words against the names and aliases of the catalogue and of the case's items.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from importlib import resources
from typing import Literal

import msgspec

from arena.cases import Case, Orderable

Kind = Literal["exam", "test"]


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the catalogue."""

    id: str
    kind: Kind
    name: str
    aliases: tuple[str, ...]
    cost_yuan: float
    minutes: int
    normal: str


class MenuEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What a contestant sees of an orderable: never a result."""

    id: str
    kind: Kind
    name: str
    cost_yuan: float
    minutes: int


class Resolved(msgspec.Struct, frozen=True, kw_only=True):
    """An order made concrete: `item` is what the result comes from (the case's own item,
    or the catalogue's normal result under the entry's id), `menu_id` what was ordered."""

    item: Orderable
    kind: Kind
    menu_id: str


_SPACE = re.compile(r"[\s·•.,，。、:：;；()（）\[\]【】\-_/]+")


def fold(text: str) -> str:
    """The form names are compared in: NFKC, lower case, no spaces or punctuation."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text).lower())


def parse_tsv(data: str) -> tuple[Entry, ...]:
    """Entries from catalogue.tsv's text (format in the file's header)."""
    entries: list[Entry] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 7 or cols[1] not in ("exam", "test"):
            raise ValueError(f"catalogue.tsv line {n}: 7 columns, kind exam or test expected")
        aliases = tuple(a for a in cols[3].split("|") if a and a != "-")
        kind: Kind = "exam" if cols[1] == "exam" else "test"
        entries.append(Entry(id=cols[0], kind=kind, name=cols[2], aliases=aliases,
                             cost_yuan=float(cols[4]), minutes=int(cols[5]), normal=cols[6]))
    return tuple(entries)


class Catalogue:
    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries = tuple(entries)
        self.by_id = {e.id: e for e in self.entries}
        # Folded name or alias -> entry ids; an alias two entries share names both.
        self._names: dict[str, list[str]] = {}
        for e in self.entries:
            for name in (e.name, *e.aliases):
                ids = self._names.setdefault(fold(name), [])
                if e.id not in ids:
                    ids.append(e.id)

    def problems(self) -> list[str]:
        """Ids or names that would make orders ambiguous (a test keeps this list empty)."""
        out = [f"重复的编号：{i}" for i in {e.id for e in self.entries
                                          if sum(x.id == e.id for x in self.entries) > 1}]
        out += [f"“{name}”同时属于 {'、'.join(ids)}" for name, ids in self._names.items()
                if len(ids) > 1]
        return sorted(out)

    def case_problems(self, case: Case) -> list[str]:
        """`covers` naming entries the catalogue lacks, with the JSON path of each."""
        return [f"$.{field}[{n}].covers: no catalogue entry {i!r}"
                for field, items in (("exams", case.exams), ("tests", case.tests))
                for n, item in enumerate(items) for i in item.covers if i not in self.by_id]

    def covered(self, item: Orderable) -> list[str]:
        """The entries `item` answers for: those it names in `covers`, else those whose
        name or an alias equals its name or one of its aliases."""
        if item.covers:
            return [i for i in item.covers if i in self.by_id]
        ids: list[str] = []
        for name in (item.name, *item.aliases):
            for i in self._names.get(fold(name), ()):
                if i not in ids:
                    ids.append(i)
        return ids

    def links(self, case: Case) -> dict[str, Orderable]:
        """Entry id -> the case item that answers for it (the first listed, where two do)."""
        out: dict[str, Orderable] = {}
        for item in (*case.exams, *case.tests):
            for i in self.covered(item):
                out.setdefault(i, item)
        return out

    def cues(self, case: Case) -> list[Orderable]:
        """The case's items no entry answers with (none covers them, or each entry that does
        answers with an item listed earlier): on the menu under their own names."""
        links = self.links(case)
        return [item for item in (*case.exams, *case.tests)
                if not any(links.get(i) is item for i in self.covered(item))]

    def menu(self, case: Case) -> list[MenuEntry]:
        """The menu for `case`: the whole catalogue, then the case's items it lacks."""
        own = [MenuEntry(id=i.id, kind=_kind(case, i), name=i.name, cost_yuan=i.cost_yuan,
                         minutes=i.minutes) for i in self.cues(case)]
        return [MenuEntry(id=e.id, kind=e.kind, name=e.name, cost_yuan=e.cost_yuan,
                          minutes=e.minutes) for e in self.entries] + own

    def resolve(self, case: Case, item_id: str) -> Resolved | None:
        """What ordering `item_id` (a menu id, or a case item's own id) gives, or None."""
        own = case.orderable(item_id)
        if own is not None:
            return Resolved(item=own, kind=_kind(case, own), menu_id=item_id)
        entry = self.by_id.get(item_id)
        if entry is None:
            return None
        linked = self.links(case).get(entry.id)
        if linked is not None:
            # The case's result under the menu's name, price and time: what the contestant
            # chose (the item's own name, "阑尾及腹部超声", would say what the case is).
            item = msgspec.structs.replace(
                linked, name=entry.name, cost_yuan=entry.cost_yuan, minutes=entry.minutes)
            return Resolved(item=item, kind=_kind(case, linked), menu_id=entry.id)
        normal = Orderable(id=entry.id, name=entry.name, result=entry.normal, abnormal=False,
                           cost_yuan=entry.cost_yuan, minutes=entry.minutes)
        return Resolved(item=normal, kind=entry.kind, menu_id=entry.id)

    def find(self, case: Case, text: str) -> str | None:
        """The menu id a typed order names: an exact name or alias first, else the longest
        name or alias the words contain; None when nothing matches."""
        words = fold(text)
        if not words:
            return None
        names: dict[str, str] = {}  # folded name -> menu id; the case's own items first
        for item in self.cues(case):
            for name in (item.name, *item.aliases):
                names.setdefault(fold(name), item.id)
        for name, ids in self._names.items():
            names.setdefault(name, ids[0])
        if words in names:
            return names[words]
        inside = [n for n in names if len(n) >= 2 and n in words]
        if inside:
            return names[max(inside, key=len)]
        return None


def _kind(case: Case, item: Orderable) -> Kind:
    return "exam" if any(i.id == item.id for i in case.exams) else "test"


@functools.cache
def catalogue() -> Catalogue:
    """The shared catalogue (arena/catalogue.tsv), read once."""
    return Catalogue(parse_tsv(
        resources.files("arena").joinpath("catalogue.tsv").read_text("utf-8")))
