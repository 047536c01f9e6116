"""The HTTP API: login and join, competitions, rosters, round control, audit and export.

Each route names the roles it serves (`access.require`); bodies are decoded into
msgspec structs at the edge; domain errors become JSON errors in `server/errors.py`.
Organizer actions return only after they are in PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from arena.errors import ArenaError, BadRequest
from arena.roster import csv_cell, make_join_code, parse_roster
from arena.rounds import ROUND_EVENT_KINDS, Draw, RoundRules
from arena.secrecy import Visibility
from server import protocol
from server.services import library
from server.services.accounts import Claims, ttl_for
from server.services.control import ACTIONS
from server.sessions import judging
from server.sessions.context import Context
from server.store import competitions as competition_rows
from server.wire import hub
from server.wire.access import STAFF, optional, require

MAX_BODY = 2 * 1024 * 1024  # a 5,000-line roster fits


class Login(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=256)]


class NewAccount(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=256)]
    role: Literal["organizer", "judge"] = "judge"
    display_name: Annotated[str, msgspec.Meta(max_length=40)] = ""


class Join(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(max_length=32)]


class NewCompetition(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=100)]


class NewRound(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=80)]
    rules: RoundRules
    draw: Draw | None = None  # draw the case at random; rules.case_id is then ignored


class CaseVisibility(msgspec.Struct, forbid_unknown_fields=True):
    visibility: Visibility
    request_id: Annotated[str, msgspec.Meta(max_length=64)] = ""


class RoundAction(msgspec.Struct, forbid_unknown_fields=True):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""
    seconds: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 0
    contestant_id: Annotated[str, msgspec.Meta(max_length=64)] = ""


def _json(data: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


async def _body(request: Request, typ: type[Any]) -> Any:
    """The JSON body as `typ`; BadRequest naming the problem (the size is bounded by the
    edge before the route runs: server/edge.py)."""
    raw = await request.body()
    depth = _res(request).settings.max_json_depth
    if protocol.too_deep(raw, depth):
        raise BadRequest(f"请求嵌套层数过多（上限 {depth} 层）。",
                         f"Request nested too deeply (limit {depth} levels).")
    try:
        body = msgspec.json.decode(raw, type=typ)
    except msgspec.ValidationError as exc:
        raise BadRequest(
            f"请求格式错误：{protocol.explain(exc)}。", f"Invalid request: {exc}"
        ) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest("请求不是合法的 JSON。", "Malformed JSON.") from exc
    field = protocol.control_field(body)
    if field is not None:
        raise BadRequest(*protocol.control_message(field), field=field)
    return body


def _res(request: Request) -> Context:
    res: Context = request.app.state.context
    return res


async def _issue(res: Context, claims: Claims) -> dict[str, Any]:
    token, claims = await res.tokens.issue(claims)
    return {"token": token, "role": claims.role, "name": claims.name,
            "competition_id": claims.competition_id, "round_id": claims.round_id,
            "exp": claims.exp}


def _address(request: Request) -> str:
    # uvicorn puts the X-Forwarded-For address here only from a proxy that
    # settings.forwarded_allow_ips names (settings.proxy_options).
    return request.client.host if request.client else "unknown"


async def login(request: Request) -> Response:
    res = _res(request)
    body: Login = await _body(request, Login)
    address, username = _address(request), body.username.strip().lower()
    # Checked before the password hash runs, so a locked-out address costs no scrypt time.
    await res.limiter.check("login_address", address)
    await res.limiter.check("login", address, username)
    try:
        role, display = await res.accounts.login(body.username.strip(), body.password)
    except ArenaError:
        await res.limiter.hit("login_address", address)
        await res.limiter.hit("login", address, username)
        raise
    claims = Claims(role=role, sub=body.username.strip(), name=display or body.username.strip(),
                    exp=res.clock() + ttl_for(role))
    return _json(await _issue(res, claims))


async def logout(request: Request) -> Response:
    """Sign this token out everywhere (other tokens of the same person stay valid)."""
    res = _res(request)
    claims = require(request, "organizer", "judge", "contestant", "spectator")
    await res.tokens.revoke(claims)
    await hub.sign_out(res, claims)  # and the connections it already opened
    return _json({"ok": True})


async def accounts(request: Request) -> Response:
    res = _res(request)
    claims = require(request, "organizer")
    await res.limiter.hit("account", claims.sub)
    body: NewAccount = await _body(request, NewAccount)
    await res.accounts.add(body.username.strip(), body.role, body.password, body.display_name)
    await res.audit.append(round_id="", attempt_id=None, actor=f"organizer:{claims.sub}",
                           kind="account_created",
                           payload={"username": body.username.strip(), "role": body.role})
    return _json({"username": body.username.strip(), "role": body.role}, 201)


async def join(request: Request) -> Response:
    res = _res(request)
    body: Join = await _body(request, Join)
    address = _address(request)
    await res.limiter.check("join", address)
    try:
        person = await res.roster.redeem(body.code)
    except ArenaError:  # a wrong, malformed or used code: only failures count
        await res.limiter.hit("join", address)
        raise
    try:
        rnd = await request.app.state.players.current_round(person.competition_id)
        claims = Claims(role="contestant", sub=person.id, name=person.name,
                        competition_id=person.competition_id, round_id=rnd.round_id,
                        exp=res.clock() + ttl_for("contestant"))
        issued = await _issue(res, claims)
    except BaseException:
        # No token came of it (no round yet, Redis down): the code stays unused, or the
        # contestant who came early would need the organizer to reissue it.
        await res.roster.release(person.id)
        raise
    return _json(issued)


async def me(request: Request) -> Response:
    claims = require(request, "organizer", "judge", "contestant", "spectator")
    return _json(claims)


async def competitions(request: Request) -> Response:
    res = _res(request)
    if request.method == "POST":
        claims = require(request, "organizer")
        body: NewCompetition = await _body(request, NewCompetition)
        cid = uuid.uuid4().hex[:12]
        await res.roster.create_competition(body.title.strip(), claims.sub, cid)
        return _json({"id": cid}, 201)
    require(request, "organizer", "judge")
    rows = await competition_rows.rounds(res.audit.pool)
    out = []
    for comp in await res.roster.competitions():
        rounds = []
        for r in rows:
            if r["competition_id"] == comp.id:
                rnd = await res.rounds.get(r["id"])
                rounds.append({"id": rnd.round_id, "title": rnd.title,
                               "case_id": rnd.rules.case_id, "status": rnd.status})
        out.append({"id": comp.id, "title": comp.title, "rounds": rounds})
    return _json(out)


async def create_round(request: Request) -> Response:
    res = _res(request)
    claims = require(request, "organizer")
    body: NewRound = await _body(request, NewRound)
    rnd = await res.rounds.create(
        request.path_params["cid"], body.title, body.rules, actor=f"organizer:{claims.sub}",
        draw=body.draw,
    )
    case_id = rnd.rules.case_id
    out: dict[str, Any] = {"id": rnd.round_id, "case_title": res.library.get(case_id).title,
                           "drawn": body.draw is not None}
    access = (await library.case_access(res.audit.pool, [case_id]))[case_id]
    if access.visibility == "practice":
        # The round hides the case from practice from now on, but students who practised
        # it before have seen its answer key: the organizer should know before starting.
        out["warning"] = (
            "注意：这个病例此前开放练习，学生可能已练过并看过答案。正式比赛建议改用“仅比赛”的病例。"
        )
        out["warning_en"] = (
            "This case was open to practice: students may already have seen its answer key."
        )
    return _json(out, 201)


def _link(request: Request, code: str) -> str:
    return f"{request.base_url}play.html#code={code}"


async def roster(request: Request) -> Response:
    res = _res(request)
    require(request, "organizer")
    cid = request.path_params["cid"]
    if request.method == "POST":
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise BadRequest("名单文件过大。", "Roster too large.")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadRequest("名单文件须为 UTF-8 编码的 CSV。", "Roster must be UTF-8.") from exc
        rows, problems = parse_roster(text)
        if problems:
            return _json({"code": "roster_invalid", "message": "名单有错误，未导入任何人。",
                          "message_en": "The roster has problems; nothing was imported.",
                          "problems": problems}, 400)
        codes = iter(lambda: make_join_code(os.urandom), None)
        added = await res.roster.import_rows(cid, rows, codes)
        return _json({"added": len(added)}, 201)
    people = await res.roster.contestants(cid)
    return _json([{**msgspec.to_builtins(p), "link": _link(request, p.join_code)}
                  for p in people])


async def roster_csv(request: Request) -> Response:
    res = _res(request)
    require(request, "organizer")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["姓名", "学校", "队伍", "邮箱", "参赛码", "链接"])
    for p in await res.roster.contestants(request.path_params["cid"]):
        # Names and schools come from an uploaded roster: never a live formula in Excel.
        writer.writerow([csv_cell(v) for v in (p.name, p.school, p.team, p.email, p.join_code,
                                               _link(request, p.join_code))])
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="roster.csv"'})


async def reissue(request: Request) -> Response:
    res = _res(request)
    require(request, "organizer")
    pid = request.path_params["pid"]
    code = await res.roster.reissue(pid, make_join_code(os.urandom))
    # The old code's device is signed out too: a reissue is how an organizer takes a
    # contestant's seat back from a lost or shared phone.
    subject = f"contestant:{pid}"
    await hub.sign_out(res, subject=subject,
                       generation=await res.tokens.revoke_subject(subject))
    return _json({"join_code": code})


async def round_info(request: Request) -> Response:
    res = _res(request)
    require(request, "organizer", "judge")
    rnd = await res.rounds.get(request.path_params["rid"])
    return _json({"id": rnd.round_id, "title": rnd.title, "competition_id": rnd.event_id,
                  "rules": rnd.rules, "clock": rnd.snapshot(res.clock())})


async def round_action(request: Request) -> Response:
    res = _res(request)
    claims = require(request, "organizer")
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise BadRequest(f"未知操作：{action}", f"Unknown action {action!r}.")
    body: RoundAction = await _body(request, RoundAction)
    rnd = await res.rounds.command(
        request.path_params["rid"], action, actor=f"organizer:{claims.sub}",
        request_id=body.request_id, reason=body.reason.strip(), seconds=body.seconds,
        contestant_id=body.contestant_id or None,
    )
    return _json({"clock": rnd.snapshot(res.clock())})


async def spectator_link(request: Request) -> Response:
    res = _res(request)
    claims = require(request, "organizer")
    rnd = await res.rounds.get(request.path_params["rid"])
    link = Claims(role="spectator", sub=f"screen-{uuid.uuid4().hex[:8]}", name="观众大屏",
                  competition_id=rnd.event_id, round_id=rnd.round_id,
                  exp=res.clock() + ttl_for("spectator"))
    token, link = await res.tokens.issue(link)
    await res.audit.append(round_id=rnd.round_id, attempt_id=None,
                           actor=f"organizer:{claims.sub}", kind="spectator_link",
                           payload={"sub": link.sub, "exp": link.exp})
    return _json({"token": token, "url": f"{request.base_url}screen.html?k={token}"}, 201)


async def review(request: Request) -> Response:
    """The judges' queue: submissions whose diagnosis the scoring rules left to a judge."""
    require(request, "organizer", "judge")
    return _json(await judging.review_queue(_res(request), request.path_params["rid"]))


