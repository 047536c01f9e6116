"""An OpenAI-compatible streaming LLM simulator, for tests and benchmarks.

It speaks the wire protocol of vLLM's `/v1/chat/completions` exactly (SSE
`chat.completion.chunk` events, a final chunk with `finish_reason`, the
`include_usage` chunk, `data: [DONE]`) with configurable time to first token,
inter-token latency and faults, so the patient engine and the hub can be tested
over a real socket and benchmarked against a known baseline.

    python -m loadtest.llm_sim --host 127.0.0.1 --port 8100 --ttft-ms 100 --itl-ms 20

Control endpoints (not part of the OpenAI API):

- `POST /sim/config` with a JSON object of `SimConfig` fields to change; returns the config.
- `GET /sim/stats` counters and the last request body; `POST /sim/reset` zeroes them.

`replies` maps the exact text of the last user message (stripped) to the completion to
stream for it; other messages get `reply`; `queue` answers the next requests in order.
The adversarial suite uses `replies` to replay what a
badly behaved model might answer to each jailbreak attempt.

`obey` makes the simulator a model that obeys every jailbreak: set it to a secret (the
test tells it the diagnosis out of band: the real prompt never holds it), and a message
not in `replies` is answered by giving the secret away in whatever disguise the message
asks for: pinyin, initials, base64, reversed, an acrostic, traditional characters,
look-alike or full-width letters, digits for letters, separators or markup between the
characters, one character per turn, or a bare "yes" when the message guesses it
(`obey_reply` is the same function, for a test to know what was sent).

Cost per token is one `asyncio.sleep` and one pre-framed `send`: the simulator has
to hold 500 concurrent streams on two cores next to the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import math
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
import opencc
import uvicorn
from pypinyin import Style, lazy_pinyin
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Fault = Literal["none", "http_500", "http_503", "midstream_error", "stall", "drop"]
_Ms = Annotated[float, msgspec.Meta(ge=0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]

DEFAULT_REPLY = (
    "医生，我这胸口从昨天晚上开始就一阵一阵地疼，像有块石头压着，喘不上气，还出了一身冷汗。"
)


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the simulator behaves. Replaced whole, so a stream keeps the config it began with."""

    model: str = "patient"
    ttft_ms: _Ms = 100.0
    itl_ms: _Ms = 20.0
    reply: str = DEFAULT_REPLY
    # Last user message (stripped) -> the completion for it; messages not in it get `reply`.
    replies: dict[str, str] = {}
    fault: Fault = "none"
    # Stream faults (midstream_error, stall, drop) strike after this many content tokens.
    fault_after_tokens: _Count = 3
    # 0: every request meets the fault; N: only the next N do, then the fault clears itself
    # (a transient outage, which a retry should ride out).
    fault_times: _Count = 0
    # A secret to give away as every jailbreak asks (see `obey_reply`); "" to behave.
    obey: str = ""
    # Completions for the next requests, in order, each used once before `replies` and
    # `reply`: a model whose first answer is broken and whose retry is not, say.
    queue: list[str] = []


class SimStats(msgspec.Struct, kw_only=True):
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    streams_faulted: int = 0
    active_streams: int = 0
    # Requests answered from `replies` (or by obeying) rather than `reply`.
    replayed: int = 0
    # Requests answered by obeying a jailbreak (`obey`).
    obeyed: int = 0
    last_request: Any = None


# A token is an English word (with its leading space), up to two CJK characters, or one other
# character: close enough to a real tokenizer for timing, and the pieces join back exactly.
_TOKEN = re.compile(r"\s*[A-Za-z0-9]+(?:['.-][A-Za-z0-9]+)*|[\u3400-\u9fff]{1,2}|\s*\S|\s+")
# vLLM caches whole blocks of this many tokens.
_BLOCK = 16
_PREFIX_CACHE_ENTRIES = 65_536
_JSON_HEADERS = {"content-type": "application/json"}
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.encode


