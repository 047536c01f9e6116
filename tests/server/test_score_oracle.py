"""No score oracle: before publication no score, verdict, rank by score or answer-key
term reaches a contestant or the big screen, over the real WebSocket; judges see scores;
after publication each contestant gets their own card with the answer key; a round
with open scoring shows scores live; with several submissions the last one counts.

Every frame a contestant and a spectator receive is kept raw and inspected, not only the
messages a test happens to wait for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from arena.cases import Case, load_case
from server import protocol
from tests.support import Api, Client, FakeClock, make_round

CASE = "r8c3vn"
WRONG = "胃食管反流病"  # A's first submission: wrong, and it must leave no trace
RIGHT = "急性下壁心肌梗死"  # A's second (last) submission: correct
OTHER = "急性胃肠炎"  # B's only submission


@pytest.fixture(scope="module")
def case() -> Case:
    path = Path(__file__).parents[2] / "cases" / f"{CASE}.json"
    return load_case(path.read_bytes(), str(path))


class RawClient(Client):
    """A client that keeps every frame as received, for inspection."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.frames: list[str] = []

    def __enter__(self) -> RawClient:
        return self

    def recv(self, timeout: float = 10) -> protocol.ServerMsg:
        raw = self.ws.recv(timeout=timeout)
        text = raw if isinstance(raw, str) else raw.decode()
        self.frames.append(text)
        msg = protocol.decode_server(text)
        self.received.append(msg)
        return msg

    def drain(self, quiet: float = 0.8) -> None:
        """Read until nothing arrives for `quiet` seconds (boards coalesce every 0.25 s)."""
        while True:
            try:
                self.recv(quiet)
            except TimeoutError:
                return


def key_terms(case: Case) -> list[str]:
    """Answer-key text that must not reach a contestant or a screen before publication."""
    key = case.answer_key
    terms = [key.diagnosis.name, key.diagnosis.name_en, key.diagnosis.icd10,
             *key.diagnosis.synonyms, *key.teaching_points,
             *(i.text for i in (*key.checklist, *key.red_flags))]
    for d in (*key.differentials, *key.partial):
        terms += [d.name, d.name_en, *d.synonyms]
    # Short Latin abbreviations are checked as whole words below.
    return [t for t in terms if t]


def leaked_terms(frames: list[str], terms: list[str], own: tuple[str, ...] = ()) -> list[str]:
    """Key terms found in `frames` (JSON decoded, so Chinese is compared as text), after
    removing what this contestant typed themselves (their own submission is echoed)."""
    text = "\n".join(json.dumps(json.loads(f), ensure_ascii=False) for f in frames)
    for mine in own:
        text = text.replace(mine, "")
    found = []
    for t in terms:
        pattern = rf"(?<![A-Za-z]){re.escape(t)}(?![A-Za-z])" if t.isascii() else re.escape(t)
        if re.search(pattern, text, flags=re.IGNORECASE):
            found.append(t)
    return found


SCORE_KEYS = re.compile(r'"(total|max_total|points|max_points|verdict|card|sections)"\s*:')
NON_NULL = re.compile(r'"(score|rank)"\s*:\s*(?!null)')


def assert_no_score(c: RawClient, terms: list[str], own: tuple[str, ...] = ()) -> None:
    """Nothing in any frame so far tells a score, a verdict, a rank or the answer key."""
    assert c.frames
    for raw in c.frames:
        assert not SCORE_KEYS.search(raw), raw
        assert not NON_NULL.search(raw), raw
    kinds = {m.__struct_config__.tag for m in c.received}
    assert not kinds & {"scored", "results", "transcript", "transcript_entry", "reveal"}, kinds
    for m in c.received:
        if isinstance(m, protocol.BoardUpdate):
            assert m.view == "public" and m.board.progress_only, m
            assert all(r.score is None and r.rank is None for r in m.board.rows)
        if isinstance(m, protocol.SubmitAck | protocol.PlayState):
            assert m.score is None
    assert leaked_terms(c.frames, terms, own) == []


def _board(c: Client, check: Any, timeout: float = 10) -> protocol.BoardUpdate:
    msg: protocol.BoardUpdate = c.until(
        lambda m: isinstance(m, protocol.BoardUpdate) and check(m), timeout
    )
    return msg


def _rows(board: protocol.BoardUpdate) -> dict[str, Any]:
    return {r.name: r for r in board.board.rows}


