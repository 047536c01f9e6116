"""The resources a running server holds, opened in the app's lifespan and typed in one place."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from server.audit import AuditLog
from server.library import Library
from server.live import LiveState
from server.llm import PatientEngine
from server.objects import ObjectStore
from server.settings import Settings


class Resources(msgspec.Struct, kw_only=True):
    settings: Settings
    audit: AuditLog
    live: LiveState
    engine: PatientEngine
    library: Library
    objects: ObjectStore
    # Server time in seconds since the epoch. Injected so tests can move time.
    clock: Callable[[], float]
