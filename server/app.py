"""The app factory: routes, and the resources opened and closed in the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from arena.errors import ArenaError
from arena.terminology import terminology
from server.metrics import REGISTRY
from server.patient.pool import Background
from server.patient.relay import make_engine
from server.services.accounts import Accounts, Roster
from server.services.boards import Boards
from server.services.control import RoundService
from server.services.library import Library
from server.services.ratelimit import RateLimiter
from server.services.tokens import Tokens
from server.sessions.contest import Players
from server.sessions.context import Context
from server.settings import Settings
from server.store.audit import AuditLog
from server.store.audit import prepare as prepare_database
from server.store.bus import Bus
from server.store.live import LiveState
from server.store.objects import open_store
from server.wire import api, authoring, errors, hub
from server.wire.edge import Edge, redact_access_log

WEB = Path(__file__).parent / "web"
log = logging.getLogger("arena.app")


def _json(data: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    res: Context = request.app.state.context
    checks = {
        "postgres": await res.audit.check(),
        "redis": await res.live.check(),
        "llm": await res.engine.check(),
        # Until the matching process has loaded the library, a submission waits seconds.
        "matching": await res.background.check(),
    }
    report: dict[str, object] = {k: v or "ok" for k, v in checks.items()}
    report["engine"] = res.engine.name
    report["ready"] = all(v is None for v in checks.values())
    return _json(report, 200 if report["ready"] else 503)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _first_organizer(res: Context) -> None:
    """A fresh install needs one organizer to log in with; make `admin` if there is none."""
    if await res.accounts.count("organizer"):
        return
    password = res.settings.admin_password or secrets.token_urlsafe(12)
    try:
        await res.accounts.add("admin", "organizer", password, "管理员")
    except ArenaError:
        return  # another process created it at the same moment
    if not res.settings.admin_password:
        path = res.settings.data_dir / "admin-password.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n", encoding="utf-8")
        path.chmod(0o600)
        log.warning("created organizer account admin; password in %s", path)
        print(f"组织者账号 admin 已创建，密码：{password}（也保存在 {path}）", flush=True)


def _load_library(settings: Settings) -> Library:
    library = Library.load(
        settings.cases_dir, "auto" if settings.embeddings else None, settings.embedding_cache,
    )
    terminology()  # read here, not by the first submission scored (the case lint reads it today)
    return library


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Starlette:
    """Build the app. `settings` must name PostgreSQL and Redis URLs (see `arena up`)."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("create_app needs database_url and redis_url; `arena up` provides them")
    redact_access_log()  # before uvicorn logs the first request line

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Reads the cases `arena up` has just checked. The pool builds the matchers here,
        # on this thread, and forks its worker from this process, which shares them: built
        # once, not once per process (docs/benchmarks.md, restart).
        # Seconds with a warm cache; the first start on a data folder also embeds the
        # intent bank (half a minute or more): say so, or the page looks dead meanwhile.
        began = time.perf_counter()
        log.info("正在加载病例库和题目匹配（首次启动需计算向量，可能要一分钟）"
                 " loading the case library and question matching")
        library = _load_library(settings)
        background = Background(library)
        await background.start()
        log.info("病例库已加载：%d 个病例，%.1f 秒 (case library loaded: %d cases, %.1f s)",
                 len(library.cases), time.perf_counter() - began, len(library.cases),
                 time.perf_counter() - began)
        try:
            # Migrations run as the owner; the pool logs in as the app role, which can only
            # append to and read the event log (settings.database_app_user).
            await prepare_database(
                settings.database_url, settings.database_schema,
                settings.database_app_user, settings.database_app_password,
            )
            audit = await AuditLog.open(settings.app_database_url, settings.database_schema)
        except BaseException:
            await background.close()
            raise
        live = LiveState.open(settings.redis_url, settings.redis_prefix)
        bus = Bus(live.r, settings.redis_prefix, history=settings.channel_history)
        engine = make_engine(settings, library.matchers)
        rounds: RoundService | None = None
        try:
            await bus.start()
            # Built in dependency order, each from what was built before it.
            tokens = await Tokens.open(audit.pool, live.r, settings.redis_prefix, clock)
            accounts = Accounts(audit.pool)
            rounds = RoundService(audit, bus, library, clock)
            boards = Boards(audit, live, bus, rounds, library, clock)
            res = Context(
                settings=settings, audit=audit, live=live, engine=engine, library=library,
                objects=open_store(
                    endpoint=settings.s3_endpoint, access_key=settings.s3_access_key,
                    secret_key=settings.s3_secret_key, bucket=settings.s3_bucket,
                    secure=settings.s3_secure, folder=settings.data_dir / "objects",
                ),
                clock=clock, bus=bus, tokens=tokens,
                limiter=RateLimiter(live.r, settings.redis_prefix, settings),
                accounts=accounts, roster=Roster(audit.pool),
                background=background, rounds=rounds, boards=boards,
            )
            await _first_organizer(res)
            app.state.context = res
            app.state.players = Players(res)
            app.state.signed_in = hub.SignedIn(bus)
            rounds.start()
            # Start-up leaves many long-lived objects (jieba's dictionary, the case
            # matchers, the SDKs); every full collection would walk them again, pausing
            # the loop for a tenth of a second or more at a time under load (a probe
            # with gc.callbacks during loadtest.relay_bench; not committed).
            gc.collect()
            gc.freeze()
            yield
        finally:
            if rounds is not None:
                await rounds.close()
            await bus.close()
            await engine.aclose()
            await background.close()
            await live.close()
            await audit.close()

    return Starlette(
        routes=[
            *api.ROUTES,
            *authoring.ROUTES,
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            WebSocketRoute("/ws", hub.endpoint),
            Mount("/", StaticFiles(directory=WEB, html=True), name="web"),
        ],
        lifespan=lifespan,
        middleware=[Middleware(Edge)],
        exception_handlers={
            ArenaError: errors.http_error, 404: errors.not_found,
            # Text PostgreSQL refuses (a NUL in a path): a 400 naming it, not a 500.
            **dict.fromkeys(errors.BAD_TEXT, errors.http_error),
            # PostgreSQL or Redis down: the 503 `unavailable` in Chinese, not a bare 500.
            **dict.fromkeys(errors.UNAVAILABLE, errors.http_error),
        },
    )
