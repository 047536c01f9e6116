"""What every session is given: the services and the patient, built once by the app factory.

The app factory builds each part in dependency order (store, services, patient) and
then this struct, whole: nothing in it is set later. Sessions take it explicitly;
the registry of contest sessions and the signed-in connections belong to the wire.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from server.patient.pool import Background
from server.patient.relay import Relay
from server.services.accounts import Accounts, Roster
from server.services.boards import Boards
from server.services.control import RoundService
from server.services.library import Library
from server.services.ratelimit import RateLimiter
from server.services.tokens import Tokens
from server.settings import Settings
from server.store.audit import AuditLog
from server.store.bus import Bus
from server.store.live import LiveState
from server.store.objects import ObjectStore


class Context(msgspec.Struct, frozen=True, kw_only=True):
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
    rounds: RoundService
    boards: Boards