def _caller(request: Request) -> Claims | None:
    """The caller's claims when a valid token came with the request, else None.

    For routes anyone may call: a missing, expired or forged token is simply no token.
    """
    return optional(request)  # verified (revocation included) by the edge, server/edge.py


async def cases(request: Request) -> Response:
    """The cases the caller may play in practice; staff get every case and its access."""
    res = _res(request)
    claims = _caller(request)
    cards = res.library.cards()
    access = await library.case_access(res.audit.pool, [c.id for c in cards])
    if claims is None or claims.role not in STAFF:
        return _json([c for c in cards if access[c.id].practice_open()])
    return _json([
        {**msgspec.to_builtins(c), **msgspec.to_builtins(access[c.id]),
         "practice_open": access[c.id].practice_open()}
        for c in cards
    ])


async def case_visibility(request: Request) -> Response:
    res = _res(request)
    claims = require(request, "organizer")
    body: CaseVisibility = await _body(request, CaseVisibility)
    access = await library.set_visibility(
        res.audit, res.library, request.path_params["case"], body.visibility,
        actor=f"organizer:{claims.sub}", request_id=body.request_id or None,
    )
    return _json({**msgspec.to_builtins(access), "practice_open": access.practice_open()})


_STAFF_KINDS = ROUND_EVENT_KINDS | {"adjudicated", "overridden", "spectator_link"}


