-- The chain's triggers run as the owner (SECURITY DEFINER). Migration 003 set their
-- search_path to the schema, then pg_catalog; a search path that does not name pg_temp
-- searches it first for tables, so the app role could create temporary tables called
-- `events` and `events_chain` and have the owner's triggers read and write those instead:
-- choosing an event's previous hash and leaving the real chain head behind. pg_catalog
-- first (no shadowing of sha256, nextval ...), then the schema, then pg_temp, last.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION events_chain_link() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION events_chain_head() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END $$;
