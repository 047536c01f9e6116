"""The judges' queue: a diagnosis the scoring rules cannot decide waits for a judge.

Real server, PostgreSQL and Valkey; only the clock is fake.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.settings import Settings
from tests.support import Api, ApiError, Client, FakeClock, make_round, running_server


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(settings, FakeClock()) as url:
        yield url


def test_an_undecidable_diagnosis_waits_in_the_judges_queue_until_ruled(server: str) -> None:
    org = Api.login(server)
    org.call("POST", "/api/accounts", {"username": "judge2", "password": "judge-password",
                                       "role": "judge", "display_name": "李评委"})
    judge_api = Api.login(server, "judge2", "judge-password")
    _, rid, roster = make_round(org, people=2)
    tokens = [org.join(p["join_code"])["token"] for p in roster]
    org.action(rid, "open")
    org.action(rid, "start")
    with Client(server) as a, Client(server) as b, Client(server) as judge:
        for c, token in ((a, tokens[0]), (b, tokens[1])):
            c.hello(token=token)
            c.expect("play_state")
        # Shares words with the key (下壁, 心肌) but is no known name: the rules cannot tell.
        a.request("submit", diagnosis="下壁心肌缺血事件", differentials=[])
        a.expect("submit_ack")
        b.request("submit", diagnosis="急性下壁ST段抬高型心肌梗死", differentials=[])
        b.expect("submit_ack")

        queue = judge_api.call("GET", f"/api/rounds/{rid}/review")
        assert [(q["name"], q["diagnosis"]) for q in queue] == [("选手1", "下壁心肌缺血事件")]
        assert queue[0]["reason"].startswith("待评委复核：")
        with pytest.raises(ApiError) as anonymous:
            Api(server).call("GET", f"/api/rounds/{rid}/review")
        assert anonymous.value.status == 401

        judge.hello(token=judge_api.token)
        ok = judge.request("adjudicate", attempt_id=queue[0]["attempt_id"], verdict="correct",
                           reason="下壁心肌缺血事件即下壁心梗")
        assert judge.expect("ack").re == ok
    assert judge_api.call("GET", f"/api/rounds/{rid}/review") == []

