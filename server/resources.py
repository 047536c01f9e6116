"""The resources a running server holds, opened in the app's lifespan and typed in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from server.audit import AuditLog
from server.auth import Accounts, Roster
from server.background import Background
from server.bus import Bus
from server.library import Library
from server.live import LiveState
from server.objects import ObjectStore
from server.ratelimit import RateLimiter
from server.relay import Relay
from server.settings import Settings
from server.tokens import Tokens

if TYPE_CHECKING:  # these modules use Resources themselves
    from server.boards import Boards
    from server.hub import SignedIn
    from server.player import Players
    from server.rounds import RoundService


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
