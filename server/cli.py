"""The `arena` command: up, serve, migrate, cases check, and the organizer console."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import msgspec
import uvicorn

from server import audit_cli, console, keys_cli
from server.services.library import check_folder
from server.settings import Settings, from_env, proxy_options
from server.store.audit import AuditLog
from server.store.embedded import DataDirBusy, EmbeddedServices

log = logging.getLogger("arena")


def _with_services(settings: Settings, embedded: EmbeddedServices) -> Settings:
    """Fill in URLs for whatever is not configured from embedded services."""
    changes: dict[str, object] = {}
    if not settings.database_url:
        changes["database_url"] = embedded.postgres_url()
    if not settings.redis_url:
        changes["redis_url"] = embedded.redis_url()
    return msgspec.structs.replace(settings, **changes)


def _serve(settings: Settings) -> None:
    from server.app import create_app

    print(f"临床诊断竞技场 Clinic Arena: http://{settings.host}:{settings.port}  "
          f"(patient engine: {settings.engine}; Ctrl-C to stop)", flush=True)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="info",
        ws_max_size=settings.max_frame_bytes * 4,  # the protocol answers oversize frames itself
        # A zlib context per socket costs far more memory than a board message saves in
        # bytes, and compressing one broadcast 5,000 times costs CPU: off.
        ws_per_message_deflate=False,
        **proxy_options(settings),  # X-Forwarded-For only from a proxy that settings name
    )


def _cases_ok(folder: Path) -> bool:
    """Refuse to start on a broken case library, naming every problem (not a traceback)."""
    report = check_folder(folder)
    if not report:
        print(f"病例目录 {folder} 中没有病例文件 (no case files in {folder})", file=sys.stderr)
        return False
    bad = {p: problems for p, problems in report.items() if problems}
    for path, problems in bad.items():
        print(f"病例文件有错误 (case file has problems): {path}", file=sys.stderr)
        for problem in problems:
            print(f"    {problem}", file=sys.stderr)
    return not bad


def cmd_up(args: argparse.Namespace) -> int:
    settings = from_env(**_overrides(args))
    if not _cases_ok(settings.cases_dir):
        return 2
    embedded = EmbeddedServices(settings.data_dir)
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that runs
    # the `finally` below, so embedded services stop whether we got Ctrl-C or a kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        settings = _with_services(settings, embedded)
        _serve(settings)
    except DataDirBusy as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        embedded.stop()  # Ctrl-C stops everything `up` started; the data stays
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = from_env(**_overrides(args))
    if not _cases_ok(settings.cases_dir):
        return 2
    if not settings.database_url or not settings.redis_url:
        print("arena serve 需要 DATABASE_URL 和 REDIS_URL（或使用 arena up）。", file=sys.stderr)
        return 2
    _serve(settings)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = from_env()
    embedded = EmbeddedServices(settings.data_dir)
    try:
        url = settings.database_url or embedded.postgres_url()

        async def run() -> list[str]:
            audit = await AuditLog.open(url, settings.database_schema)
            try:
                return await audit.migrate(
                    settings.database_app_user, settings.database_app_password
                )
            finally:
                await audit.close()

        applied = asyncio.run(run())
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    finally:
        embedded.stop()
    return 0


def cmd_cases_check(args: argparse.Namespace) -> int:
    # The folder the server would load (CASES_DIR) unless one is named.
    folder = Path(args.folder) if args.folder else from_env().cases_dir
    report = check_folder(folder)
    if not report:
        print(f"{folder}: no case files (*.json)", file=sys.stderr)
        return 1
    bad = 0
    for path, problems in report.items():
        if problems:
            bad += 1
            print(f"✗ {path}")
            for p in problems:
                print(f"    {p}")
        else:
            print(f"✓ {path}")
        cues = _menu_cues(path)
        if cues:
            print(f"    提示：这些项目不在通用检查目录中，会以原名单独出现在菜单上，可能提示答案"
                  f"（可在 covers 中写明对应的目录项）：{'、'.join(cues)}")
    print(f"{len(report) - bad} ok, {bad} with problems")
    return 1 if bad else 0


def _menu_cues(path: Path) -> list[str]:
    """Names of the case's items the shared menu lacks (a warning, not a problem)."""
    from arena.cases import load_case
    from arena.catalogue import catalogue

    try:
        case = load_case(path.read_bytes(), str(path))
    except Exception:
        return []  # its problems are reported already
    return [item.name for item in catalogue().cues(case)]


def cmd_cases_import(args: argparse.Namespace) -> int:
    """A record or OSCE JSON to a draft case file (or stdout); never into the library."""
    from arena.importer import import_source

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"读不到文件 (cannot read {args.file}): {exc.strerror}", file=sys.stderr)
        return 2
    draft = import_source(data, args.index)
    if not draft.case:
        for p in draft.problems:
            print(p, file=sys.stderr)
        return 2
    text = msgspec.json.format(msgspec.json.encode(draft.case), indent=2).decode() + "\n"
    report = sys.stderr
    if args.output:
        out = Path(args.output).resolve()
        library = (Path(args.cases) if args.cases else from_env().cases_dir).resolve()
        if out.is_relative_to(library):
            print(f"草稿不写入病例库 (a draft is not written into the case library {library}); "
                  "finish it elsewhere; it joins the library once `arena cases check` passes",
                  file=sys.stderr)
            return 2
        out.write_text(text, encoding="utf-8")
        report = sys.stdout
        print(f"draft {draft.case['id']} ({draft.source}) -> {out}", file=report)
    else:
        sys.stdout.write(text)
    for p in draft.problems:
        print(f"    {p}", file=report)
    print(f"{len(draft.problems)} problems to fix before this draft is a case", file=report)
    return 1 if draft.problems else 0


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    if getattr(args, "port", None):
        out["port"] = args.port
    if getattr(args, "host", None):
        out["host"] = args.host
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="arena", description="临床诊断竞技场 Clinic Arena")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("up", cmd_up, "start embedded services (if not configured) and serve"),
        ("serve", cmd_serve, "serve against DATABASE_URL and REDIS_URL"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.set_defaults(fn=fn)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    cases = sub.add_parser("cases", help="case library tools")
    cases_sub = cases.add_subparsers(dest="cases_command", required=True)
    check = cases_sub.add_parser(
        "check", help="validate every case file (schema, answer-key terms in what is shown "
        "before play), print every problem with its JSON path")
    check.add_argument("folder", nargs="?", default="", help="default: CASES_DIR")
    check.set_defaults(fn=cmd_cases_check)
    imp = cases_sub.add_parser(
        "import", help="a sectioned Chinese record (text) or AgentClinic OSCE JSON to a draft "
        "case; prints every problem with its JSON path, exit 1 while there are any")
    imp.add_argument("file", help="record (.txt, UTF-8 or GB18030) or OSCE JSON / JSON lines")
    imp.add_argument("-o", "--output", default="", help="write the draft here (default stdout); "
                     "refused inside the case library")
    imp.add_argument("--index", type=int, default=0, help="which case of a JSON lines file")
    imp.add_argument("--cases", default="", help="the case library to keep out of (default "
                     "CASES_DIR)")
    imp.set_defaults(fn=cmd_cases_import)
    console.add_case_parsers(cases_sub)
    console.add_parsers(sub)
    audit_cli.add_parsers(sub)
    keys_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
