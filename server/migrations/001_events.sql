-- The append-only event log: the source of truth for everything that happened.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    round_id    text        NOT NULL,
    attempt_id  text,
    actor       text        NOT NULL,
    kind        text        NOT NULL,
    request_id  text,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A retried request (same client-chosen id) is applied once.
CREATE UNIQUE INDEX events_request_once
    ON events (attempt_id, kind, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX events_by_round ON events (round_id, id);
CREATE INDEX events_by_attempt ON events (attempt_id, id);

-- Append-only means append-only: history cannot be rewritten, even by mistake.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
