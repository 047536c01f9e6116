"""Rosters (选手名单) and join codes (参赛码).

An organizer uploads the roster as a CSV exported from a spreadsheet; every
problem in it is reported at once, each naming its line, so one round of fixes
is enough. Each contestant then gets a join code bound to them. Codes avoid
characters people misread on a printed slip (0/O, 1/I/L) and tolerate the
ways people type them back (lower case, spaces, no dash, full-width letters).

Pure: randomness comes in as a `rand(n) -> n bytes` callable (os.urandom in
the server, a seeded source in tests).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable

import msgspec

from arena.errors import JoinCodeInvalid

MAX_ROWS = 5000
MAX_PROBLEMS = 100  # past this many, the file is clearly wrong; say how many more
MAX_NAME_CHARS = 64
MAX_FIELD_CHARS = 100  # school, team
MAX_EMAIL_CHARS = 254  # RFC 5321 path limit

# Header spellings people actually use, mapped to our field; compared after
# trimming and lower-casing.
HEADERS = {
    "姓名": "name", "名字": "name", "name": "name",
    "学校": "school", "院校": "school", "school": "school",
    "队伍": "team", "团队": "team", "队名": "team", "team": "team",
    "邮箱": "email", "电子邮箱": "email", "电子邮件": "email", "邮箱地址": "email",
    "email": "email", "email address": "email",
    "e-mail": "email", "mail": "email",
}
FIELD_ZH = {"name": "姓名", "school": "学校", "team": "队伍", "email": "邮箱"}

# Loose on purpose: catch typos (a missing @ or domain, spaces, a pasted name),
# never reject a real address because of an exotic but legal form.
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>.]+$")

# No 0/O, 1/I/L: a code read off paper or a projector must be typed back right.
JOIN_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
JOIN_CODE_LENGTH = 8
# Largest multiple of the alphabet size that fits in a byte: bytes at or above
# it are discarded so every character is equally likely.
_UNBIASED_LIMIT = 256 - 256 % len(JOIN_CODE_ALPHABET)
# Control characters (tab and line breaks inside a cell are folded to spaces before this).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SEPARATORS = re.compile(r"[\s\-_.·—–]+")


class RosterRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    school: str = ""
    team: str = ""
    email: str = ""


def parse_roster(text: str) -> tuple[list[RosterRow], list[str]]:
    """Parse a CSV roster into rows and the problems found, Chinese, each naming its line.

    The first non-blank line is the header; columns are matched by name
    (姓名/name required; 学校/school, 队伍/团队/team, 邮箱/email optional;
    others are ignored, so a spreadsheet with extra columns such as 学号 works
    as is). A UTF-8 BOM is dropped, cells are trimmed and runs of whitespace
    inside them collapsed to one space, blank lines skipped.
    Comma-separated, or tab-separated when the header has tabs and no commas
    (a table pasted from a spreadsheet). Line numbers count physical lines
    from 1, as an editor shows them; a record spanning lines (a quoted cell
    with a line break) is named by its first line.

    Problems: no header or no 姓名 column (nothing else is checked then), a
    row with more cells than the header, a missing or over-long name, an
    over-long school or team, an email that does not look like one, an email
    or a name+school pair already on an earlier line, more than MAX_ROWS rows.
    Past MAX_PROBLEMS the rest are summarised in one last message.

    Contract: import the rows only when `problems` is empty; rows with a
    problem are left out of `rows`.
    """
    text = text.removeprefix("\ufeff")
    first = next((ln for ln in text.splitlines() if ln.strip(" \t,")), "")
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)

    problems: list[str] = []
    rows: list[RosterRow] = []
    header: list[str] | None = None
    columns: dict[str, int] = {}
    seen_email: dict[str, int] = {}
    seen_person: dict[tuple[str, str], int] = {}
    count = 0
    line_no = 1
    try:
        for record in reader:
            # line_num is the last line read: the record started right after the previous one.
            at, line_no = line_no, reader.line_num + 1
            # Runs of whitespace (a line break inside a quoted cell too) become one space.
            cells = [" ".join(c.split()) for c in record]
            if not any(cells):
                continue
            if header is None:
                header = cells
                columns, problems = _columns(header, at)
                if problems:
                    return [], problems
                continue
            count += 1
            if count > MAX_ROWS:
                continue  # counted for the message below, not checked
            row, row_problems = _row(cells, len(header), columns, at, seen_email, seen_person)
            if row_problems:
                problems.append(f"第 {at} 行：" + "；".join(row_problems))
            elif row is not None:
                rows.append(row)
    except csv.Error as exc:
        problems.append(
            f"第 {line_no} 行起无法解析（{exc}）：请检查英文双引号是否成对，"
            "或在表格软件中另存为“CSV UTF-8”后重试。"
        )
    if header is None and not problems:
        return [], ["名单是空的：第一行应为表头（姓名、学校、队伍、邮箱），之后每行一名选手。"]
    if count > MAX_ROWS:
        problems.insert(0, f"名单共 {count} 名选手，超过上限 {MAX_ROWS} 名，请分成几个文件导入。")
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], f"……另有 {more} 处问题未列出。"]
    return rows, problems


def _columns(header: list[str], line_no: int) -> tuple[dict[str, int], list[str]]:
    columns: dict[str, int] = {}
    problems: list[str] = []
    for i, cell in enumerate(header):
        field = HEADERS.get(cell.lower())
        if field is None:
            continue
        if field in columns:
            problems.append(f"第 {line_no} 行：表头中“{FIELD_ZH[field]}”列出现了不止一次。")
        else:
            columns[field] = i
    if "name" not in columns:
        problems.append(
            f"第 {line_no} 行：表头缺少“姓名”列（可用的列名：姓名/name、学校/school、"
            "队伍/团队/team、邮箱/email）。"
        )
    return columns, problems


def _row(
    cells: list[str], width: int, columns: dict[str, int], line_no: int,
    seen_email: dict[str, int], seen_person: dict[tuple[str, str], int],
) -> tuple[RosterRow | None, list[str]]:
    value = {f: cells[i] if i < len(cells) else "" for f, i in columns.items()}
    name, school = value["name"], value.get("school", "")
    team, email = value.get("team", ""), value.get("email", "")
    problems = []
    if len(cells) > width:
        problems.append("列数比表头多（单元格内的逗号需用英文双引号把整个单元格括起来）")
    if not name:
        problems.append("缺少姓名")
    elif len(name) > MAX_NAME_CHARS:
        problems.append(f"姓名超过 {MAX_NAME_CHARS} 个字")
    for field, v in (("school", school), ("team", team)):
        if len(v) > MAX_FIELD_CHARS:
            problems.append(f"{FIELD_ZH[field]}超过 {MAX_FIELD_CHARS} 个字")
    for field, v in value.items():
        if _CONTROL.search(v):
            problems.append(f"{FIELD_ZH[field]}含有不可见的控制字符")
    if email and (len(email) > MAX_EMAIL_CHARS or not _EMAIL.match(email)):
        problems.append(f"邮箱“{email}”格式不对")
    elif email:
        # Only the first line claims a value, so a third copy names the first, not the second.
        first = seen_email.setdefault(email.lower(), line_no)
        if first != line_no:
            problems.append(f"邮箱 {email} 与第 {first} 行重复")
    if name:
        first = seen_person.setdefault((name, school), line_no)
        if first != line_no:
            who = f"“{name}”（{school}）" if school else f"“{name}”"
            problems.append(f"{who}与第 {first} 行重复")
    if problems:
        return None, problems
    return RosterRow(name=name, school=school, team=team, email=email), []


# What makes a spreadsheet read a cell as a formula (CSV injection: "=HYPERLINK(...)" in a
# name runs when the organizer opens the export): these first characters, also after spaces.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """`value` as a CSV cell that Excel, LibreOffice and Sheets show as text, never run.

    A value whose first non-space character is = + - @ (or that starts with a tab or
    carriage return) gets a leading apostrophe, which spreadsheets hide and treat as
    "text follows"; anything else is returned unchanged.
    """
    if value.lstrip(" ").startswith(_FORMULA_START) or value.startswith(("\t", "\r")):
        return "'" + value
    return value


def make_join_code(rand: Callable[[int], bytes]) -> str:
    """A fresh join code like "K7PX-3QMA": 8 characters, uniform over JOIN_CODE_ALPHABET.

    `rand(n)` must return n random bytes (os.urandom in the server); the same
    bytes give the same code. About 39.6 bits: guessing is hopeless as long as
    redemption is rate limited.
    """
    chars: list[str] = []
    while len(chars) < JOIN_CODE_LENGTH:
        for b in rand(JOIN_CODE_LENGTH):
            if b < _UNBIASED_LIMIT and len(chars) < JOIN_CODE_LENGTH:
                chars.append(JOIN_CODE_ALPHABET[b % len(JOIN_CODE_ALPHABET)])
    return "".join(chars[:4]) + "-" + "".join(chars[4:])


def normalize_join_code(text: str) -> str:
    """The canonical form ("K7PX-3QMA") of a code as a person typed it.

    Accepts lower case, full-width characters (a Chinese input method),
    spaces, dashes or none. Raises JoinCodeInvalid when the result cannot be a
    join code (wrong length, a character outside the alphabet), so a typo is
    answered without a database lookup.
    """
    compact = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text[:64])).upper()
    if len(compact) != JOIN_CODE_LENGTH or any(c not in JOIN_CODE_ALPHABET for c in compact):
        raise JoinCodeInvalid(
            "参赛码无效，请核对后重试（参赛码为 8 位字母和数字，例如 K7PX-3QMA）。",
            "Invalid join code; please check it (8 letters and digits, e.g. K7PX-3QMA).",
        )
    return compact[:4] + "-" + compact[4:]
