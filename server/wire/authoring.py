"""The case editor's HTTP routes (organizer only): list, create, check, save, history,
diff, try the patient, publish. The editor's page is web/cases.html; what each does is
server.services.authoring's; docs/cases.md, "The case editor", describes them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from arena.cases import MAX_CASE_BYTES
from arena.errors import BadRequest, ModelUnavailable
from arena.intents import INTENTS
from arena.patient import Turn
from server.patient.drafter import Broken, Drafter
from server.services.authoring import Authoring, check, diff
from server.sessions.context import Context
from server.wire.access import require
from server.wire.api import _body

Text = Annotated[str, msgspec.Meta(max_length=2000)]


class Draft(msgspec.Struct, forbid_unknown_fields=True):
    # Any JSON object: the service validates it as a case and names every problem.
    content: dict[str, Any]


class SaveBody(msgspec.Struct, forbid_unknown_fields=True):
    content: dict[str, Any]
    note: Annotated[str, msgspec.Meta(max_length=200)] = ""


class NewCase(msgspec.Struct, forbid_unknown_fields=True):
    # "" for a blank case; else a record (sectioned Chinese text) or OSCE JSON to draft from.
    record: Annotated[str, msgspec.Meta(max_length=200_000)] = ""


class DraftRequest(msgspec.Struct, forbid_unknown_fields=True):
    # A record (sectioned text) or a one-line brief: "55 岁男性，急性下壁心梗，糖尿病史".
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]


class PreviewTurn(msgspec.Struct, forbid_unknown_fields=True):
    question: Text
    answer: Annotated[str, msgspec.Meta(max_length=4000)]


class Preview(msgspec.Struct, forbid_unknown_fields=True):
    content: dict[str, Any]
    question: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    history: Annotated[list[PreviewTurn], msgspec.Meta(max_length=40)] = []


class Publish(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]
    visibility: Literal["practice", "contest"]
    request_id: Annotated[str, msgspec.Meta(max_length=64)] = ""


def _json(data: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def _service(request: Request) -> Authoring:
    """The app's one Authoring, made on first use from the context the factory built."""
    state = request.app.state
    service: Authoring | None = getattr(state, "authoring", None)
    if service is None:
        res: Context = state.context
        service = state.authoring = Authoring(res.audit, res.library, res.settings.cases_dir)
    return service


def _organizer(request: Request) -> str:
    return f"organizer:{require(request, 'organizer').sub}"


async def _draft(request: Request, typ: type[Any]) -> Any:
    if len(await request.body()) > MAX_CASE_BYTES + 10_000:
        raise BadRequest("病例内容过大。", "Case too large.")
    return await _body(request, typ)


async def meta(request: Request) -> Response:
    """What the form offers: intents with their Chinese labels, the library's specialties."""
    _organizer(request)
    res: Context = request.app.state.context
    return _json({"intents": INTENTS,
                  "specialties": sorted({c.specialty for c in res.library.cases.values()}),
                  "drafting": bool(res.settings.llm_base_url)})  # "用模型起草" is offered


async def cases(request: Request) -> Response:
    actor = _organizer(request)
    service = _service(request)
    if request.method == "POST":
        body: NewCase = await _body(request, NewCase)
        cid, saved, problems = await service.create(actor, body.record)
        content, _ = await service.current(cid)
        return _json({"id": cid, "version": saved, "content": content, "problems": problems},
                     201)
    return _json(await service.listing())


