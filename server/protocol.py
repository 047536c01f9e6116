"""The WebSocket wire protocol: msgspec tagged unions, decoded once at the edge.

Every client request carries a client-chosen `id`; the server echoes it as `re`
on the reply, and uses it to apply a retried request once. Every server message
carries the connection's sequence number `seq` and the server time `t`
(milliseconds since the Unix epoch), so clients order messages and correct their
clocks. The first client message must be `hello` with the protocol version.
docs/protocol.md documents each message; keep the two in step.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from arena.cases import Case, Vitals
from arena.leaderboard import Board
from arena.rounds import RoundClock
from arena.scoring import ScoreCard

PROTOCOL_VERSION = 1

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=4000)]


class ClientMessage(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    id: Id


class Hello(ClientMessage, tag="hello"):
    v: int
    name: Annotated[str, msgspec.Meta(max_length=40)] = ""
    # A bearer token from /api/login, /api/join or a spectator link; empty = a student
    # practising alone.
    token: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    # Last channel sequence number seen per channel, so a reconnecting client gets
    # what it missed (or a `reload` when the gap is older than the history kept).
    since: Annotated[dict[str, int], msgspec.Meta(max_length=8)] = {}
    # The epoch each `since` number counts in (channel -> the `epoch` of the messages it
    # came from). A channel whose epoch changed since (Redis lost it) gets `reload`, never
    # a replay; a number without an epoch is replayed by number alone (older clients).
    epoch: Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=32)]],
                     msgspec.Meta(max_length=8)] = {}
    # With a judge's or organizer's token: practise (any case, drafts and cases reserved
    # by a round included) instead of watching.
    practice: bool = False


class StartPractice(ClientMessage, tag="start_practice"):
    case_id: Annotated[str, msgspec.Meta(max_length=48)]


class Ask(ClientMessage, tag="ask"):
    text: Text


class Order(ClientMessage, tag="order"):
    """An exam or test by its menu id, or by typed words (`text`) where the round hides
    the menu; the server reads the words against names and aliases."""

    item_id: Annotated[str, msgspec.Meta(max_length=48)] = ""
    text: Annotated[str, msgspec.Meta(max_length=60)] = ""


class Submit(ClientMessage, tag="submit"):
    diagnosis: Text
    differentials: Annotated[list[Text], msgspec.Meta(max_length=20)] = []
    reasoning: Text = ""


class Ping(ClientMessage, tag="ping"):
    client_time: float = 0.0


class Watch(ClientMessage, tag="watch"):
    """Judge or organizer: follow a round's clock and the live board."""

    round_id: Annotated[str, msgspec.Meta(max_length=64)]
    since: int = 0  # last round-channel sequence number seen


class OpenTranscript(ClientMessage, tag="open_transcript"):
    """Judge or organizer: read one contestant's transcript, then follow it live."""

    attempt_id: Annotated[str, msgspec.Meta(max_length=64)]


class Adjudicate(ClientMessage, tag="adjudicate"):
    """Judge: rule on a free-text diagnosis the rules could not match."""

    attempt_id: Annotated[str, msgspec.Meta(max_length=64)]
    verdict: Literal["correct", "partial", "wrong"]
    reason: Annotated[str, msgspec.Meta(max_length=500)]


class Override(ClientMessage, tag="override"):
    """Judge: set the points of one score line (section key + line index), with a reason."""

    attempt_id: Annotated[str, msgspec.Meta(max_length=64)]
    section: Annotated[str, msgspec.Meta(max_length=32)]
    line: Annotated[int, msgspec.Meta(ge=0, le=200)]
    points: float
    reason: Annotated[str, msgspec.Meta(max_length=500)]


ClientMsg = (
    Hello | StartPractice | Ask | Order | Submit | Ping | Watch | OpenTranscript | Adjudicate
    | Override
)
CLIENT_MESSAGE_TYPES: tuple[type[ClientMessage], ...] = (
    Hello, StartPractice, Ask, Order, Submit, Ping, Watch, OpenTranscript, Adjudicate, Override,
)
CLIENT_TYPES = frozenset(t.__struct_config__.tag for t in CLIENT_MESSAGE_TYPES)


