-- The clicktermd database schema: the single source of truth, embedded in the binary and applied to a
-- new database at start. Times are Unix milliseconds (UTC). Secrets that authenticate callers are kept
-- only as SHA-256 digests; webhook signing secrets are kept as is because they must sign.
-- An existing database is brought to this version by the forward migrations in src/store/migrate.rs.

-- Server-wide values generated at first start (e.g. the clickwrap signature key).
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL
) STRICT;

CREATE TABLE admin_users (
    id                  INTEGER PRIMARY KEY,
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,          -- argon2id PHC string
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
, role TEXT NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'viewer')), disabled_at INTEGER, must_change_password INTEGER NOT NULL DEFAULT 0) STRICT;
-- Schema 6 (issue #16): each user's `role` (the users of an older database were all-powerful, so
-- they become owners), `disabled_at` (a disabled user cannot log in and their sessions end), and
-- `must_change_password` (set with a one-time password: until it is changed, the session may do
-- nothing else). Written as SQLite stores columns added by `ALTER TABLE`, like `deliveries`.

CREATE TABLE admin_sessions (
    token_digest BLOB PRIMARY KEY,              -- SHA-256 of the cookie value
    user_id      INTEGER NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
, client TEXT, user_agent TEXT) STRICT;
-- Schema 6: where a session was started from (the client address behind trusted proxies) and its
-- browser, so an owner can tell sessions apart before ending one.

CREATE INDEX admin_sessions_expiry ON admin_sessions(expires_at);

CREATE TABLE admin_tokens (
    id           INTEGER PRIMARY KEY,
    token_digest BLOB NOT NULL UNIQUE,          -- SHA-256 of the bearer token
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
, role TEXT NOT NULL DEFAULT 'admin' CHECK (role IN ('owner', 'admin', 'viewer'))) STRICT;
-- Schema 6: a token's role (older tokens could do everything but manage users, which did not exist:
-- they become `admin`).

CREATE TABLE integrations (
    id                       INTEGER PRIMARY KEY,
    app_id                   TEXT NOT NULL UNIQUE,
    name                     TEXT NOT NULL,
    app_key_digest           BLOB NOT NULL,     -- SHA-256 of the App Key; the key itself is never stored
    signing_secret           TEXT NOT NULL,
    status                   TEXT NOT NULL CHECK (status IN ('ENABLED', 'DISABLED')),
    callback_url             TEXT,
    webhook_delivery_enabled INTEGER NOT NULL CHECK (webhook_delivery_enabled IN (0, 1)),
    created_at               INTEGER NOT NULL,
    deleted_at               INTEGER            -- set on delete; the row stays so events keep their owner
) STRICT;

CREATE TABLE integration_domains (
    integration_id INTEGER NOT NULL REFERENCES integrations(id),
    domain         TEXT NOT NULL,
    PRIMARY KEY (integration_id, domain)
) STRICT, WITHOUT ROWID;

-- An integration's client certificate for callback TLS (mutual TLS; schema 5, issue #16), uploaded
-- through the admin API: the chain (leaf first) and its private key in PEM, kept as is like the
-- signing secret because they must be presented; the key is never shown again. `fingerprint` is the
-- SHA-256 of the leaf (what the audit log names). Certificates named in the config file are not kept
-- here. (No comments inside the statement: migration 4 → 5 writes it as here, and a test compares.)
CREATE TABLE integration_client_certs (
    integration_id INTEGER PRIMARY KEY REFERENCES integrations(id),
    cert_pem       TEXT NOT NULL,
    key_pem        TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    set_at         INTEGER NOT NULL
) STRICT;

