"""Live state's progress rows against real Redis/Valkey: writes that wait together go
out together, and the newest row for a contestant is the one kept."""

from __future__ import annotations

import asyncio
import uuid

from server.settings import Settings
from server.store.live import LiveState, Progress


def test_progress_rows_written_at_once_share_a_few_round_trips(settings: Settings) -> None:
    async def main() -> tuple[int, dict[str, Progress], dict[str, Progress]]:
        live = LiveState.open(settings.redis_url, settings.redis_prefix)
        try:
            before = (await live.r.info("commandstats")).get("cmdstat_hset", {}).get("calls", 0)
            rounds = [uuid.uuid4().hex for _ in range(3)]
            writes = [
                live.set_progress(rounds[i % 3], f"a{i}", Progress(name=f"学生{i}", questions=1))
                for i in range(300)
            ]
            # The same contestant twice while a batch is open: the later row wins.
            writes.append(live.set_progress(rounds[0], "a0", Progress(name="学生0", questions=2)))
            await asyncio.gather(*writes)
            after = (await live.r.info("commandstats"))["cmdstat_hset"]["calls"]
            return after - before, await live.progress(rounds[0]), await live.progress(rounds[1])
        finally:
            await live.close()

    calls, first, second = asyncio.run(main())
    assert len(first) == 100 and len(second) == 100
    assert first["a0"].questions == 2 and first["a3"].questions == 1
    assert second["a1"].name == "学生1"
    assert calls <= 12, calls  # one HSET per round per batch, not one per row