class ServerMessage(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    # seq and t are stamped per connection when sent; omitted defaults let a broadcast be
    # encoded once and have them spliced in front (see hub.Connection.send_body).
    seq: int = 0
    t: float = 0.0  # server time, ms since the epoch
    # Set on messages that travel on a channel with history: its name and sequence number,
    # and the epoch the number counts in (a new one after Redis lost the channel).
    ch: str = ""
    cseq: int = 0
    epoch: str = ""


Role = Literal["student", "contestant", "judge", "organizer", "spectator"]


class Welcome(ServerMessage, tag="welcome"):
    re: str
    v: int
    conn_id: str
    engine: str
    role: Role = "student"
    name: str = ""
    round_id: str = ""  # the round a contestant or spectator is bound to


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


class AnswerQueued(ServerMessage, tag="answer_queued"):
    """Every LLM slot is busy: the answer waits its turn. `position` is the place in the
    queue (1 = next), sent on joining and when it changes; 0 = the patient starts now."""

    turn: int
    position: int


class EngineNotice(ServerMessage, tag="engine_notice"):
    """Who plays the patient changed for this contestant: `scripted` while the model
    service is down (where the round allows it), `llm` again once it is back."""

    engine: str
    message: str
    message_en: str


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
    key: AnswerKeyView | None = None  # practice: the answer key, after the own submission


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


class RoundState(ServerMessage, tag="round_state"):
    """The round's status and clock; sent on every change and on (re)connect."""

    round_id: str
    title: str
    clock: RoundClock
    competition_title: str = ""
    board_visible: bool = True
    time_counts: bool = False
    freeze_s: int = 0
    change: str = ""  # the round event that caused this message, e.g. "round_paused"
    reason: str = ""  # the organizer's reason, shown to everyone ("网络故障，暂停 5 分钟")


class BoardUpdate(ServerMessage, tag="board"):
    """The whole board, never a diff: a late message with a lower version is ignored."""

    round_id: str
    version: int
    view: Literal["live", "public"]
    board: Board
    joined: int  # contestants connected or played so far
    at: float  # server time (ms) the board was computed, for fan-out latency


class TranscriptTurn(msgspec.Struct, kw_only=True):
    turn: int
    question: str
    answer: str
    status: Literal["ok", "failed", "pending"]


class OrderedItem(msgspec.Struct, kw_only=True):
    item_id: str
    name: str
    kind: Literal["exam", "test"]
    result: str
    abnormal: bool
    cost_yuan: float


class PlayState(ServerMessage, tag="play_state"):
    """A contestant's whole attempt, sent when play begins and on every rejoin."""

    round_id: str
    attempt_id: str
    case_id: str
    title: str
    patient: str
    chief_complaint: str
    statement: str
    appearance: str
    vitals: Vitals
    menu: list[MenuItem]  # empty where the round has contestants type their orders
    transcript: list[TranscriptTurn]
    orders: list[OrderedItem]
    submitted: bool
    submissions_left: int
    diagnosis: str = ""
    differentials: list[str] = []
    reasoning: str = ""
    score: ScoreSummary | None = None  # open scoring only: the latest submission's score
    typed_orders: bool = False  # no menu: orders are typed (Order.text)


class ScoreSummary(msgspec.Struct, kw_only=True):
    """A round score without its lines (which name answer-key items): only sent to a
    contestant before publication where the round's rules choose open scoring."""

    total: float
    max_total: float
    verdict: str


class SubmitAck(ServerMessage, tag="submit_ack"):
    """A round submission is durable; the score is shown when results are published
    (with open scoring, `score` is the latest submission's, at once)."""

    re: str
    submissions_left: int
    message: str = "已提交，等待公布成绩。"
    score: ScoreSummary | None = None


class AnswerKeyView(msgspec.Struct, kw_only=True):
    """A case's answer key as a contestant reads it on their own card, after publication."""

    diagnosis: str
    diagnosis_en: str = ""
    icd10: str = ""
    differentials: list[str] = []
    checklist: list[str] = []
    red_flags: list[str] = []
    necessary_tests: list[str] = []  # names, as on the order menu
    teaching_points: list[str] = []


def _item_name(case: Case, item_id: str) -> str:
    item = case.orderable(item_id)
    return item.name if item is not None else item_id


def answer_key_view(case: Case) -> AnswerKeyView:
    """The answer key of `case` for a contestant's own card (never sent before publication)."""
    key = case.answer_key
    return AnswerKeyView(
        diagnosis=key.diagnosis.name, diagnosis_en=key.diagnosis.name_en,
        icd10=key.diagnosis.icd10, differentials=[d.name for d in key.differentials],
        checklist=[i.text for i in key.checklist], red_flags=[i.text for i in key.red_flags],
        necessary_tests=[_item_name(case, t) for t in key.necessary_tests],
        teaching_points=list(key.teaching_points),
    )


class Results(ServerMessage, tag="results"):
    """After publication: the contestant's breakdown (the latest submission's card), the
    answer key with teaching points, and the final rank."""

    round_id: str
    card: ScoreCard
    rank: int | None
    of: int
    key: AnswerKeyView | None = None


class TranscriptEntry(msgspec.Struct, kw_only=True):
    at: float  # server time, ms
    kind: str  # asked, answered, ordered, submitted, scored, adjudicated, overridden, ...
    actor: str
    payload: dict[str, object]


class Transcript(ServerMessage, tag="transcript"):
    """For judges: one attempt's events so far, then each new one as `transcript_entry`."""

    attempt_id: str
    name: str
    entries: list[TranscriptEntry]
    card: ScoreCard | None = None


class TranscriptLive(ServerMessage, tag="transcript_entry"):
    attempt_id: str
    entry: TranscriptEntry
    card: ScoreCard | None = None  # the current card when the entry changed it


class Reveal(ServerMessage, tag="reveal"):
    """At publication: the frozen board unfrozen step by step (spectator screens animate)."""

    round_id: str
    steps: list[Board]


class Reload(ServerMessage, tag="reload"):
    """The gap since the client's last sequence number is older than the history kept."""

    channel: str
    reason: str = "history trimmed"
    message: str = "错过的消息过多，已重新加载最新状态。"


class Ack(ServerMessage, tag="ack"):
    """A judge's or organizer's request was made durable."""

    re: str


ServerMsg = (
    Welcome | PracticeStarted | AnswerStart | AnswerQueued | AnswerDelta | AnswerEnd
    | EngineNotice | OrderResult | Scored
    | Pong | Error | Resync | RoundState | BoardUpdate | PlayState | SubmitAck | Results
    | Transcript | TranscriptLive | Reveal | Reload | Ack
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


MAX_DEPTH = 32  # the deepest valid message nests 3 (hello.since); settings.max_json_depth

# A JSON string (skipped whole, so brackets inside text do not count) or a bracket.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# Control characters a person never types into a name, question or diagnosis: C0 but tab
# and newline, DEL and C1. PostgreSQL refuses NUL in text outright.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def too_deep(data: bytes, limit: int) -> bool:
    """Whether JSON `data` nests arrays/objects deeper than `limit` (without decoding it).

    msgspec has no depth option and recurses once per level; this bounds it first.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case: too few brackets to be that deep, at C speed
    depth = 0
    for m in _JSON_TOKEN.finditer(data):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def control_field(value: object, path: str = "") -> str | None:
    """The path ("text", "differentials[2]") of the first string in a decoded message or
    body holding a control character other than tab and newline; None if there is none."""
    if isinstance(value, str):
        return path if _CONTROL.search(value) else None
    if isinstance(value, msgspec.Struct):
        items: list[tuple[str, object]] = [
            (f"{path}.{f}" if path else f, getattr(value, f)) for f in value.__struct_fields__
        ]
    elif isinstance(value, dict):
        items = [(f"{path}.{k}" if path else str(k), k) for k in value]
        items += [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    return next((found for p, v in items if (found := control_field(v, p)) is not None), None)


# What a person calls the fields they type into, for the Chinese message; the path stays
# in brackets for whoever reads the logs.
_FIELD_ZH = {
    "name": "名字", "display_name": "显示名", "text": "问题", "diagnosis": "主要诊断",
    "differentials": "鉴别诊断", "reasoning": "诊断依据", "code": "参赛码",
    "username": "用户名", "password": "密码", "title": "名称", "reason": "原因",
}


def control_message(field: str) -> tuple[str, str]:
    """The Chinese and English message for a control character in `field`."""
    label = _FIELD_ZH.get(field.rsplit(".", 1)[-1].split("[", 1)[0])
    where = f"“{label}”（{field}）" if label else f"字段 {field} "
    return (f"{where}含有不可见的控制字符（如 NUL），请删除后重试。",
            f"Field {field!r} contains a control character (such as NUL); remove it.")


_TYPES = {
    "str": "文字", "int": "整数", "float": "数字", "bool": "是/否", "array": "列表",
    "object": "对象", "null": "空值",
}
_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Expected `(?:str|array|object)` of length <= (?P<n>\d+)$"),
     "{field}过长（最多 {n}）"),
    (re.compile(r"^Expected `(?:str|array|object)` of length >= (?P<n>\d+)$"),
     "{field}过短（至少 {n}）"),
    (re.compile(r"^Expected `(?:int|float)` (?:<=|<) (?P<n>[-\d.]+)$"),
     "{field}太大（不超过 {n}）"),
    (re.compile(r"^Expected `(?:int|float)` (?:>=|>) (?P<n>[-\d.]+)$"),
     "{field}太小（不小于 {n}）"),
    (re.compile(r"^Object missing required field `(?P<name>[^`]+)`$"), "缺少必填字段 {name}"),
    (re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$"), "包含未知字段 {name}"),
    (re.compile(r"^Invalid enum value (?P<v>.+)$"), "{field}的取值 {v} 无效"),
    (re.compile(r"^Expected `(?P<want>[a-z]+)[^`]*`, got `(?P<got>[a-z]+)`$"),
     "{field}应为{want}，收到的是{got}"),
)


def explain(exc: msgspec.ValidationError) -> str:
    """A Chinese reading of msgspec's English validation message, naming the field.

    msgspec words its errors in a few fixed shapes ("Expected `str` of length <= 4000 -
    at `$.reasoning`"); a person filling a form should not have to read them in English.
    Unknown shapes fall back to naming the field only.
    """
    text = str(exc)
    m = _PATH.search(text)
    path = m.group("path") if m else ""
    body = text[: m.start()] if m else text
    label = _FIELD_ZH.get(path.rsplit(".", 1)[-1].split("[", 1)[0]) if path else None
    field = f"“{label}”（{path}）" if label else (f"字段 {path} " if path else "")
    for pattern, template in _RULES:
        hit = pattern.match(body)
        if hit:
            parts = hit.groupdict()
            for k in ("want", "got"):
                if k in parts:
                    parts[k] = _TYPES.get(parts[k], parts[k])
            msg = template.format(field=field, **parts)
            if path and "{field}" not in template:
                msg += f"（位置：{path}）"
            return msg
    return f"{field}格式不正确" if path else "格式不正确"


def decode_client(frame: str | bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> ClientMsg:
    """Decode one client frame, or raise FrameError naming the problem.

    Refused, each with its own code: a frame over `max_bytes` (frame_too_large), nested
    deeper than `max_depth` (too_deep), not JSON (bad_json), of an unknown type
    (unknown_type), of the wrong shape (bad_message), or with a control character in a
    string (bad_request, naming the field).
    """
    data = frame.encode() if isinstance(frame, str) else frame
    size = len(data)
    if size > max_bytes:
        raise FrameError(
            "frame_too_large", f"消息过大（{size} 字节，上限 {max_bytes}）。",
            f"Frame too large ({size} bytes, limit {max_bytes}).",
        )
    if too_deep(data, max_depth):
        raise FrameError(
            "too_deep", f"消息嵌套层数过多（上限 {max_depth} 层）。",
            f"Frame nested too deeply (limit {max_depth} levels).",
        )
    try:
        env = _envelope.decode(data)
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
        msg = _client.decode(data)
    except msgspec.ValidationError as exc:
        raise FrameError(
            "bad_message", f"消息格式错误：{explain(exc)}。", f"Invalid message: {exc}", re
        ) from exc
    field = control_field(msg)
    if field is not None:
        raise FrameError("bad_request", *control_message(field), re)
    return msg


def encode(msg: ServerMsg | ClientMsg) -> bytes:
    return _encoder.encode(msg)


def decode_server(frame: str | bytes) -> ServerMsg:
    """For clients and tests: decode a server message strictly."""
    return _server.decode(frame)
