"""Roster CSV parsing and join codes: every problem at once, codes people can type back."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from arena.errors import JoinCodeInvalid
from arena.roster import (
    JOIN_CODE_ALPHABET,
    MAX_ROWS,
    RosterRow,
    csv_cell,
    make_join_code,
    normalize_join_code,
    parse_roster,
)


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def test_chinese_headers_with_bom_blank_lines_and_extra_columns() -> None:
    text = (
        "\ufeff\n"
        "学号,姓名,学校,团队,邮箱\r\n"
        "001, 张三 ,北京协和医学院,红队,zhang@pumc.edu.cn\r\n"
        "\r\n"
        ",,,,\r\n"
        "002,李四,复旦大学上海医学院,,\r\n"
    )
    rows, problems = parse_roster(text)
    assert problems == []
    assert rows == [
        RosterRow(name="张三", school="北京协和医学院", team="红队", email="zhang@pumc.edu.cn"),
        RosterRow(name="李四", school="复旦大学上海医学院"),
    ]


def test_english_headers_in_any_case_and_order() -> None:
    rows, problems = parse_roster("Email,Team,NAME\nann@med.edu,Blue,Ann Lee\n")
    assert problems == []
    assert rows == [RosterRow(name="Ann Lee", team="Blue", email="ann@med.edu")]


def test_tab_separated_paste_and_quoted_commas() -> None:
    rows, problems = parse_roster("姓名\t学校\n王五\t中山大学\n")
    assert (rows, problems) == ([RosterRow(name="王五", school="中山大学")], [])
    rows, problems = parse_roster('name,school\n"Smith, J",Oxford\n')
    assert (rows, problems) == ([RosterRow(name="Smith, J", school="Oxford")], [])


def test_missing_name_is_reported_with_its_line() -> None:
    rows, problems = parse_roster("姓名,学校\n张三,协和\n,复旦\n")
    assert rows == [RosterRow(name="张三", school="协和")]
    assert problems == ["第 3 行：缺少姓名"]


def test_bad_email_is_reported_but_a_missing_one_is_fine() -> None:
    rows, problems = parse_roster("姓名,邮箱\n甲,\n乙,not-an-email\n丙,a@b\n丁,d@x.org\n")
    assert [r.name for r in rows] == ["甲", "丁"]
    assert problems == ["第 3 行：邮箱“not-an-email”格式不对", "第 4 行：邮箱“a@b”格式不对"]


def test_duplicates_name_the_first_line() -> None:
    text = (
        "姓名,学校,邮箱\n"
        "张三,协和,z@x.cn\n"
        "张三,复旦,\n"  # same name, another school: a different person
        "李四,协和,Z@X.cn\n"  # emails compare case-insensitively
        "张三,协和,\n"
    )
    rows, problems = parse_roster(text)
    assert [(r.name, r.school) for r in rows] == [("张三", "协和"), ("张三", "复旦")]
    assert problems == [
        "第 4 行：邮箱 Z@X.cn 与第 2 行重复",
        "第 5 行：“张三”（协和）与第 2 行重复",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = "姓名,学校,邮箱\n,协和,\n乙,复旦,bad\n丙,中山,c@x.cn,extra\n丁,中山,c@x.cn\n" + (
        "戊," + "长" * 101 + ",\n"
    )
    rows, problems = parse_roster(text)
    assert rows == []
    assert [p.split("：")[0] for p in problems] == [
        "第 2 行", "第 3 行", "第 4 行", "第 5 行", "第 6 行"
    ]
    assert "列数比表头多" in problems[2] and "学校超过 100 个字" in problems[4]


def test_header_problems() -> None:
    assert parse_roster("")[1] == [
        "名单是空的：第一行应为表头（姓名、学校、队伍、邮箱），之后每行一名选手。"
    ]
    rows, problems = parse_roster("\n学校,邮箱\n协和,a@b.cn\n")
    assert rows == [] and len(problems) == 1 and problems[0].startswith("第 2 行：表头缺少“姓名”列")
    assert "出现了不止一次" in parse_roster("姓名,队伍,团队\n甲,a,b\n")[1][0]


def test_an_unclosed_quote_is_reported_not_swallowed() -> None:
    rows, problems = parse_roster('姓名,学校\n甲,协和\n"乙,复旦\n丙,中山\n')
    assert rows == [RosterRow(name="甲", school="协和")]
    assert len(problems) == 1 and problems[0].startswith("第 3 行起无法解析")


def test_multiline_cell_is_named_by_its_first_line_and_flattened() -> None:
    rows, problems = parse_roster('姓名,学校\n"王\n五",协和\n,复旦\n')
    assert rows == [RosterRow(name="王 五", school="协和")]
    assert problems == ["第 4 行：缺少姓名"]


def test_too_many_rows() -> None:
    text = "name,email\n" + "".join(f"p{i},p{i}@x.org\n" for i in range(MAX_ROWS + 1))
    rows, problems = parse_roster(text)
    assert problems == [
        f"名单共 {MAX_ROWS + 1} 名选手，超过上限 {MAX_ROWS} 名，请分成几个文件导入。"
    ]
    assert len(rows) == MAX_ROWS  # the rest are counted, not checked
    assert parse_roster("name\n" + "".join(f"p{i}\n" for i in range(MAX_ROWS)))[1] == []


def test_problem_list_is_capped_with_a_count_of_the_rest() -> None:
    _, problems = parse_roster("姓名,学校\n" + ",x\n" * 150)
    assert len(problems) == 101 and problems[-1] == "……另有 50 处问题未列出。"


def test_join_code_format_and_alphabet() -> None:
    assert not set("0O1IL") & set(JOIN_CODE_ALPHABET)
    rand = seeded(1)
    codes = [make_join_code(rand) for _ in range(2000)]
    for code in codes:
        assert re.fullmatch(r"[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}", code), code
    assert len(set(codes)) == len(codes)
    # Every character of the alphabet turns up: the draw is not stuck on a subset.
    assert set("".join(codes)) - {"-"} == set(JOIN_CODE_ALPHABET)


def test_join_code_is_determined_by_the_injected_randomness() -> None:
    assert make_join_code(seeded(7)) == make_join_code(seeded(7))
    assert make_join_code(seeded(7)) != make_join_code(seeded(8))
    # Bytes past the last whole multiple of the alphabet are skipped, not folded in (bias).
    feed = iter([bytes([255] * 8), bytes(range(8))])
    assert make_join_code(lambda n: next(feed)) == "2345-6789"


@pytest.mark.parametrize("typed", [
    "K7PX-3QMA", "k7px-3qma", "k7px3qma", " K7PX 3QMA ", "k7 px - 3q ma", "ｋ７ｐｘ－３ｑｍａ",
])
def test_normalize_accepts_how_people_type(typed: str) -> None:
    assert normalize_join_code(typed) == "K7PX-3QMA"


@pytest.mark.parametrize(
    "typed", ["", "K7PX-3QM", "K7PX-3QMAB", "K7PX-3QM0", "O7PX-3QMA", "K7PX+3QMA"]
)
def test_normalize_refuses_what_cannot_be_a_code(typed: str) -> None:
    with pytest.raises(JoinCodeInvalid) as info:
        normalize_join_code(typed)
    assert info.value.message_zh.startswith("参赛码无效")


@pytest.mark.parametrize(("value", "exported"), [
    ("=1+1", "'=1+1"), ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+8613800000000", "'+8613800000000"), ("-5", "'-5"), ("@SUM(A1)", "'@SUM(A1)"),
    ("  =cmd|' /C calc'!A0", "'  =cmd|' /C calc'!A0"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("张三", "张三"), ("K7PX-3QMA", "K7PX-3QMA"), ("a=b", "a=b"), ("", ""),
    ("http://h/play.html#code=K7PX-3QMA", "http://h/play.html#code=K7PX-3QMA"),
])
def test_csv_cells_never_start_a_formula(value: str, exported: str) -> None:
    assert csv_cell(value) == exported


def test_control_characters_in_a_roster_are_problems() -> None:
    text = "姓名,学校,邮箱\n张\x01三,医学院,\n李四,医\x7f学院,\n王五,医学院,\n"
    rows, problems = parse_roster(text)
    assert [r.name for r in rows] == ["王五"]
    assert problems == ["第 2 行：姓名含有不可见的控制字符", "第 3 行：学校含有不可见的控制字符"]