async def audit(request: Request) -> Response:
    res = _res(request)
    require(request, "organizer")
    events = await res.audit.round_events(request.path_params["rid"], _STAFF_KINDS)
    return _json([{"at": e.at, "actor": e.actor, "kind": e.kind, "attempt_id": e.attempt_id,
                   "reason": e.payload.get("reason", ""), "payload": e.payload}
                  for e in events])


async def export(request: Request) -> Response:
    res = _res(request)
    require(request, "organizer")
    rid = request.path_params["rid"]
    events = await res.audit.events(round_id=rid)
    return Response(
        msgspec.json.encode({"round_id": rid, "events": events}),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="round-{rid}.json"'},
    )


ROUTES = [
    Route("/api/cases", cases),
    Route("/api/cases/{case}/visibility", case_visibility, methods=["POST"]),
    Route("/api/login", login, methods=["POST"]),
    Route("/api/join", join, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/accounts", accounts, methods=["POST"]),
    Route("/api/me", me),
    Route("/api/competitions", competitions, methods=["GET", "POST"]),
    Route("/api/competitions/{cid}/rounds", create_round, methods=["POST"]),
    Route("/api/competitions/{cid}/roster", roster, methods=["GET", "POST"]),
    Route("/api/competitions/{cid}/roster.csv", roster_csv),
    Route("/api/contestants/{pid}/reissue", reissue, methods=["POST"]),
    Route("/api/rounds/{rid}", round_info),
    Route("/api/rounds/{rid}/spectator", spectator_link, methods=["POST"]),
    Route("/api/rounds/{rid}/audit", audit),
    Route("/api/rounds/{rid}/export", export),
    Route("/api/rounds/{rid}/review", review),
    Route("/api/rounds/{rid}/{action}", round_action, methods=["POST"]),
]
