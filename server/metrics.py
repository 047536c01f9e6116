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