-- Every admin change: who did what to which object, and when.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
, client TEXT) STRICT;
-- `client` (schema 3): the address the change came from (behind a trusted proxy, the client's);
-- none for the command line. Written as SQLite stores an added column, like `deliveries.event_type`.

-- Clickwrap templates. The template row holds the editable draft (texts per language); publishing
-- freezes a copy as an immutable version (major.minor) with the time it becomes effective.
CREATE TABLE templates (
    id               INTEGER PRIMARY KEY,
    template_id      TEXT NOT NULL UNIQUE,      -- the public clickwrapTemplateId (UUID)
    name             TEXT NOT NULL,
    enabled          INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    always_reaccept  INTEGER NOT NULL CHECK (always_reaccept IN (0, 1)),
    default_language TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE template_tags (
    template_id INTEGER NOT NULL REFERENCES templates(id),
    tag         TEXT NOT NULL,
    PRIMARY KEY (template_id, tag)
) STRICT, WITHOUT ROWID;

CREATE INDEX template_tags_by_tag ON template_tags(tag);

-- Linked integrations; a template linked to none is visible to every integration.
CREATE TABLE template_integrations (
    template_id    INTEGER NOT NULL REFERENCES templates(id),
    integration_id INTEGER NOT NULL REFERENCES integrations(id),
    PRIMARY KEY (template_id, integration_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX template_integrations_by_integration ON template_integrations(integration_id);

-- The draft texts of a template, one row per language.
CREATE TABLE template_texts (
    template_id    INTEGER NOT NULL REFERENCES templates(id),
    language       TEXT NOT NULL,
    title          TEXT NOT NULL,
    content        TEXT NOT NULL,
    inline_content TEXT,
    PRIMARY KEY (template_id, language)
) STRICT, WITHOUT ROWID;

-- Published versions: immutable once written. The effective one is the latest effective_at not in
-- the future, whatever order they were published in.
CREATE TABLE template_versions (
    id               INTEGER PRIMARY KEY,
    template_id      INTEGER NOT NULL REFERENCES templates(id),
    major            INTEGER NOT NULL CHECK (major >= 1),
    minor            INTEGER NOT NULL CHECK (minor >= 0),
    default_language TEXT NOT NULL,
    effective_at     INTEGER NOT NULL,
    must_accept_by   INTEGER,
    published_at     INTEGER NOT NULL,
    UNIQUE (template_id, major, minor)
) STRICT;

CREATE INDEX template_versions_effective ON template_versions(template_id, effective_at);

CREATE TABLE template_version_texts (
    version_id     INTEGER NOT NULL REFERENCES template_versions(id),
    language       TEXT NOT NULL,
    title          TEXT NOT NULL,
    content        TEXT NOT NULL,
    inline_content TEXT,
    PRIMARY KEY (version_id, language)
) STRICT, WITHOUT ROWID;

-- Published versions never change: the database itself refuses.
CREATE TRIGGER template_versions_immutable BEFORE UPDATE ON template_versions
BEGIN
    SELECT RAISE(ABORT, 'published template versions are immutable');
END;

CREATE TRIGGER template_version_texts_immutable BEFORE UPDATE ON template_version_texts
BEGIN
    SELECT RAISE(ABORT, 'published template versions are immutable');
END;

-- Presentations: an end user was shown a version (SDK GET). With no action since, the status is PENDING.
CREATE TABLE presentations (
    id             INTEGER PRIMARY KEY,
    integration_id INTEGER NOT NULL REFERENCES integrations(id),
    template_id    INTEGER NOT NULL REFERENCES templates(id),
    major          INTEGER NOT NULL,
    minor          INTEGER NOT NULL,
    end_user_id    TEXT NOT NULL,
    presented_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX presentations_by_user ON presentations(template_id, end_user_id, presented_at);

-- Clickwrap events: an end user's action on a version. Created unverified by the SDK; verified once by
-- the customer's backend. Never modified after verification, never deleted.
CREATE TABLE events (
    id                    INTEGER PRIMARY KEY,
    event_id              TEXT NOT NULL UNIQUE,     -- the public clickwrapEventId (UUID)
    integration_id        INTEGER NOT NULL REFERENCES integrations(id),
    template_id           INTEGER NOT NULL REFERENCES templates(id),
    major                 INTEGER NOT NULL,
    minor                 INTEGER NOT NULL,
    effective_at          INTEGER NOT NULL,         -- of the version acted on
    end_user_id           TEXT NOT NULL,
    action                TEXT NOT NULL CHECK (action IN ('ACCEPTED', 'DECLINED')),
    template_placeholders TEXT,                     -- JSON object as text, or NULL
    technical_metadata    TEXT NOT NULL,            -- JSON object as text
    language              TEXT NOT NULL,
    presented_at          INTEGER,
    action_at             INTEGER NOT NULL,
    verified_at           INTEGER
, ledger_position INTEGER) STRICT;
-- `ledger_position` (schema 7): the event's link in `ledger`, set by the update that verifies it (the
-- row is written then anyway, so finding an event's link costs no index of its own); written as SQLite
-- stores an added column, like `deliveries.event_type`.

-- The event lists (SPEC §3, §8). Each page is an index walk in the order asked that stops when the
-- page is full, whatever the filters and however many events there are:
-- - of one integration: its verified events, with or without a template, the action before the time,
--   so a list filtered by it walks its own part and one without it merges the two parts (ACCEPTED,
--   DECLINED), each already in order;
-- - of one end user: `events_by_user`, every event of theirs newest first (an end user is one person
--   across the workspace, whose events are few); the other filters are checked on each;
-- - across integrations (the admin list without an integration or end user): the integrations' own
--   walks, merged, so its cost is that of a page per integration, not of the events.
-- Every verify adds an entry to each partial index here (about a page written per write batch), so
-- there are as few as the lists need: none over every integration's events at once.
CREATE INDEX events_verified_by_integration ON events(integration_id, action, action_at, event_id)
    WHERE verified_at IS NOT NULL;
CREATE INDEX events_verified_by_integration_template
    ON events(integration_id, template_id, action, action_at, event_id) WHERE verified_at IS NOT NULL;
-- An end user's events newest first: their event list, and the consent status's latest event on a
-- template (written when the end user acts, not at verify).
CREATE INDEX events_by_user ON events(end_user_id, action_at, event_id);

CREATE TRIGGER events_final_once_verified BEFORE UPDATE ON events
    WHEN OLD.verified_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'verified clickwrap events are immutable');
END;

CREATE TRIGGER events_never_deleted BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'clickwrap events are never deleted');
END;

-- Requests to accept a template again (re-accept API); an acceptance after requested_at answers them.
CREATE TABLE reaccept_requests (
    template_id  INTEGER NOT NULL REFERENCES templates(id),
    end_user_id  TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    reason       TEXT,
    PRIMARY KEY (template_id, end_user_id)
) STRICT, WITHOUT ROWID;

-- Webhook deliveries: one per verified event (or test), created in the verify transaction with its
-- payload bytes frozen. The dispatcher moves them through their states.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    delivery_id     TEXT NOT NULL UNIQUE,            -- UUID
    integration_id  INTEGER NOT NULL REFERENCES integrations(id),
    event_id        INTEGER REFERENCES events(id),   -- NULL for a test webhook
    is_test         INTEGER NOT NULL CHECK (is_test IN (0, 1)),
    payload         BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'succeeded', 'failed', 'held', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    last_outcome    TEXT,
    chain_trigger   TEXT NOT NULL DEFAULT 'automatic' CHECK (chain_trigger IN ('automatic', 'manual')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
, event_type TEXT NOT NULL DEFAULT 'CLICKWRAP_EVENT_VERIFIED', last_status INTEGER) STRICT;
-- `event_type` (schema 3) is the payload's `eventType`, one of `model::EventType`; it is written as
-- SQLite stores a column added by `ALTER TABLE`, so a migrated database and a new one have the same
-- schema text. No CHECK: another event type is a new value, not a rebuild of the table.
-- `last_status` (schema 4) is the HTTP status of the latest attempt, NULL when it got no response
-- (or was made before schema 4), written by the update that already records `last_outcome`.

-- The dispatcher's queues: each integration's pending deliveries in due order, the leases of those in
-- flight, and those held. Partial, so a row is in one of them only while it waits in that state, and a
-- delivered row in none: no index over every delivery's state (each attempt would rewrite an entry).
CREATE INDEX deliveries_pending ON deliveries(integration_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_leases ON deliveries(lease_until) WHERE state = 'in_flight';
CREATE INDEX deliveries_held ON deliveries(integration_id) WHERE state = 'held';
CREATE INDEX deliveries_by_integration ON deliveries(integration_id, id);
CREATE INDEX deliveries_by_event ON deliveries(event_id);

-- The delivery history filtered by state, by last outcome or both, newest first (each of these ends in
-- the row id): a partial index for every value that is rare among an integration's deliveries, so a
-- page of one walks only the rows that have it. Held ones walk `deliveries_held`; those in flight are
-- at most `max_in_flight`, found through `deliveries_leases`. Succeeded (outcome `ok`) is what most
-- deliveries become: those filters walk `deliveries_by_integration` and skip the others, and a
-- delivery delivered at its first attempt gets no entry in any of these but `deliveries_pending_by_id`
-- while it waits (every entry is a page written per write batch on the hot path).
CREATE INDEX deliveries_pending_by_id ON deliveries(integration_id) WHERE state = 'pending';
CREATE INDEX deliveries_failed ON deliveries(integration_id) WHERE state = 'failed';
CREATE INDEX deliveries_cancelled ON deliveries(integration_id) WHERE state = 'cancelled';
CREATE INDEX deliveries_by_outcome ON deliveries(integration_id, last_outcome) WHERE last_outcome <> 'ok';
CREATE INDEX deliveries_by_state_outcome ON deliveries(integration_id, state, last_outcome)
    WHERE last_outcome <> 'ok';
-- Bulk redelivery walks an integration's failed deliveries by creation time, in batches.
CREATE INDEX deliveries_failed_by_time ON deliveries(integration_id, created_at) WHERE state = 'failed';

-- How many of each integration's deliveries are in each state, kept by the triggers below in the
-- same transaction as every insert and state change: the delivery counts and the queue metrics read
-- one row per integration instead of counting its deliveries.
CREATE TABLE delivery_counts (
    integration_id INTEGER PRIMARY KEY REFERENCES integrations(id),
    pending        INTEGER NOT NULL DEFAULT 0,
    in_flight      INTEGER NOT NULL DEFAULT 0,
    succeeded      INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    held           INTEGER NOT NULL DEFAULT 0,
    cancelled      INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TRIGGER deliveries_counted_on_insert AFTER INSERT ON deliveries
BEGIN
    INSERT INTO delivery_counts (integration_id, pending, in_flight, succeeded, failed, held, cancelled)
    VALUES (NEW.integration_id, NEW.state = 'pending', NEW.state = 'in_flight', NEW.state = 'succeeded',
            NEW.state = 'failed', NEW.state = 'held', NEW.state = 'cancelled')
    ON CONFLICT (integration_id) DO UPDATE SET
        pending = pending + excluded.pending, in_flight = in_flight + excluded.in_flight,
        succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed,
        held = held + excluded.held, cancelled = cancelled + excluded.cancelled;
END;

CREATE TRIGGER deliveries_counted_on_state AFTER UPDATE OF state ON deliveries
    WHEN OLD.state <> NEW.state
BEGIN
    UPDATE delivery_counts SET
        pending = pending + (NEW.state = 'pending') - (OLD.state = 'pending'),
        in_flight = in_flight + (NEW.state = 'in_flight') - (OLD.state = 'in_flight'),
        succeeded = succeeded + (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed'),
        held = held + (NEW.state = 'held') - (OLD.state = 'held'),
        cancelled = cancelled + (NEW.state = 'cancelled') - (OLD.state = 'cancelled')
    WHERE integration_id = NEW.integration_id;
END;

-- A delivery's integration never changes; deliveries are not deleted today, but if they ever are the
-- counts stay true.
CREATE TRIGGER deliveries_integration_fixed BEFORE UPDATE OF integration_id ON deliveries
    WHEN OLD.integration_id <> NEW.integration_id
BEGIN
    SELECT RAISE(ABORT, 'a delivery belongs to one integration');
END;

CREATE TRIGGER deliveries_counted_on_delete AFTER DELETE ON deliveries
BEGIN
    UPDATE delivery_counts SET
        pending = pending - (OLD.state = 'pending'), in_flight = in_flight - (OLD.state = 'in_flight'),
        succeeded = succeeded - (OLD.state = 'succeeded'), failed = failed - (OLD.state = 'failed'),
        held = held - (OLD.state = 'held'), cancelled = cancelled - (OLD.state = 'cancelled')
    WHERE integration_id = OLD.integration_id;
END;

-- Every HTTP attempt of a delivery, with everything observed about it (SPEC §5.4). The request body is
-- the delivery's payload, which never changes.
CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    delivery_id     INTEGER NOT NULL REFERENCES deliveries(id),
    number          INTEGER NOT NULL,
    trigger         TEXT NOT NULL CHECK (trigger IN ('automatic', 'manual')),
    started_at      INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    url             TEXT NOT NULL,
    remote_addr     TEXT,                        -- the address actually connected to
    request_headers TEXT NOT NULL,               -- JSON object
    response_status INTEGER,
    response_body   BLOB,                        -- the first 4 KiB
    outcome         TEXT NOT NULL CHECK (outcome IN ('ok', 'http_status', 'redirect_refused', 'timeout',
                        'dns_error', 'blocked_address', 'connect_error', 'tls_error', 'invalid_url')),
    detail          TEXT
) STRICT;

CREATE INDEX attempts_by_delivery ON attempts(delivery_id, number);
CREATE INDEX attempts_by_time ON attempts(started_at);

-- The dashboard's health and charts (schema 4, issue #14): small tables kept in the transaction of
-- every attempt record and every verify, so a day's chart reads that day's few rows, never the
-- attempts or the events. Hours and days are Unix milliseconds of their start (UTC).
-- Attempts per integration, hour and outcome: how many, how many were a delivery's last (it failed
-- for good), and their durations. At most one row per outcome an integration met in an hour.
CREATE TABLE attempt_hours (
    integration_id  INTEGER NOT NULL REFERENCES integrations(id),
    hour            INTEGER NOT NULL,
    outcome         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    gave_up         INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    max_duration_ms INTEGER NOT NULL,
    PRIMARY KEY (integration_id, hour, outcome)
) STRICT, WITHOUT ROWID;
CREATE INDEX attempt_hours_by_hour ON attempt_hours(hour);

-- Each integration's latest successful attempt and latest failed one, with what went wrong (the
-- delivery is its row id, no foreign key: the failure stays told if the delivery ever goes).
CREATE TABLE webhook_health (
    integration_id   INTEGER PRIMARY KEY REFERENCES integrations(id),
    last_success_at  INTEGER,
    last_failure_at  INTEGER,
    failure_delivery INTEGER,
    failure_outcome  TEXT,
    failure_status   INTEGER,
    failure_detail   TEXT
) STRICT;

-- Verified events per integration, UTC day of their action and action, kept by the trigger below
-- (an event is verified once: the update that sets `verified_at`).
CREATE TABLE event_days (
    integration_id INTEGER NOT NULL REFERENCES integrations(id),
    day            INTEGER NOT NULL,
    action         TEXT NOT NULL,
    events         INTEGER NOT NULL,
    PRIMARY KEY (integration_id, day, action)
) STRICT, WITHOUT ROWID;
CREATE INDEX event_days_by_day ON event_days(day);

CREATE TRIGGER events_counted_on_verify AFTER UPDATE OF verified_at ON events
    WHEN OLD.verified_at IS NULL AND NEW.verified_at IS NOT NULL
BEGIN
    INSERT INTO event_days (integration_id, day, action, events)
    VALUES (NEW.integration_id, NEW.action_at - NEW.action_at % 86400000, NEW.action, 1)
    ON CONFLICT (integration_id, day, action) DO UPDATE SET events = events + 1;
END;

-- The proof-of-consent ledger (schema 7, issue #17): one link per verified event, in verification
-- order, written by the verify's own transaction (`store/ledger.rs`; what is hashed: docs/ledger.md).
-- `position` counts 1, 2, 3, …; `template_name` is the template's name when the event was verified
-- (the one fact of the evidence that the database does not otherwise keep immutable); `digest` is
-- SHA-256 of the evidence's canonical encoding, `hash` SHA-256(previous hash ‖ position ‖ digest).
-- The head is the last row by `position`; an event finds its link by its `ledger_position`.
CREATE TABLE ledger (
    position      INTEGER PRIMARY KEY,
    event_id      INTEGER NOT NULL REFERENCES events(id),
    template_name TEXT NOT NULL,
    digest        BLOB NOT NULL,
    hash          BLOB NOT NULL
) STRICT;
CREATE TRIGGER ledger_links_immutable BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger links are immutable');
END;
CREATE TRIGGER ledger_links_never_deleted BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger links are never deleted');
END;

PRAGMA user_version = 9;
