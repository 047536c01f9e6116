"""The WebSocket wire protocol: msgspec tagged unions, decoded once at the edge.

Every client request carries a client-chosen `id`; the server echoes it as `re`
on the reply, and uses it to apply a retried request once. Every server message
carries the connection's sequence number `seq` and the server time `t`
(milliseconds since the Unix epoch), so clients order messages and correct their
clocks. The first client message must be `hello` with the protocol version.
docs/protocol.md documents each message; keep the two in step.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from arena.cases import Vitals
from arena.scoring import ScoreCard

PROTOCOL_VERSION = 1

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=4000)]


class ClientMessage(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    id: Id


class Hello(ClientMessage, tag="hello"):
    v: int
    name: Annotated[str, msgspec.Meta(max_length=40)] = ""


class StartPractice(ClientMessage, tag="start_practice"):
    case_id: Annotated[str, msgspec.Meta(max_length=48)]


class Ask(ClientMessage, tag="ask"):
    text: Text


class Order(ClientMessage, tag="order"):
    item_id: Annotated[str, msgspec.Meta(max_length=48)]


class Submit(ClientMessage, tag="submit"):
    diagnosis: Text
    differentials: Annotated[list[Text], msgspec.Meta(max_length=20)] = []
    reasoning: Text = ""


class Ping(ClientMessage, tag="ping"):
    client_time: float = 0.0


ClientMsg = Hello | StartPractice | Ask | Order | Submit | Ping
CLIENT_TYPES = frozenset(
    t.__struct_config__.tag for t in (Hello, StartPractice, Ask, Order, Submit, Ping)
)


class ServerMessage(msgspec.Struct, tag_field="type", kw_only=True):
    seq: int = 0  # stamped by the connection when sent
    t: float = 0.0  # server time, ms since the epoch, stamped when sent


class Welcome(ServerMessage, tag="welcome"):
    re: str
    v: int
    conn_id: str
    engine: str


class MenuItem(msgspec.Struct, kw_only=True):
    id: str
    name: str
    kind: Literal["exam", "test"]
    cost_yuan: float
    minutes: int


class PracticeStarted(ServerMessage, tag="practice_started"):
    re: str
    round_id: str
    attempt_id: str
    case_id: str
    title: str
    patient: str  # "张建国，男，58岁，出租车司机"
    chief_complaint: str
    statement: str
    appearance: str
    vitals: Vitals
    menu: list[MenuItem]
    deadline: float | None = None  # ms since the epoch; None = untimed practice


class AnswerStart(ServerMessage, tag="answer_start"):
    re: str
    turn: int


class AnswerDelta(ServerMessage, tag="answer_delta"):
    turn: int
    text: str


class AnswerEnd(ServerMessage, tag="answer_end"):
    turn: int
    status: Literal["ok", "failed"]
    tokens_in: int = 0
    tokens_out: int = 0
    ttft_ms: float | None = None
    code: str = ""
    message: str = ""
    message_en: str = ""


class OrderResult(ServerMessage, tag="order_result"):
    re: str
    item_id: str
    name: str
    kind: Literal["exam", "test"]
    result: str
    abnormal: bool
    cost_yuan: float


class Scored(ServerMessage, tag="scored"):
    re: str
    card: ScoreCard
    rank: int
    of: int


class Pong(ServerMessage, tag="pong"):
    re: str
    client_time: float


class Error(ServerMessage, tag="error"):
    re: str | None
    code: str
    message: str
    message_en: str


class Resync(ServerMessage, tag="resync"):
    reason: str
    message: str = "连接跟不上消息速度，请重新连接。"


ServerMsg = (
    Welcome | PracticeStarted | AnswerStart | AnswerDelta | AnswerEnd | OrderResult | Scored
    | Pong | Error | Resync
)


class _Envelope(msgspec.Struct):
    # Lenient first look at a frame, so an unknown type gets its own clear error.
    type: str = ""
    id: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_client = msgspec.json.Decoder(ClientMsg)
_server = msgspec.json.Decoder(ServerMsg)
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A frame that cannot be decoded; `code` and messages go back in an Error reply."""

    def __init__(self, code: str, message: str, message_en: str, re: str | None = None) -> None:
        super().__init__(message_en)
        self.code, self.message, self.message_en, self.re = code, message, message_en, re


def decode_client(frame: str | bytes, max_bytes: int) -> ClientMsg:
    """Decode one client frame, or raise FrameError naming the problem."""
    size = len(frame.encode() if isinstance(frame, str) else frame)
    if size > max_bytes:
        raise FrameError(
            "frame_too_large", f"消息过大（{size} 字节，上限 {max_bytes}）。",
            f"Frame too large ({size} bytes, limit {max_bytes}).",
        )
    try:
        env = _envelope.decode(frame)
    except msgspec.ValidationError:  # valid JSON, wrong shape: a subclass of DecodeError
        env = _Envelope()
    except msgspec.DecodeError as exc:
        raise FrameError("bad_json", "消息不是合法的 JSON。", f"Malformed JSON: {exc}") from exc
    re = env.id if isinstance(env.id, str) else None
    if env.type not in CLIENT_TYPES:
        raise FrameError(
            "unknown_type", f"未知的消息类型：{env.type or '（缺失）'}。",
            f"Unknown message type {env.type!r}.", re,
        )
    try:
        return _client.decode(frame)
    except msgspec.ValidationError as exc:
        raise FrameError(
            "bad_message", f"消息格式错误：{exc}", f"Invalid message: {exc}", re
        ) from exc


def encode(msg: ServerMsg | ClientMsg) -> bytes:
    return _encoder.encode(msg)


def decode_server(frame: str | bytes) -> ServerMsg:
    """For clients and tests: decode a server message strictly."""
    return _server.decode(frame)
