"""Settings, all from the environment, each documented here and nowhere else.

With nothing set, `arena up` runs embedded PostgreSQL and Valkey under
DATA_DIR, keeps objects in a local folder and plays the scripted patient.
Setting a URL switches that part to the external service; the code path is the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    # Where embedded services and the local object folder keep their data.
    data_dir: Path = Path("data")
    # Folder of case JSON files loaded at start.
    cases_dir: Path = Path("cases")
    host: str = "127.0.0.1"
    port: int = 8000
    # PostgreSQL URL; empty = embedded PostgreSQL under data_dir/pg.
    database_url: str = ""
    # Schema for all tables; lets several test runs share one database safely.
    database_schema: str = "public"
    # Redis/Valkey URL; empty = embedded Valkey under data_dir/valkey.
    redis_url: str = ""
    # Prefix for every Redis key and channel, for the same reason as database_schema.
    redis_prefix: str = "arena:"
    # S3/MinIO endpoint (host:port); empty = local folder data_dir/objects.
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "clinic-arena"
    s3_secure: bool = False
    # OpenAI-compatible base URL (vLLM, Ollama: http://host:port/v1); empty = scripted patient.
    llm_base_url: str = ""
    llm_model: str = "patient"
    llm_api_key: str = "not-needed"
    # Seconds to connect to the LLM endpoint / to wait for each streamed chunk.
    llm_connect_timeout: float = 5.0
    llm_read_timeout: float = 30.0
    # Most tokens a patient answer may have.
    llm_max_tokens: int = 300
    # Connections to the LLM endpoint kept open; size for the expected concurrent streams.
    llm_max_connections: int = 512
    # Pause between scripted-patient chunks (ms) so answers visibly stream; 0 in benchmarks.
    scripted_chunk_ms: float = 15.0
    # Largest WebSocket frame accepted from a client, in bytes. The largest valid submission
    # (4,000 characters of reasoning, 10 differentials, all CJK at 3 bytes each) fits.
    max_frame_bytes: int = 32_768
    # Messages queued per connection before a slow client is told to resync.
    send_queue_size: int = 256
    # Messages kept per history channel (round, attempt) for clients that reconnect with
    # `since`; a longer gap gets `reload` and the current state instead.
    channel_history: int = 500
    # Password of the first organizer account, `admin`, created when no organizer exists.
    # Empty = a random one, printed once and written to data_dir/admin-password.txt.
    admin_password: str = ""

    @property
    def engine(self) -> str:
        return "llm" if self.llm_base_url else "scripted"


def _env(name: str, default: object) -> object:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, Path):
        return Path(raw)
    return type(default)(raw)  # type: ignore[call-arg]


def from_env(**overrides: object) -> Settings:
    """Settings from the environment (upper-case field names), then `overrides`."""
    values = {
        f.name: _env(f.name.upper(), f.default) for f in msgspec.structs.fields(Settings)
    }
    values.update(overrides)
    return msgspec.convert(values, Settings)
