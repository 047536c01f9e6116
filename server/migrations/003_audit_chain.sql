-- A tamper-evident event log: every event carries sha256(previous hash || its own
-- canonical text), so editing, deleting or reordering any event breaks the chain that
-- `arena audit verify` walks. The chain is serialised here, in PostgreSQL, because
-- several server processes append at once.

ALTER TABLE events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

-- The head of the chain (the last event's id and hash), so that deleting the newest
-- events is caught too. Only the trigger below writes it; the app role cannot read it.
CREATE TABLE events_chain (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id  bigint NOT NULL DEFAULT 0,
    hash     bytea  NOT NULL DEFAULT '\x'::bytea
);

-- The text an event's hash covers: every column but the hashes, as a jsonb array (its
-- text form is deterministic). created_at is in epoch microseconds, independent of the
-- session's TimeZone. Verification rebuilds the same text from the stored columns.
CREATE FUNCTION events_canonical(
    id bigint, round_id text, attempt_id text, actor text, kind text, request_id text,
    payload jsonb, created_at timestamptz
) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_array(
        id, round_id, attempt_id, actor, kind, request_id,
        (extract(epoch FROM created_at) * 1000000)::bigint, payload
    )::text
$$;

-- Runs for each row, holding a transaction-scoped advisory lock for this table until
-- commit, so appends from every connection are chained one after another. Under that
-- lock the row also gets its id (ids then ascend in chain order) and a repeated request
-- is skipped here, before it could touch the chain (ON CONFLICT would come too late:
-- BEFORE triggers run first). SECURITY DEFINER: the app role needs no rights on the
-- chain head or the sequence.
CREATE FUNCTION events_chain_link() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    prev bytea;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot older than the lock would not see the last event: refuse, not fork.
        RAISE EXCEPTION 'events must be appended at READ COMMITTED isolation';
    END IF;
    PERFORM pg_advisory_xact_lock((1095912014::bigint << 32) | TG_RELID::oid::bigint);
    IF NEW.request_id IS NOT NULL THEN
        IF NEW.attempt_id IS NULL THEN
            PERFORM 1 FROM events WHERE round_id = NEW.round_id AND attempt_id IS NULL
                AND kind = NEW.kind AND request_id = NEW.request_id;
        ELSE
            PERFORM 1 FROM events WHERE round_id = NEW.round_id
                AND attempt_id = NEW.attempt_id AND kind = NEW.kind
                AND request_id = NEW.request_id;
        END IF;
        IF FOUND THEN
            RETURN NULL;  -- applied once already: skipped, as ON CONFLICT DO NOTHING would
        END IF;
    END IF;
    NEW.id := nextval('events_id_seq');
    SELECT e.hash INTO prev FROM events e ORDER BY e.id DESC LIMIT 1;
    NEW.prev_hash := coalesce(prev, '\x'::bytea);
    NEW.hash := sha256(NEW.prev_hash || convert_to(events_canonical(
        NEW.id, NEW.round_id, NEW.attempt_id, NEW.actor, NEW.kind, NEW.request_id,
        NEW.payload, NEW.created_at), 'UTF8'));
    RETURN NEW;
END $$;

-- Once per statement, not per row: updating one row a thousand times in a transaction
-- would leave a thousand versions of it to walk.
CREATE FUNCTION events_chain_head() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE events_chain c SET last_id = e.id, hash = e.hash
        FROM (SELECT id, hash FROM events ORDER BY id DESC LIMIT 1) e
        WHERE c.one AND c.last_id <> e.id;
    RETURN NULL;
END $$;

-- The functions resolve their tables in the schema they were created in, whatever the
-- caller's search_path (the standard precaution for SECURITY DEFINER).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION events_chain_link() SET search_path = %I, pg_catalog',
                   current_schema());
    EXECUTE format('ALTER FUNCTION events_chain_head() SET search_path = %I, pg_catalog',
                   current_schema());
END $$;
REVOKE ALL ON FUNCTION events_chain_link() FROM PUBLIC;
REVOKE ALL ON FUNCTION events_chain_head() FROM PUBLIC;

-- Events written before this migration join the chain in id order.
ALTER TABLE events DISABLE TRIGGER events_append_only;
DO $$
DECLARE
    r record;
    prev bytea := '\x'::bytea;
BEGIN
    FOR r IN SELECT * FROM events ORDER BY id LOOP
        UPDATE events SET prev_hash = prev,
            hash = sha256(prev || convert_to(events_canonical(
                r.id, r.round_id, r.attempt_id, r.actor, r.kind, r.request_id, r.payload,
                r.created_at), 'UTF8'))
            WHERE id = r.id RETURNING hash INTO prev;
    END LOOP;
END $$;
ALTER TABLE events ENABLE TRIGGER events_append_only;
INSERT INTO events_chain (one, last_id, hash)
    SELECT true, coalesce(max(id), 0), coalesce(
        (SELECT hash FROM events ORDER BY id DESC LIMIT 1), '\x'::bytea) FROM events;

ALTER TABLE events ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL;
-- The id comes from the trigger, under the chain lock.
ALTER TABLE events ALTER COLUMN id DROP DEFAULT;

CREATE TRIGGER events_chain_link BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_chain_link();
CREATE TRIGGER events_chain_head AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_chain_head();

-- TRUNCATE fires no row trigger: refuse it too.
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