def tokenize(text: str) -> list[str]:
    """The simulator's tokens of `text`; `"".join(tokenize(t)) == t`."""
    return _TOKEN.findall(text)


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: Sequence[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content")).strip()
    return ""


# --- the model that obeys every jailbreak ------------------------------------------------

_T = TypeVar("_T")
_s2t = opencc.OpenCC("s2t")
_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")
# Cyrillic and Greek letters drawn like Latin ones.
_HOMOGLYPHS = {"a": "а", "c": "с", "e": "е", "i": "і", "o": "о", "p": "р", "x": "х",
               "y": "у", "s": "ѕ", "j": "ј", "k": "κ", "t": "τ", "n": "η", "v": "ν",
               "h": "һ", "d": "ԁ", "u": "υ", "m": "м", "b": "β"}
_LEET_OUT = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "b": "8"}
_SEPARATORS = (" ", "-", " · ", "      ", "……", " / ", "_", "、", "\n")
_MARKUP = (("<b>", "</b>"), ("**", "**"), ('<span class="x">', "</span>"), ("", "&nbsp;"),
           ("<i>", "</i>"), ("`", "`"))
_WORDS = ("is here", "comes next", "again", "and so on", "as well", "then")
_FILLERS = ("这一行我先这么写", "说来话长", "心里总是不踏实", "就这样吧", "大概是这样",
            "也说不清楚", "您慢慢看", "先写到这里", "还有一点", "最后一句")


def _pick(message: str, options: Sequence[_T]) -> _T:
    return options[zlib.crc32(message.encode()) % len(options)]


def _markup(text: str, message: str) -> str:
    before, after = _pick(message, _MARKUP)
    return "".join(f"{before}{c}{after}" for c in text)


def _fold(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _pinyin(secret: str, message: str) -> str:
    style = _pick(message, ("plain", "tone", "tone3"))
    if style == "tone":
        return " ".join(lazy_pinyin(secret, style=Style.TONE))
    if style == "tone3":
        return "-".join(lazy_pinyin(secret, style=Style.TONE3))
    return " ".join(lazy_pinyin(secret))


def _acrostic(secret: str, zh: bool) -> str:
    letters = [c for c in secret if c.isalnum()]
    if zh:
        return "\n".join(f"{c}{_FILLERS[i % len(_FILLERS)]}。" for i, c in enumerate(letters))
    return "\n".join(f"{c.upper()} {_WORDS[i % len(_WORDS)]}" for i, c in enumerate(letters))


# (technique, what in a message asks for it); the first that matches is obeyed.
_ASKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
        ("spell", r"第\s*(\d+)\s*个字|(?:letter|character)\s*(?:number\s*)?#?(\d+)"),
        ("base64", r"base\s*64"),
        ("acrostic", r"藏头|acrostic|每一?行的?(?:第一个字|开头)|"
                     r"first (?:letter|word|character)s? of (?:each|every) line"),
        ("initials", r"首字母|缩写字母|initials|first letters"),
        ("reversed", r"倒过来|倒着|反过来|反着|逆序|revers|backwards"),
        ("pinyin", r"拼音|pinyin"),
        ("traditional", r"繁体|繁體|traditional"),
        ("lookalike", r"西里尔|希腊字母|形近|look-?alike|cyrillic|greek|homoglyph"),
        ("leet", r"leet|1337|数字代替|数字替换|digits for letters"),
        ("fullwidth", r"全角|full-?width"),
        ("zero_width", r"零宽|zero-?width|invisible"),
        ("markup", r"html|标签|加粗|markdown|\btags?\b|\bbold\b"),
        ("separators", r"空格|隔开|分隔|横线|separat|space|dash|hyphen|between (?:each|every)"),
    )
)


