"""The organizer's console on the command line: `arena competition|roster|round|account`.

It speaks the same HTTP API as the web console (docs/protocol.md), so an action
from a terminal is checked, recorded and announced exactly like a click. The
server is ARENA_URL (default http://127.0.0.1:8000); the organizer is ARENA_USER
(default admin) with ARENA_PASSWORD, or the password `arena up` wrote to
data/admin-password.txt on first start.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx2
import msgspec


class ConsoleError(Exception):
    pass


class Console:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.http = httpx2.Client(base_url=url.rstrip("/"), timeout=30)
        self.token = self._call("POST", "/api/login",
                                {"username": user, "password": password})["token"]

    def _call(self, method: str, path: str, body: object | None = None,
              content: bytes | None = None) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if hasattr(self, "token") else {}
        if content is not None:
            headers["content-type"] = "text/csv"
        resp = self.http.request(
            method, path, headers=headers, content=content,
            json=None if body is None else msgspec.to_builtins(body),
        )
        data = resp.json() if resp.headers.get("content-type", "").startswith(
            "application/json") else resp.text
        if resp.status_code >= 400:
            message = data.get("message", resp.text) if isinstance(data, dict) else data
            problems = data.get("problems", []) if isinstance(data, dict) else []
            raise ConsoleError("\n".join([f"错误 ({resp.status_code}): {message}", *problems]))
        return data


def _password(data_dir: Path) -> str:
    if os.environ.get("ARENA_PASSWORD"):
        return os.environ["ARENA_PASSWORD"]
    saved = data_dir / "admin-password.txt"
    if saved.exists():
        return saved.read_text(encoding="utf-8").strip()
    return getpass.getpass("组织者密码 (organizer password): ")


def run(args: argparse.Namespace) -> int:
    c: Console | None = None
    try:
        c = Console(os.environ.get("ARENA_URL", "http://127.0.0.1:8000"),
                    os.environ.get("ARENA_USER", "admin"),
                    _password(Path(os.environ.get("DATA_DIR", "data"))))
        out = _dispatch(c, args)
    except ConsoleError as exc:
        print(exc, file=sys.stderr)
        return 1
    except httpx2.HTTPError as exc:
        print(f"无法连接服务器 (cannot reach the server): {exc}", file=sys.stderr)
        return 1
    finally:
        if c is not None:
            c.http.close()  # its keep-alive connections, not left to the garbage collector
    if out is not None:
        print(out if isinstance(out, str) else msgspec.json.format(msgspec.json.encode(out))
              .decode())
    return 0


def _dispatch(c: Console, a: argparse.Namespace) -> Any:
    group, cmd = a.group, a.cmd
    if group == "competition":
        if cmd == "create":
            return c._call("POST", "/api/competitions", {"title": a.title})["id"]
        return c._call("GET", "/api/competitions")
    if group == "roster":
        if cmd == "import":
            added = c._call("POST", f"/api/competitions/{a.competition}/roster",
                            content=Path(a.file).read_bytes())["added"]
            return f"已导入 {added} 人 (imported {added})"
        return c._call("GET", f"/api/competitions/{a.competition}/roster.csv")
    if group == "cases":  # `arena cases list|visibility`; `cases check` runs offline (cli.py)
        if cmd == "visibility":
            return c._call("POST", f"/api/cases/{a.case}/visibility",
                           {"visibility": a.visibility, "request_id": uuid.uuid4().hex})
        return c._call("GET", "/api/cases")
    if group == "account":
        password = os.environ.get("ARENA_NEW_PASSWORD") or getpass.getpass("新账号密码: ")
        return c._call("POST", "/api/accounts", {"username": a.username, "role": a.role,
                                                 "password": password, "display_name": a.name})
    if cmd == "create":
        rules = {"case_id": a.case, "duration_s": int(a.minutes * 60),
                 "freeze_s": int(a.freeze * 60), "time_counts": a.time_counts,
                 "board_visible": not a.hide_board, "countdown_s": a.countdown,
                 "max_submissions": a.submissions, "open_scoring": a.open_scoring}
        return c._call("POST", f"/api/competitions/{a.competition}/rounds",
                       {"title": a.title, "rules": rules})["id"]
    body = {"request_id": uuid.uuid4().hex, "reason": a.reason,
            "seconds": int(a.minutes * 60), "contestant_id": a.contestant}
    return c._call("POST", f"/api/rounds/{a.round}/{cmd}", body)["clock"]


def add_case_parsers(cases_sub: Any) -> None:
    """`arena cases list` and `arena cases visibility CASE draft|contest|practice`."""
    p = cases_sub.add_parser("list", help="every case with its visibility (staff view)")
    p.set_defaults(fn=run, group="cases", cmd="list")
    p = cases_sub.add_parser(
        "visibility", help="who may practise a case: draft, contest (only), practice")
    p.add_argument("case")
    p.add_argument("visibility", choices=["draft", "contest", "practice"])
    p.set_defaults(fn=run, group="cases", cmd="visibility")


def add_parsers(sub: Any) -> None:
    """Register the console's commands on the `arena` parser."""
    comp = sub.add_parser("competition", help="赛事 competitions").add_subparsers(
        dest="cmd", required=True)
    p = comp.add_parser("create")
    p.add_argument("title")
    comp.add_parser("list")
    roster = sub.add_parser("roster", help="名单 rosters").add_subparsers(dest="cmd", required=True)
    p = roster.add_parser("import", help="import a CSV (姓名,学校,队伍,邮箱)")
    p.add_argument("competition")
    p.add_argument("file")
    p = roster.add_parser("codes", help="print the roster with join codes as CSV")
    p.add_argument("competition")
    acct = sub.add_parser("account", help="评委/组织者账号 accounts").add_subparsers(
        dest="cmd", required=True)
    p = acct.add_parser("add")
    p.add_argument("username")
    p.add_argument("--role", choices=["judge", "organizer"], default="judge")
    p.add_argument("--name", default="")
    rnd = sub.add_parser("round", help="场次 rounds").add_subparsers(dest="cmd", required=True)
    p = rnd.add_parser("create")
    p.add_argument("competition")
    p.add_argument("title")
    p.add_argument("--case", required=True)
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--freeze", type=float, default=0, help="freeze the board N minutes before end")
    p.add_argument("--time-counts", action="store_true")
    p.add_argument("--hide-board", action="store_true")
    p.add_argument("--open-scoring", action="store_true",
                   help="show scores to contestants and the big screen during the round "
                        "(default: progress only until results are published)")
    p.add_argument("--countdown", type=int, default=10)
    p.add_argument("--submissions", type=int, default=1)
    for action in ("open", "start", "pause", "resume", "extend", "end", "publish"):
        p = rnd.add_parser(action)
        p.add_argument("round")
        p.add_argument("--reason", default="")
        p.add_argument("--minutes", type=float, default=0)
        p.add_argument("--contestant", default="")
    for name in ("competition", "roster", "account", "round"):
        sub.choices[name].set_defaults(fn=run, group=name)
