"""The whole adversarial corpus against the output guard alone (no server): 0 leaks, and
every clean reply and every honest answer shown whole. Seconds, not minutes; the server
tests in test_leaks.py play the same attacks through the real relay."""

from __future__ import annotations

import pytest

from tests.adversarial.guard_play import play
from tests.adversarial.oracle import all_case_ids


@pytest.mark.parametrize("case_id", all_case_ids())
def test_the_guard_alone_leaks_nothing_and_mangles_nothing_honest(case_id: str) -> None:
    played = play(case_id)
    assert sum(played.attempts.values()) >= 150
    assert not played.leaks, "\n".join(played.leaks[:15])
    assert not played.mangled, "\n".join(played.mangled[:15])