async def draft_with_model(request: Request) -> Response:
    """A new case drafted by the LLM (server/patient/drafter.py), saved as version 1 with
    the model and prompt version in its note; its problems are listed, nothing published."""
    actor = _organizer(request)
    settings = request.app.state.context.settings
    body: DraftRequest = await _body(request, DraftRequest)
    if not settings.llm_base_url:
        raise ModelUnavailable(
            "没有配置模型服务（LLM_BASE_URL），不能用模型起草；可以粘贴病历或 OSCE JSON 导入。",
            "No LLM endpoint is configured (LLM_BASE_URL).")
    service = _service(request)
    cid = await service.fresh_id()
    try:
        async with Drafter(settings) as drafter:
            drafted = await drafter.draft(body.source, cid)
    except Broken as exc:
        raise ModelUnavailable(
            "模型服务没有完成起草，请稍后重试，或改用导入。",
            f"The model endpoint failed: {exc.kind}.") from exc
    if drafted.content is None:
        raise ModelUnavailable(
            f"模型 {drafted.attempts} 次都没有给出病例 JSON，请重试或改用导入。",
            "The model gave no case JSON.")
    note = (f"由模型 {drafted.model} 起草（提示词 {drafted.prompt_version}，"
            f"生成 {drafted.attempts} 次）")
    saved, problems = await service.save(cid, drafted.content, actor, note)
    content, _ = await service.current(cid)
    return _json({"id": cid, "version": saved, "content": content, "problems": problems,
                  "attempts": drafted.attempts, "model": drafted.model,
                  "prompt_version": drafted.prompt_version}, 201)


async def one(request: Request) -> Response:
    _organizer(request)
    service = _service(request)
    cid = request.path_params["case"]
    content, saved = await service.current(cid)
    _, problems = check(content)
    return _json({"id": cid, "content": content, "version": saved,
                  "history": await service.history(cid), "problems": problems})


async def check_draft(request: Request) -> Response:
    _organizer(request)
    body: Draft = await _draft(request, Draft)
    _, problems = check(body.content)
    return _json({"problems": problems})


async def versions(request: Request) -> Response:
    actor = _organizer(request)
    service = _service(request)
    cid = request.path_params["case"]
    if request.method == "POST":
        body: SaveBody = await _draft(request, SaveBody)
        saved, problems = await service.save(cid, body.content, actor, body.note)
        return _json({"version": saved, "problems": problems}, 201)
    return _json(await service.history(cid))


async def version(request: Request) -> Response:
    _organizer(request)
    number = _int(request.path_params["n"])
    content = await _service(request).version(request.path_params["case"], number)
    return _json({"version": number, "content": content})


def _int(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 1_000_000:
        raise BadRequest(f"版本号须为正整数：{text[:20]}", "A version is a positive integer.")
    return int(text)


async def compare(request: Request) -> Response:
    _organizer(request)
    service = _service(request)
    cid = request.path_params["case"]
    a, b = _int(request.query_params.get("a", "")), _int(request.query_params.get("b", ""))
    return _json({"a": a, "b": b, "changes": diff(await service.version(cid, a),
                                                  await service.version(cid, b))})


async def preview(request: Request) -> Response:
    _organizer(request)
    body: Preview = await _draft(request, Preview)
    history = [Turn(t.question, t.answer) for t in body.history]
    return _json(await _service(request).preview(body.content, body.question, history))


async def publish(request: Request) -> Response:
    actor = _organizer(request)
    body: Publish = await _body(request, Publish)
    service = _service(request)
    try:
        result = await service.publish(request.path_params["case"], body.version,
                                       body.visibility, actor, body.request_id or None)
    except BadRequest as exc:
        if "problems" not in exc.detail:
            raise
        # Like a refused roster: every problem at once, so the author fixes them in one pass.
        return _json({"code": exc.code, "message": exc.message_zh, "message_en": exc.message_en,
                      "problems": exc.detail["problems"]}, 400)
    # Submissions are scored in the matching worker, which holds the library it started
    # with: a new worker, or a round on the published case could not be scored.
    request.app.state.context.background.renew()
    return _json(result)


ROUTES = [
    Route("/api/authoring/meta", meta),
    Route("/api/authoring/check", check_draft, methods=["POST"]),
    Route("/api/authoring/preview", preview, methods=["POST"]),
    Route("/api/authoring/cases", cases, methods=["GET", "POST"]),
    Route("/api/authoring/draft", draft_with_model, methods=["POST"]),
    Route("/api/authoring/cases/{case}", one),
    Route("/api/authoring/cases/{case}/versions", versions, methods=["GET", "POST"]),
    Route("/api/authoring/cases/{case}/versions/{n}", version),
    Route("/api/authoring/cases/{case}/diff", compare),
    Route("/api/authoring/cases/{case}/publish", publish, methods=["POST"]),
]
