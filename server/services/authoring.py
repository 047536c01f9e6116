"""The case editor's service: validate, save versions, diff, preview and publish drafts.

A draft is a whole case document (JSON) kept as numbered, append-only versions
(server.store.case_versions). Saving never refuses a case for what it still lacks: a
teacher saves half-written work, and each version records how many problems it had.
Publishing does refuse it: only a version with no problem (the schema's `check_case`
and the secrecy lint) is written into the cases folder, added to the running library
and given a visibility; the route then renews this process's matching pool (which
scores submissions). Other server processes read the folder when they start: a published
case reaches them at their next restart (docs/cases.md, "The case editor").

Problems are shown to teachers in Chinese, each with the JSON path of its field
(`arena.cases.check_case`'s English lines are translated by `explain`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from arena import importer, secrecy
from arena.cases import SCHEMA_VERSION, Case, check_case
from arena.catalogue import catalogue
from arena.errors import BadRequest, CaseNotFound, CaseReserved
from arena.matching import QuestionMatcher
from arena.patient import ScriptedPatient, Turn, patient_view
from server.services import library as lib
from server.store import case_versions as rows

PUBLISHED_EVENT = "case_published"
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # as the shipped ids: no i/l/o/0/1
_LETTERS = "abcdefghjkmnpqrstuvwxyz"


class Problem(msgspec.Struct, kw_only=True):
    """One problem of a draft: the JSON path of its field, in Chinese and in English."""

    path: str
    message: str
    message_en: str


_LEAK_KIND = {"diagnosis": "主要诊断", "partial": "部分得分诊断", "differential": "鉴别诊断"}
# arena.cases words its problems in English, in a few fixed shapes; a teacher reads them
# in Chinese. (pattern, Chinese template, field the path should point into).
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), t) for p, t in (
    (r"^a case must be a JSON object$", "病例必须是一个 JSON 对象"),
    (r"^unknown field$", "不认识的字段（可能拼错了）"),
    (r"^required field is missing$", "缺少必填内容"),
    (r"^Object missing required field `(?P<f>[^`]+)`$", "缺少必填内容"),
    (r"^Object contains unknown field `(?P<f>[^`]+)`$", "不认识的字段（可能拼错了）"),
    (r"^Expected `(?P<want>[a-z]+)[^`]*`, got `(?P<got>[a-z]+)`$", "应填{want}，现在是{got}"),
    (r"^Invalid enum value (?P<v>.+)$", "取值 {v} 不在可选范围内"),
    (r"^expected (?P<a>\d+), got (?P<b>-?\d+)$", "病例格式版本应为 {a}，现在是 {b}"),
    (r"^use 2-48 lowercase letters", "编号须为 2-48 个小写字母、数字或下划线，以字母开头"),
    (r"^(?P<v>-?[\d.]+) is outside (?P<lo>-?[\d.]+)-(?P<hi>-?[\d.]+)$",
     "{v} 超出合理范围（{lo}–{hi}）"),
    (r"^must be below systolic_bp$", "舒张压必须低于收缩压"),
    (r"^(?P<n>-?\d+) (?P<u>years|months|days) is not a plausible age$", "年龄 {n} {u}不合理"),
    (r"^say who tells the history", "请写明代述人与患者的关系（母亲、女儿……）"),
    (r"^not an intent of the taxonomy", "不是问诊意图分类中的意图"),
    (r"^(?P<v>'.*') is not a valid id$", "编号 {v} 不合法"),
    (r"^id (?P<v>'.*') is used more than once$", "编号 {v} 重复使用"),
    (r"^(?P<v>\[.*\]) not in the taxonomy", "意图 {v} 不在问诊意图分类中"),
    (r"^declare an intent", "请选择问诊意图（或至少写 2 个示例问题）"),
    (r"^empty$", "不能为空"),
    (r"^include pertinent negatives", "至少要有一条有意义的阴性病史（勾选“阴性”）"),
    (r"^a case needs orderable tests$", "至少需要一项可开具的辅助检查"),
    (r"^give at least (?P<n>\d+)$", "至少给出 {n} 个鉴别诊断"),
    (r"^(?P<n>\d+) items, at least (?P<m>\d+) required$", "现有 {n} 条，至少需要 {m} 条"),
    (r"^name the facts or orders that meet it$", "请指明满足这一条的病史条目或检查"),
    (r"^unknown fact (?P<v>'.*')$", "引用了不存在的病史条目 {v}"),
    (r"^unknown order (?P<v>'.*')$", "引用了不存在的检查 {v}"),
    (r"^(?P<v>\[.*\]) are both necessary and unnecessary$", "{v} 不能既是必要检查又是不必要检查"),
    (r"^file is (?P<n>\d+) bytes, limit (?P<m>\d+)$", "病例过大（{n} 字节，上限 {m}）"),
    (r"^not valid JSON", "不是合法的 JSON"),
    (r"^no catalogue entry (?P<v>'.*')$", "通用检查目录中没有 {v}"),
    (r"^(?P<v>'.*') is not a specialty of the library; use one of (?P<l>.+)$",
     "专科 {v} 不在专科列表中，请从以下选择：{l}"),
    (r"^name at least one source$", "请写明病例的来源（教材、指南或真实病历的出处）"),
    (r"^含答案关键词 names the answer key: (?P<v>'.*') \((?P<k>\w+)\)$",
     "含有答案关键词 {v}（{k}），比赛开始前就会被看到，请改写"),
))
_TYPES = {"str": "文字", "int": "整数", "float": "数字", "bool": "是/否", "array": "列表",
          "object": "对象", "null": "空值"}
_UNITS = {"years": "岁", "months": "个月", "days": "天"}


def explain(line: str) -> Problem:
    """A `check_case`-style line ("JSON path: message") as a Problem with Chinese text.

    A missing or unknown field is pointed at the field itself, so the editor shows it
    beside that field; a shape this table does not know keeps its English words."""
    path, sep, text = line.partition(": ")
    if not sep or not path.startswith("$"):
        path, text = "$", line
    for pattern, template in _RULES:
        m = pattern.match(text)
        if m is None:
            continue
        parts = m.groupdict()
        if "f" in parts:
            path = f"{path}.{parts['f']}"
        for k in ("want", "got"):
            if k in parts:
                parts[k] = _TYPES.get(parts[k], parts[k])
        if "u" in parts:
            parts["u"] = _UNITS.get(parts["u"], parts["u"])
        if "k" in parts:
            parts["k"] = _LEAK_KIND.get(parts["k"], parts["k"])
        return Problem(path=path, message=template.format(**parts), message_en=text)
    return Problem(path=path, message=f"有问题：{text}", message_en=text)


class Version(msgspec.Struct, kw_only=True):
    case_id: str
    version: int
    content_hash: str
    problems: int
    author: str
    note: str
    at: float


class Change(msgspec.Struct, kw_only=True):
    """One difference between two versions: where, and the value before and after
    (`missing` marks a side where the path does not exist)."""

    path: str
    old: Any = None
    new: Any = None
    kind: str = "changed"  # changed | added | removed


class Reply(msgspec.Struct, kw_only=True):
    text: str
    kind: str
    facts: list[str]  # topics of the facts the answer told, for the author to check


def check(content: Any) -> tuple[Case | None, list[Problem]]:
    """The decoded case (None when its shape is wrong) and every problem, in Chinese."""
    case, lines = check_case(msgspec.json.encode(content))
    if case is not None:
        lines += catalogue().case_problems(case)
        lines += [leak.problem() for leak in secrecy.leaks(case)]
    return case, [explain(line) for line in lines]


def content_hash(content: Any, case: Case | None) -> str:
    """The library's hash (the decoded case re-encoded) where the document decodes, so the
    hash in the history is the one scores record; else the sorted document's."""
    if case is not None:
        return hashlib.sha256(msgspec.json.encode(case)).hexdigest()
    return hashlib.sha256(msgspec.json.encode(content, order="sorted")).hexdigest()