def test_no_score_before_publication_and_the_last_submission_counts(
    server: str, clock: FakeClock, case: Case
) -> None:
    org = Api.login(server)
    _, rid, roster = make_round(org, people=3, case_id=CASE, max_submissions=2)
    tokens = [org.join(p["join_code"])["token"] for p in roster]
    screen = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    terms = key_terms(case)
    org.action(rid, "open")
    org.action(rid, "start")
    with RawClient(server) as a, RawClient(server) as b, RawClient(server) as spectator, \
            Client(server) as judge:
        a.hello(token=tokens[0])
        play: protocol.PlayState = a.expect("play_state")
        b.hello(token=tokens[1])
        b.expect("play_state")
        spectator.hello(token=screen)
        judge.hello(token=org.token)
        judge.request("watch", round_id=rid)

        a.answer("哪里不舒服？")
        a.request("order", item_id=play.menu[0].id)
        a.expect("order_result")

        # A submits a wrong diagnosis, then the right one: acknowledged, no score.
        first = a.request("submit", diagnosis=WRONG, differentials=["胃炎"])
        # Scoring waits for the niced matching process, which may still be loading the
        # library on a busy machine.
        ack: protocol.SubmitAck = a.expect("submit_ack", timeout=90)
        assert (ack.re, ack.submissions_left, ack.score) == (first, 1, None)
        assert "已提交" in ack.message
        wrong = _board(judge, lambda m: _rows(m)["选手1"].score is not None)
        wrong_score = _rows(wrong)["选手1"].score
        second = a.request("submit", diagnosis=RIGHT, differentials=["主动脉夹层"],
                           reasoning="胸骨后压榨痛")
        ack = a.expect("submit_ack")
        assert (ack.re, ack.submissions_left, ack.score) == (second, 0, None)
        b.request("submit", diagnosis=OTHER)
        b.expect("submit_ack")

        # The judge's live board has the scores; the last submission is the one that counts.
        live = _board(judge, lambda m: _rows(m)["选手1"].score != wrong_score
                      and _rows(m)["选手2"].score is not None)
        assert live.view == "live" and not live.board.progress_only
        last_score = _rows(live)["选手1"].score
        assert last_score is not None and wrong_score is not None
        assert last_score > wrong_score and _rows(live)["选手1"].rank == 1

        # The public board shows who submitted, and nothing more.
        for c in (a, b, spectator):
            public = _board(c, lambda m: _rows(m)["选手1"].submitted
                            and _rows(m)["选手2"].submitted)
            assert public.board.progress_only
            assert {r.name for r in public.board.rows} == {"选手1", "选手2"}
            c.drain()
        assert_no_score(a, terms, own=(RIGHT, "主动脉夹层", "胸骨后压榨痛", WRONG))
        assert_no_score(b, terms, own=(OTHER,))
        assert_no_score(spectator, terms)
        # Nobody else learns what A (or B) wrote, first or last.
        for c, others in ((b, (WRONG, RIGHT)), (spectator, (WRONG, RIGHT, OTHER))):
            assert not any(o in f for f in c.frames for o in others)

        # A contestant who reconnects (a refresh) is shown progress, still no score.
        again = RawClient(server)
        again.hello(token=tokens[0])
        back: protocol.PlayState = again.expect("play_state")
        assert back.submitted and back.diagnosis == RIGHT and back.score is None
        again.drain()
        assert_no_score(again, terms, own=(RIGHT, "主动脉夹层", "胸骨后压榨痛"))

        # Publication: each contestant gets their own card (the last submission's) with
        # the answer key and teaching points; the screen gets the reveal.
        org.action(rid, "end", reason="提前结束")
        org.action(rid, "publish")
        with again:
            results: protocol.Results = again.expect("results")
        assert results.card.total == pytest.approx(last_score) and results.rank == 1
        assert results.card.verdict == "correct"
        assert results.card.sections[0].lines[0].label.endswith(RIGHT)
        assert WRONG not in again.frames[-1]
        assert results.key is not None
        assert results.key.diagnosis == case.answer_key.diagnosis.name
        assert results.key.teaching_points == case.answer_key.teaching_points
        assert results.key.differentials == [d.name for d in case.answer_key.differentials]
        assert len(results.key.necessary_tests) == len(case.answer_key.necessary_tests)
        theirs: protocol.Results = b.expect("results")
        assert theirs.card.sections[0].lines[0].label.endswith(OTHER)
        assert theirs.rank == 2 and theirs.of == 2  # 选手3 never joined
        reveal: protocol.Reveal = spectator.expect("reveal")
        assert reveal.steps[0].frozen and len(reveal.steps) == 2  # one step per submission
        final = reveal.steps[-1]
        assert not final.frozen and not final.progress_only
        assert [(r.name, r.rank) for r in final.rows[:2]] == [("选手1", 1), ("选手2", 2)]
        assert _rows_of(final)["选手1"].score == pytest.approx(last_score)
        # The public board follows: scores and ranks for everyone now.
        shown = _board(spectator, lambda m: not m.board.progress_only)
        assert _rows(shown)["选手1"].score == pytest.approx(last_score)

    # After publication a contestant who comes back gets their card and the key again.
    with RawClient(server) as later:
        later.hello(token=tokens[0])
        again_results: protocol.Results = later.expect("results")
        assert again_results.key is not None and again_results.card.total == results.card.total
    # C never submitted: no card, and never someone else's.
    with RawClient(server) as c:
        c.hello(token=tokens[2])
        c.drain()
        assert not any(isinstance(m, protocol.Results) for m in c.received)


def _rows_of(board: Any) -> dict[str, Any]:
    return {r.name: r for r in board.rows}


def test_open_scoring_shows_scores_live(server: str, clock: FakeClock, case: Case) -> None:
    org = Api.login(server)
    _, rid, roster = make_round(org, people=2, case_id=CASE, open_scoring=True,
                                max_submissions=2)
    tokens = [org.join(p["join_code"])["token"] for p in roster]
    screen = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    with RawClient(server) as a, RawClient(server) as spectator:
        a.hello(token=tokens[0])
        a.expect("play_state")
        spectator.hello(token=screen)
        a.request("submit", diagnosis=WRONG)
        first: protocol.SubmitAck = a.expect("submit_ack")
        a.request("submit", diagnosis=RIGHT)
        ack: protocol.SubmitAck = a.expect("submit_ack")
        assert first.score is not None and ack.score is not None
        assert ack.score.verdict == "correct" and ack.score.total > first.score.total
        for c in (a, spectator):
            board = _board(c, lambda m: _rows(m)["选手1"].score is not None)
            assert not board.board.progress_only and _rows(board)["选手1"].rank == 1
            assert _rows(board)["选手1"].score == pytest.approx(ack.score.total)
        # The ack is a score, not the breakdown: no line naming an answer-key item.
        assert leaked_terms(a.frames, key_terms(case), own=(RIGHT,)) == []
    with RawClient(server) as back:
        back.hello(token=tokens[0])
        play: protocol.PlayState = back.expect("play_state")
        assert play.score is not None and play.score.total == pytest.approx(ack.score.total)
