"""Prometheus metrics, defined once so every module records into the same series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge("arena_ws_connections", "Open WebSocket connections", registry=REGISTRY)
MESSAGES_IN = Counter(
    "arena_ws_messages_in_total", "Client messages by type", ["type"], registry=REGISTRY
)
MESSAGES_OUT = Counter(
    "arena_ws_messages_out_total", "Server messages sent", registry=REGISTRY
)
WS_ERRORS = Counter(
    "arena_ws_errors_total", "Error replies by code", ["code"], registry=REGISTRY
)
SLOW_CLIENTS = Counter(
    "arena_ws_slow_clients_total", "Connections told to resync: send queue full",
    registry=REGISTRY,
)
LLM_TTFT = Histogram(
    "arena_llm_ttft_seconds",
    "Time from request to first answer token, by engine",
    ["engine"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LLM_ERRORS = Counter(
    "arena_llm_errors_total", "Failed patient turns by engine and kind", ["engine", "kind"],
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "arena_llm_tokens_total", "Tokens by engine and direction", ["engine", "direction"],
    registry=REGISTRY,
)

# The relay (server/relay.py): what the contestant sees, the queue, the breaker, the guard.
ANSWER_TTFT = Histogram(
    "arena_answer_ttft_seconds",
    "From an accepted question to the first answer frame queued to the contestant, by engine",
    ["engine"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
ANSWER_GAP = Histogram(
    "arena_answer_gap_seconds",
    "Between consecutive answer frames queued to the contestant (inter-token as seen)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
LLM_QUEUE_WAIT = Histogram(
    "arena_llm_queue_wait_seconds",
    "Time an answer waited for a generation slot (0 when one was free)",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
LLM_QUEUED = Gauge(
    "arena_llm_queued", "Answers waiting for a generation slot", registry=REGISTRY
)
LLM_ACTIVE = Gauge(
    "arena_llm_active", "LLM generations in flight", registry=REGISTRY
)
LLM_BREAKER = Gauge(
    "arena_llm_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
    registry=REGISTRY,
)
LLM_FALLBACKS = Counter(
    "arena_llm_fallback_answers_total",
    "Answers played by the scripted patient because the LLM breaker was open",
    registry=REGISTRY,
)
# No label for the kind of term caught: /metrics answers anyone, and "diagnosis" against
# "differential" would tell a contestant which of the guesses they put to the model is the
# answer. The kind is in each answer's event (`guard`) for staff.
LLM_GUARD_HITS = Counter(
    "arena_llm_guard_hits_total", "Answers cut short by the output guard",
    registry=REGISTRY,
)
BACKGROUND_BACKLOG = Gauge(
    "arena_background_backlog",
    "Background jobs (question matching for scoring) submitted and not yet finished",
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "arena_rate_limited_total", "Requests refused by a rate limit, by limit",
    ["limit"], registry=REGISTRY,
)
REQUESTS_REFUSED = Counter(
    "arena_http_refused_total",
    "HTTP requests or WebSocket handshakes refused at the edge, by reason",
    ["reason"], registry=REGISTRY,
)