def _keyed(items: list[Any]) -> dict[str, int] | None:
    """{id: index} when every item is an object with its own unique string id."""
    ids = [x.get("id") if isinstance(x, dict) else None for x in items]
    if not ids or not all(isinstance(i, str) and i for i in ids) or len(set(ids)) < len(ids):
        return None
    return {str(i): n for n, i in enumerate(ids)}


def diff(old: Any, new: Any, path: str = "$") -> list[Change]:
    """The structural difference of two JSON values, leaf by leaf.

    Objects are compared key by key; lists of objects with unique `id`s item by item
    by id (a fact inserted at the top is one addition, not every fact changed), under
    the path of the item's index in `new` (in `old` for a removed one); other lists
    index by index.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}"
            if key not in new:
                out.append(Change(path=sub, old=old[key], kind="removed"))
            elif key not in old:
                out.append(Change(path=sub, new=new[key], kind="added"))
            else:
                out += diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        a, b = _keyed(old), _keyed(new)
        if a is not None and b is not None:
            out = []
            for key, j in b.items():
                if key in a:
                    out += diff(old[a[key]], new[j], f"{path}[{j}]")
                else:
                    out.append(Change(path=f"{path}[{j}]", new=new[j], kind="added"))
            out += [Change(path=f"{path}[{i}]", old=old[i], kind="removed")
                    for key, i in a.items() if key not in b]
            return out
        out = []
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                out.append(Change(path=f"{path}[{i}]", old=old[i], kind="removed"))
            elif i >= len(old):
                out.append(Change(path=f"{path}[{i}]", new=new[i], kind="added"))
            else:
                out += diff(old[i], new[i], f"{path}[{i}]")
        return out
    if old == new and (type(old) is type(new) or (not isinstance(old, bool | str)
                       and not isinstance(new, bool | str))):
        return []  # JSON has one number type: 20 and 20.0 are the same value
    return [Change(path=path, old=old, new=new)]


def blank(case_id: str) -> dict[str, Any]:
    """A new case with every required field present and nothing written yet: it decodes,
    so the editor's form can show it, and its problems are the author's to-do list."""
    person = {"personality": "", "speech_style": "", "health_literacy": "medium",
              "recall": "medium", "ideas": "", "concerns": "", "expectations": ""}
    vitals = {"temperature_c": 36.8, "heart_rate": 80, "respiratory_rate": 18,
              "systolic_bp": 120, "diastolic_bp": 80, "spo2": 98}
    return {
        "schema_version": SCHEMA_VERSION, "id": case_id, "title": "", "title_en": "",
        "specialty": "", "difficulty": "medium", "minutes": 20,
        "demographics": {"name": "", "sex": "female", "age": 40, "occupation": ""},
        "persona": person,
        "opening": {"chief_complaint": "", "statement": "", "appearance": "", "vitals": vitals},
        "facts": [], "exams": [], "tests": [],
        "answer_key": {"diagnosis": {"name": ""}, "differentials": [], "checklist": [],
                       "red_flags": [], "necessary_tests": []},
    }


def reviewed(content: Any) -> bool:
    """Whether the document names a reviewer, under whatever field the schema gives it."""
    if not isinstance(content, dict):
        return False
    return any(bool(v) for k, v in content.items() if "review" in k)


def _summary(row: Any) -> Version:
    return Version(case_id=row["case_id"], version=row["version"],
                   content_hash=row["content_hash"], problems=row["problems"],
                   author=row["author"], note=row["note"], at=row["at"])


class Authoring:
    """The editor's operations over the case versions table, the library and its folder.

    `audit` is the AuditLog (its pool holds the versions; publishing appends events);
    `random` gives bytes for new case ids (injected: tests pass their own).
    """

    def __init__(self, audit: Any, library: lib.Library, cases_dir: Path,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.audit = audit
        self.library = library
        self.cases_dir = cases_dir
        self.random = random
        # Draft matchers by their facts: asking again after an edit elsewhere costs nothing.
        self._matchers: OrderedDict[bytes, QuestionMatcher] = OrderedDict()

    # ---- reading ------------------------------------------------------------------------

    async def current(self, case_id: str) -> tuple[dict[str, Any], Version | None]:
        """The newest saved version of a case, or the library's file when none was saved."""
        row = await rows.content(self.audit.pool, case_id)
        if row is not None:
            return dict(row["content"]), _summary(row)
        return await asyncio.to_thread(self._shipped, case_id), None

    def _shipped(self, case_id: str) -> dict[str, Any]:
        """A library case as its file has it (defaults left out, numbers as written), so a
        diff against it shows what an author changed and nothing else."""
        case = self.library.get(case_id)
        try:
            raw = msgspec.json.decode((self.cases_dir / f"{case_id}.json").read_bytes())
        except (OSError, msgspec.DecodeError):
            raw = None
        if isinstance(raw, dict) and raw.get("id") == case_id:
            return raw
        built: dict[str, Any] = msgspec.to_builtins(case)
        return built

    async def version(self, case_id: str, number: int) -> dict[str, Any]:
        row = await rows.content(self.audit.pool, case_id, number)
        if row is None:
            raise CaseNotFound(f"病例 {case_id} 没有第 {number} 版。",
                               f"Case {case_id!r} has no version {number}.")
        return dict(row["content"])

    async def history(self, case_id: str) -> list[Version]:
        return [_summary(r) for r in await rows.history(self.audit.pool, case_id)]

    async def listing(self) -> list[dict[str, Any]]:
        """Every case the editor knows: the library's and the drafts never published."""
        latest = {r["case_id"]: r for r in await rows.latest(self.audit.pool)}
        ids = sorted({*self.library.cases, *latest})
        access = await lib.case_access(self.audit.pool, ids)
        published = {r["case_id"]: r for r in await rows.published(self.audit.pool)}
        out = []
        for cid in ids:
            row = latest.get(cid)
            content: Any = (dict(row["content"]) if row is not None
                            else msgspec.to_builtins(self.library.cases[cid]))  # no file read
            live = cid in self.library.cases
            a = access[cid]
            opening = content.get("opening") if isinstance(content.get("opening"), dict) else {}
            facts = content.get("facts") if isinstance(content.get("facts"), list) else []
            text = " ".join(str(x) for x in (
                content.get("title", ""), content.get("title_en", ""),
                content.get("specialty", ""), opening.get("chief_complaint", ""),
                opening.get("statement", ""),
                *(f.get("answer", "") for f in facts if isinstance(f, dict)),
            ))
            pub = published.get(cid)
            out.append({
                "id": cid, "title": content.get("title", ""),
                "title_en": content.get("title_en", ""),
                "specialty": content.get("specialty", ""),
                "difficulty": content.get("difficulty", ""),
                "chief_complaint": opening.get("chief_complaint", ""),
                "visibility": a.visibility if live else "draft",
                "published": live, "practice_open": live and a.practice_open(),
                "reserved": bool(a.reserved_by) if live else False,
                "reviewed": reviewed(content),
                "version": row["version"] if row is not None else 0,
                "content_hash": (row["content_hash"] if row is not None
                                 else self.library.hashes[cid]),
                "live_hash": self.library.hashes.get(cid, ""),
                "published_version": pub["version"] if pub is not None else 0,
                "problems": row["problems"] if row is not None else 0,
                "search": text,
            })
        return out

    # ---- writing ------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh opaque id, like the shipped ones: six characters, a letter first."""
        taken = set(self.library.cases)
        while True:
            raw = self.random(6)
            cid = _LETTERS[raw[0] % len(_LETTERS)] + "".join(
                _ALPHABET[b % len(_ALPHABET)] for b in raw[1:])
            if cid not in taken:
                return cid

    async def fresh_id(self) -> str:
        """An id neither the library nor any saved draft has."""
        cid = self.new_id()
        while await rows.content(self.audit.pool, cid) is not None:
            cid = self.new_id()
        return cid

    async def create(self, author: str, record: str = "") -> tuple[str, Version, list[Problem]]:
        """A new case saved as version 1: blank, or drafted from a pasted record (sectioned
        Chinese text or OSCE JSON, by arena.importer) under a fresh id."""
        cid = await self.fresh_id()
        if record.strip():
            draft = importer.import_source(record.encode("utf-8"))
            if not draft.case:
                raise BadRequest("无法从这段文字生成病例草稿：" + "；".join(draft.problems),
                                 "Could not draft a case from this text.")
            content = {**draft.case, "id": cid}
            note = "从病历导入" if draft.source == "record" else "从 OSCE JSON 导入"
        else:
            content, note = blank(cid), "新建空白病例"
        saved, problems = await self.save(cid, content, author, note)
        return cid, saved, problems

    async def save(self, case_id: str, content: Any, author: str, note: str = ""
                   ) -> tuple[Version, list[Problem]]:
        """Append `content` as the next version of `case_id`, problems and all."""
        if not isinstance(content, dict) or content.get("id") != case_id:
            raise BadRequest(f"病例编号必须是 {case_id}，不能在编辑器里修改。",
                             f"The document's id must be {case_id!r}.")
        case, problems = check(content)
        async with self.audit.pool.acquire() as conn:
            if (case_id in self.library.cases
                    and await rows.content(conn, case_id) is None):
                # The first edit of a shipped case: its file becomes version 1, so the
                # first diff shows what this author changed.
                shipped = await asyncio.to_thread(self._shipped, case_id)
                await rows.append(conn, case_id, shipped, self.library.hashes[case_id], 0,
                                  "cases/", "病例库中的原文件")
            row = await rows.append(conn, case_id, content, content_hash(content, case),
                                    len(problems), author, note.strip()[:200])
        return _summary(row), problems

    async def publish(self, case_id: str, number: int, visibility: str, actor: str,
                      request_id: str | None = None) -> dict[str, Any]:
        """Write version `number` into the cases folder, load it and set its visibility.

        Refused (BadRequest with `problems`) while it has any problem; refused
        (CaseReserved) when a round whose results are not published uses the case and
        the content would change under it, or when such a case is to open to practice.
        """
        if visibility not in ("practice", "contest"):
            raise BadRequest("发布时只能选择“开放练习”或“仅比赛”。",
                             "Publish as practice or contest.")
        content = await self.version(case_id, number)
        case, problems = check(content)
        if case is None or problems:
            raise BadRequest(
                f"这一版还有 {len(problems)} 处问题，全部修正后才能发布。",
                f"Version {number} has {len(problems)} problem(s); fix them to publish.",
                problems=[msgspec.to_builtins(p) for p in problems],
            )
        digest = content_hash(content, case)
        if case_id in self.library.cases:
            access = (await lib.case_access(self.audit.pool, [case_id]))[case_id]
            if access.reserved_by and (digest != self.library.hashes[case_id]
                                       or visibility == "practice"):
                raise CaseReserved(
                    "这个病例正被尚未公布成绩的场次使用，成绩公布前不能修改或开放练习。",
                    "A round using this case has not published its results yet.",
                    rounds=access.reserved_by,
                )
        await asyncio.to_thread(self._write, case_id, content)
        self.library.add(case)
        access = await lib.set_visibility(self.audit, self.library, case_id, visibility,
                                          actor=actor, request_id=request_id)
        await self.audit.append(
            round_id="", attempt_id=None, actor=actor, kind=PUBLISHED_EVENT,
            payload={"case_id": case_id, "version": number, "content_hash": digest,
                     "visibility": visibility},
        )
        return {"case_id": case_id, "version": number, "content_hash": digest,
                "visibility": access.visibility, "practice_open": access.practice_open()}

    def _write(self, case_id: str, content: dict[str, Any]) -> None:
        """The file, whole or not at all: a reader (a restart, `arena cases check`) never
        meets half a case."""
        data = msgspec.json.format(msgspec.json.encode(content), indent=2) + b"\n"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{case_id}.", suffix=".tmp", dir=self.cases_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.cases_dir / f"{case_id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ---- trying the patient -------------------------------------------------------------

    async def preview(self, content: Any, question: str, history: Sequence[Turn] = ()
                      ) -> Reply:
        """The scripted patient's reply to `question` in the draft `content`: the same
        engine and matching (embeddings included where the library uses them) as play."""
        case, problems = check(content)
        if case is None:
            raise BadRequest(
                "病例结构有误，暂时无法试问：" + "；".join(p.message for p in problems[:3]),
                "The draft does not decode yet; fix its structure first.",
            )
        return await asyncio.to_thread(self._reply, case, question, tuple(history))

    def _reply(self, case: Case, question: str, history: tuple[Turn, ...]) -> Reply:
        key = msgspec.json.encode(case.facts)
        matcher = self._matchers.get(key)
        if matcher is None:
            embed = None
            if self.library.matchers.embeds:
                fn, docs = self.library.matchers.embedding()
                embed = docs.embed if docs is not None else fn
            matcher = self._matchers[key] = QuestionMatcher(case.facts, embed)
            while len(self._matchers) > 16:
                self._matchers.popitem(last=False)
        self._matchers.move_to_end(key)
        reply = ScriptedPatient(patient_view(case), matcher).reply(question, history)
        topics = {f.id: f.topic for f in case.facts}
        return Reply(text=reply.text, kind=reply.kind,
                     facts=[topics[i] for i in reply.fact_ids if i in topics])
