-- Every saved version of a case, as the case editor (server/services/authoring.py) saved
-- it: the whole JSON document, the sha256 it is known by (the library's content hash once
-- it decodes), who saved it, when and why. Append-only like the event log: a version a
-- round may have been played on, or a diff a reviewer read, is never rewritten; an edit
-- is a new version. Publishing is an event in the log (`case_published`), not a column.
CREATE TABLE case_versions (
    case_id       text        NOT NULL,
    version       integer     NOT NULL CHECK (version >= 1),
    content       jsonb       NOT NULL,
    content_hash  text        NOT NULL,
    problems      integer     NOT NULL DEFAULT 0,  -- problems found when it was saved
    author        text        NOT NULL,
    note          text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (case_id, version)
);

CREATE FUNCTION case_versions_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case_versions is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER case_versions_append_only BEFORE UPDATE OR DELETE ON case_versions
    FOR EACH ROW EXECUTE FUNCTION case_versions_are_append_only();
