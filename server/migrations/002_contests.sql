-- Competitions (赛事), their rounds, rosters and accounts.
-- Round *state* is not here: it is folded from the events log (round_* kinds).

-- Organizer and judge accounts; passwords are stored as scrypt hashes only.
CREATE TABLE accounts (
    username      text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('organizer', 'judge')),
    display_name  text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE competitions (
    id          text PRIMARY KEY,
    title       text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Which rounds belong to a competition, in order; their rules live in round_created.
CREATE TABLE rounds (
    id              text PRIMARY KEY,
    competition_id  text NOT NULL REFERENCES competitions (id),
    title           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rounds_by_competition ON rounds (competition_id, created_at);

-- One row per person on the roster; the join code is bound to that person.
-- redeemed_at is set the first time the code is used, so a shared code cannot be
-- used again from another phone; the organizer can issue a new code.
CREATE TABLE contestants (
    id              text PRIMARY KEY,
    competition_id  text NOT NULL REFERENCES competitions (id),
    name            text NOT NULL,
    school          text NOT NULL DEFAULT '',
    team            text NOT NULL DEFAULT '',
    email           text NOT NULL DEFAULT '',
    join_code       text NOT NULL UNIQUE,
    redeemed_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contestants_by_competition ON contestants (competition_id, name);

-- Server-wide secrets shared by every process (the token signing key).
CREATE TABLE secrets (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);

-- Round-level events have no attempt; their request ids must be applied once too,
-- so NULL attempt ids compare equal in the uniqueness check (PostgreSQL 15+).
DROP INDEX events_request_once;
CREATE UNIQUE INDEX events_request_once
    ON events (round_id, attempt_id, kind, request_id) NULLS NOT DISTINCT
    WHERE request_id IS NOT NULL;