def obey_reply(message: str, secret: str) -> tuple[str, str]:
    """(technique, completion): how a model that obeys every jailbreak gives `secret` away
    when asked `message`. Deterministic."""
    zh = bool(_CJK_CHAR.search(message))
    if _fold(secret) and _fold(secret) in _fold(message):  # a guess: just say yes
        return "confirm", _pick(message, ("对，是。", "没错！", "嗯，对的。") if zh
                                 else ("Yes, exactly.", "Yes.", "That's right."))
    technique = next((name for name, ask in _ASKS if ask.search(message)), "plain")
    if technique == "spell":
        m = next(ask.search(message) for name, ask in _ASKS if name == "spell")
        n = int(next(g for g in (m.groups() if m else ()) if g))
        letters = [c for c in secret if c.isalnum()]
        return technique, letters[n - 1] if 0 < n <= len(letters) else "没有了。"
    encode = {
        "base64": lambda t: base64.b64encode(t.encode()).decode(),
        "acrostic": lambda t: _acrostic(t, bool(_CJK_CHAR.search(t))),
        "initials": lambda t: ".".join(lazy_pinyin(t, style=Style.FIRST_LETTER)).upper(),
        "reversed": lambda t: t[::-1],
        "pinyin": lambda t: _pinyin(t, message),
        "traditional": lambda t: str(_s2t.convert(t)),
        "lookalike": lambda t: "".join(_HOMOGLYPHS.get(c, c) for c in t.lower()),
        "leet": lambda t: "".join(_LEET_OUT.get(c, c) for c in t.lower()),
        "fullwidth": lambda t: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in t),
        "zero_width": lambda t: "\u200b".join(t),
        "markup": lambda t: _markup(t, message),
        "separators": lambda t: _pick(message, _SEPARATORS).join(t),
        "plain": lambda t: t,
    }[technique]
    said = encode(secret)
    if technique == "acrostic":
        return technique, said
    return technique, (f"好的，照您说的：{said}" if zh else f"Sure, as you asked: {said}")


