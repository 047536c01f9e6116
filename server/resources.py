"""The resources a running server holds, opened in the app's lifespan and typed in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from server.patient.pool import Background
from server.patient.relay import Relay
from server.services.accounts import Accounts, Roster
from server.services.library import Library
from server.services.ratelimit import RateLimiter
from server.services.tokens import Tokens
from server.settings import Settings
from server.store.audit import AuditLog
from server.store.bus import Bus
from server.store.live import LiveState
from server.store.objects import ObjectStore

if TYPE_CHECKING:  # these modules use Resources themselves
    from server.services.boards import Boards
    from server.services.control import RoundService
    from server.sessions.contest import Players
    from server.wire.hub import SignedIn


class Resources(msgspec.Struct, kw_only=True):
    settings: Settings
    audit: AuditLog
    live: LiveState
    engine: Relay  # the patient engine behind the gate, breaker and guard
    library: Library
    objects: ObjectStore
    # Server time in seconds since the epoch. Injected so tests can move time.
    clock: Callable[[], float]
    bus: Bus
    tokens: Tokens
    limiter: RateLimiter
    accounts: Accounts
    roster: Roster
    background: Background  # question matching for scoring, off the answer's path
    # Set right after construction: they need the resources above.
    rounds: RoundService = None  # type: ignore[assignment]
    boards: Boards = None  # type: ignore[assignment]
    players: Players = None  # type: ignore[assignment]
    signed_in: SignedIn | None = None  # made by the hub at the first hello with a token
