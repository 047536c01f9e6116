"""What a session needs of the client it serves: sends and channel subscriptions.

The wire's `Connection` is the one implementation; sessions depend on this shape
only, so they sit below the wire and never import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from server import protocol
from server.store.bus import Bus


class Client(Protocol):
    id: str

    def send(self, msg: protocol.ServerMsg) -> None:
        """Queue a message for the client; never blocks."""

    def send_body(self, body: str, cseq: int = 0) -> None:
        """Queue an already-encoded bus message."""

    def follow(self, bus: Bus, channel: str) -> Callable[[], None]:
        """Deliver a history channel's messages; returns the unsubscribe."""

    def follow_latest(self, bus: Bus, channel: str) -> Callable[[], None]:
        """Deliver a latest-only channel's messages; returns the unsubscribe."""

    async def replay(self, bus: Bus, channel: str, since: int) -> None:
        """Send what the client missed on `channel` after `since`, or tell it to reload."""

    def close_soon(self) -> None:
        """Close the client after what is queued for it (another device took its seat)."""

    def report(self, exc: BaseException, re: str | None) -> None:
        """Send the error reply for a failure (the wire's one table words it)."""


# Reports a failure that happened outside a request (an answer not recorded, say) to the
# client; the wire maps it to an error reply with its one table.
Report = Callable[[BaseException, "str | None"], None]