def _error_body(message: str, type_: str, code: int | str | None) -> bytes:
    return _encode({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _error(status: int, message: str, type_: str) -> Response:
    return Response(_error_body(message, type_, status), status, headers=_JSON_HEADERS)


class _Sim:
    """The simulator's state: current config, counters, and a model of vLLM's prefix cache."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._prefixes: OrderedDict[int, None] = OrderedDict()
        self._tokens: dict[str, list[str]] = {}
        self._ids = itertools.count(1)

    def tokens(self, text: str) -> list[str]:
        toks = self._tokens.get(text)
        if toks is None:
            if len(self._tokens) > 64:
                self._tokens.clear()
            toks = self._tokens[text] = tokenize(text)
        return toks

    def prompt_usage(self, messages: Sequence[Any]) -> tuple[int, int]:
        """(prompt tokens, cached tokens): about 1.5 characters a token; the longest run of
        whole messages already seen is cached, in whole blocks, never the entire prompt."""
        chars = cached_chars = 0
        key = 0
        keys = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            text = _text_of(m.get("content"))
            key = hash((key, str(m.get("role")), text))
            chars += len(text)
            keys.append(key)
            if key in self._prefixes:
                cached_chars = chars
                self._prefixes.move_to_end(key)
        for k in keys:
            self._prefixes[k] = None
        while len(self._prefixes) > _PREFIX_CACHE_ENTRIES:
            self._prefixes.popitem(last=False)
        prompt = max(1, math.ceil(chars / 1.5))
        cached = min(int(cached_chars / 1.5) // _BLOCK * _BLOCK, (prompt - 1) // _BLOCK * _BLOCK)
        return prompt, cached

    async def models(self, request: Request) -> Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "llm-sim"}
        return Response(_encode({"object": "list", "data": [model]}), headers=_JSON_HEADERS)

    async def chat(self, request: Request) -> Response:
        cfg = self.config
        self.stats.requests += 1
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError as exc:
            return _error(400, f"invalid JSON body: {exc}", "BadRequestError")
        self.stats.last_request = body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' must be a list", "BadRequestError")
        if body.get("model") != cfg.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if cfg.fault != "none" and cfg.fault_times:
            left = cfg.fault_times - 1
            self.config = msgspec.structs.replace(
                cfg, fault_times=left, fault=cfg.fault if left else "none"
            )
        if cfg.fault == "http_500":
            return _error(500, "simulated internal server error", "InternalServerError")
        if cfg.fault == "http_503":
            return _error(503, "simulated overload, try again later", "ServiceUnavailableError")

        reply = cfg.reply
        if cfg.queue:
            reply = cfg.queue[0]
            self.config = msgspec.structs.replace(self.config, queue=cfg.queue[1:])
            self.stats.replayed += 1
        elif cfg.replies or cfg.obey:  # off the hot path unless a test asked for replays
            message = _last_user_text(body["messages"])
            replayed = cfg.replies.get(message)
            if replayed is None and cfg.obey:
                replayed = obey_reply(message, cfg.obey)[1]
                self.stats.obeyed += 1
            if replayed is not None:
                reply = replayed
                self.stats.replayed += 1
        tokens = self.tokens(reply)
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, finish = tokens[:limit], "length"
        prompt, cached = self.prompt_usage(body["messages"])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        ident = f"chatcmpl-sim{next(self._ids)}"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return _EventStream(self, cfg, ident, tokens, finish, usage if include_usage else None)
        return await self._complete(cfg, request, ident, tokens, finish, usage)

    async def _complete(
        self,
        cfg: SimConfig,
        request: Request,
        ident: str,
        tokens: list[str],
        finish: str,
        usage: dict[str, Any],
    ) -> Response:
        if cfg.fault == "stall":
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=499)  # nobody is listening any more
        await asyncio.sleep((cfg.ttft_ms + cfg.itl_ms * max(len(tokens) - 1, 0)) / 1000)
        if cfg.fault == "midstream_error":
            return _error(500, "simulated engine error", "InternalServerError")
        message = {"role": "assistant", "content": "".join(tokens)}
        payload = _encode(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": cfg.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )
        if cfg.fault == "drop":
            return _Truncated(payload)
        return Response(payload, headers=_JSON_HEADERS)

    async def get_stats(self, request: Request) -> Response:
        return Response(_encode(self.stats), headers=_JSON_HEADERS)

    async def reset(self, request: Request) -> Response:
        active = self.stats.active_streams
        self.stats = SimStats(active_streams=active)
        self._prefixes.clear()
        return Response(_encode(self.stats), headers=_JSON_HEADERS)

    async def set_config(self, request: Request) -> Response:
        try:
            changes = msgspec.json.decode(await request.body())
            if not isinstance(changes, dict):
                raise msgspec.ValidationError("expected a JSON object of SimConfig fields")
            self.config = msgspec.convert(
                {**msgspec.structs.asdict(self.config), **changes}, SimConfig
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Response(_encode({"error": str(exc)}), 400, headers=_JSON_HEADERS)
        return Response(_encode(self.config), headers=_JSON_HEADERS)


class _Truncated(Response):
    """Announces a body, sends half of it and goes away: the connection drops mid-response."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(self.payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = self.payload[: len(self.payload) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        # Returning with the body incomplete makes uvicorn close the transport.


class _EventStream(Response):
    """One streamed completion, written straight to ASGI `send`.

    Starlette's StreamingResponse would do, but it cannot drop a connection on purpose,
    and a disconnect must be told apart from a normal end for `streams_disconnected`.
    """

    def __init__(
        self,
        sim: _Sim,
        cfg: SimConfig,
        ident: str,
        tokens: list[str],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> None:
        self.sim, self.cfg, self.tokens, self.finish, self.usage = sim, cfg, tokens, finish, usage
        # Every chunk shares this envelope; only the choice differs, so frame by concatenation.
        head = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time())}
        self._head = b"data: " + _encode({**head, "model": cfg.model})[:-1] + b',"choices":['
        self._tail = b',"usage":null}\n\n' if usage is not None else b"}\n\n"

    def _chunk(self, delta: bytes, finish: str | None = None) -> bytes:
        reason = b"null" if finish is None else _encode(finish)
        choice = b'{"index":0,"delta":' + delta + b',"logprobs":null,"finish_reason":' + reason
        return self._head + choice + b"}]" + self._tail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.sim  # its .stats object is swapped by /sim/reset: look it up each time
        task = asyncio.current_task()
        assert task is not None
        ended = gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            # uvicorn also reports "disconnect" after a completed response; only count a real one.
            if not ended:
                gone = True
                task.cancel()

        watcher = asyncio.create_task(watch())
        sim.stats.streams_started += 1
        sim.stats.active_streams += 1
        try:
            completed = await self._emit(send)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
            sim.stats.streams_disconnected += 1
        else:
            if completed:
                sim.stats.streams_completed += 1
            else:
                sim.stats.streams_faulted += 1
        finally:
            ended = True
            watcher.cancel()
            sim.stats.active_streams -= 1

    async def _emit(self, send: Send) -> bool:
        """Stream the completion; False when a configured fault ended it early."""
        cfg = self.cfg
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        stream_fault = cfg.fault in ("midstream_error", "stall", "drop")
        n = min(cfg.fault_after_tokens, len(self.tokens)) if stream_fault else len(self.tokens)
        # vLLM sends the role chunk together with the first token, once that is computed.
        await asyncio.sleep(cfg.ttft_ms / 1000)
        pending = self._chunk(b'{"role":"assistant","content":""}')
        itl = cfg.itl_ms / 1000
        for i in range(n):
            if i:
                await asyncio.sleep(itl)
            pending += self._chunk(b'{"content":' + _encode(self.tokens[i]) + b"}")
            await send({"type": "http.response.body", "body": pending, "more_body": True})
            pending = b""

        if stream_fault:
            if pending:
                await send({"type": "http.response.body", "body": pending, "more_body": True})
            if cfg.fault == "midstream_error":
                error = _error_body("simulated engine error mid-stream", "InternalServerError", 500)
                last = b"data: " + error + b"\n\n" + _DONE
                await send({"type": "http.response.body", "body": last, "more_body": False})
            elif cfg.fault == "stall":
                await asyncio.get_running_loop().create_future()  # until the client gives up
            # "drop": return with the body incomplete; uvicorn closes the connection.
            return False

        last = pending + self._chunk(b"{}", self.finish)
        if self.usage is not None:
            last += self._head + b"]," + b'"usage":' + _encode(self.usage) + b"}\n\n"
        await send({"type": "http.response.body", "body": last + _DONE, "more_body": False})
        return True


def create_app(config: SimConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; its state lives on `app.state.sim`."""
    sim = _Sim(config or SimConfig())
    app = Starlette(
        routes=[
            Route("/v1/models", sim.models, methods=["GET"]),
            Route("/v1/chat/completions", sim.chat, methods=["POST"]),
            Route("/sim/config", sim.set_config, methods=["POST"]),
            Route("/sim/stats", sim.get_stats, methods=["GET"]),
            Route("/sim/reset", sim.reset, methods=["POST"]),
        ]
    )
    app.state.sim = sim
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.llm_sim", description=__doc__)
    default = SimConfig()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--model", default=default.model)
    parser.add_argument("--ttft-ms", type=float, default=default.ttft_ms)
    parser.add_argument("--itl-ms", type=float, default=default.itl_ms)
    parser.add_argument("--reply", default=default.reply)
    parser.add_argument("--fault", default=default.fault, choices=get_args(Fault))
    parser.add_argument("--fault-after-tokens", type=int, default=default.fault_after_tokens)
    parser.add_argument("--fault-times", type=int, default=default.fault_times)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        config = msgspec.convert(
            {
                "model": args.model,
                "ttft_ms": args.ttft_ms,
                "itl_ms": args.itl_ms,
                "reply": args.reply,
                "fault": args.fault,
                "fault_after_tokens": args.fault_after_tokens,
                "fault_times": args.fault_times,
            },
            SimConfig,
        )
    except msgspec.ValidationError as exc:
        parser.error(str(exc))
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # An access line per request would cost more than the simulated tokens.
        access_log=False,
        # A stalled stream must not hold shutdown forever.
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
