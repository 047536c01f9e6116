-- Tokens are standard JSON Web Tokens (HS256, server/tokens.py) whose `kid` header names
-- the key that signed them. The newest key that is not retired signs; every key not yet
-- retired verifies, so a new key can be added without signing anyone out, and retiring
-- an old one later ends the tokens it signed. Replaces secrets.token_key (the old
-- hand-written token format): sessions from before this migration must sign in again.
CREATE TABLE token_keys (
    kid         text PRIMARY KEY,
    secret      bytea NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at  timestamptz
);
DELETE FROM secrets WHERE name = 'token_key';

-- One row per signed-out token (its `jti`), kept until the token would have expired
-- anyway (`expires_at`, server time in seconds, the token's `exp`).
CREATE TABLE revoked_tokens (
    jti         text PRIMARY KEY,
    subject     text NOT NULL,
    expires_at  double precision NOT NULL
);

-- Revoking everything a subject ("contestant:<id>") holds, e.g. when the organizer
-- reissues a join code: tokens carry the generation current when they were issued, and
-- one older than the generation here is refused.
CREATE TABLE token_subjects (
    subject     text PRIMARY KEY,
    generation  integer NOT NULL
);
