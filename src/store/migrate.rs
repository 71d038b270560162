//! Schema versioning. `schema.sql` is the whole current schema and ends by setting `PRAGMA user_version`;
//! a new database gets it in one transaction. An older database is brought forward by the steps in
//! `MIGRATIONS`, each in its own transaction with the version bump, so a crash leaves either the old or
//! the new version, never half of one. A database from a newer clicktermd is refused, untouched.

use std::path::Path;

use rusqlite::Connection;

use super::{Result, StoreError};

/// The schema, embedded from the repository root.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// The version `schema.sql` sets. A test keeps the two in agreement.
pub const SCHEMA_VERSION: i64 = 9;

/// Forward migrations: `MIGRATIONS[i]` takes a database from version `i + 1` to `i + 2`. Once a version
/// has shipped its schema is history; changes to `schema.sql` after that come with a step here.
const MIGRATIONS: &[&str] = &[
    // 1 → 2: the dispatcher's queues become partial indexes; the index over every delivery's state goes.
    "DROP INDEX deliveries_due;
     CREATE INDEX deliveries_pending ON deliveries(integration_id, next_attempt_at) WHERE state = 'pending';
     CREATE INDEX deliveries_leases ON deliveries(lease_until) WHERE state = 'in_flight';
     CREATE INDEX deliveries_held ON deliveries(integration_id) WHERE state = 'held';",
    // 2 → 3 (issues #13, #15, #16): each delivery records its event type (every delivery so far was
    // a verified event's, or a test webhook shaped like one), each audit entry the client address it
    // came from (none for the entries before); every event list and every
    // delivery-history filter gets the index it walks in the order asked, and the deliveries of each
    // integration are counted by state in a table the triggers keep, filled here from the rows as
    // they are. (Each statement is written exactly as in `schema.sql`, so a migrated database has the
    // same schema text as a new one; a test compares.)
    r"ALTER TABLE deliveries ADD COLUMN event_type TEXT NOT NULL DEFAULT 'CLICKWRAP_EVENT_VERIFIED';
ALTER TABLE audit_log ADD COLUMN client TEXT;
DROP INDEX events_verified_by_integration;
CREATE INDEX events_verified_by_integration ON events(integration_id, action, action_at, event_id)
    WHERE verified_at IS NOT NULL;
CREATE INDEX events_verified_by_integration_template
    ON events(integration_id, template_id, action, action_at, event_id) WHERE verified_at IS NOT NULL;
DROP INDEX events_by_user;
CREATE INDEX events_by_user ON events(end_user_id, action_at, event_id);
CREATE INDEX deliveries_pending_by_id ON deliveries(integration_id) WHERE state = 'pending';
CREATE INDEX deliveries_failed ON deliveries(integration_id) WHERE state = 'failed';
CREATE INDEX deliveries_cancelled ON deliveries(integration_id) WHERE state = 'cancelled';
CREATE INDEX deliveries_by_outcome ON deliveries(integration_id, last_outcome) WHERE last_outcome <> 'ok';
CREATE INDEX deliveries_by_state_outcome ON deliveries(integration_id, state, last_outcome)
    WHERE last_outcome <> 'ok';
CREATE INDEX deliveries_failed_by_time ON deliveries(integration_id, created_at) WHERE state = 'failed';
CREATE TABLE delivery_counts (
    integration_id INTEGER PRIMARY KEY REFERENCES integrations(id),
    pending        INTEGER NOT NULL DEFAULT 0,
    in_flight      INTEGER NOT NULL DEFAULT 0,
    succeeded      INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    held           INTEGER NOT NULL DEFAULT 0,
    cancelled      INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO delivery_counts (integration_id, pending, in_flight, succeeded, failed, held, cancelled)
SELECT integration_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in_flight'),
       count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed'),
       count(*) FILTER (WHERE state = 'held'), count(*) FILTER (WHERE state = 'cancelled')
FROM deliveries GROUP BY integration_id;
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
END;",
    // 3 → 4 (issue #14): each delivery's latest HTTP status (not filled in: the deliveries attempted
    // before show theirs in their attempts); the dashboard's kept aggregates — attempts per integration, hour and
    // outcome; each integration's latest success and failure; verified events per integration, day
    // and action, with the trigger that keeps them — filled here from the attempts still kept and
    // from every verified event (one pass over each; the aggregates of attempts already pruned are
    // lost, as the attempts are).
    r"ALTER TABLE deliveries ADD COLUMN last_status INTEGER;
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
CREATE TABLE webhook_health (
    integration_id   INTEGER PRIMARY KEY REFERENCES integrations(id),
    last_success_at  INTEGER,
    last_failure_at  INTEGER,
    failure_delivery INTEGER,
    failure_outcome  TEXT,
    failure_status   INTEGER,
    failure_detail   TEXT
) STRICT;
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
INSERT INTO attempt_hours (integration_id, hour, outcome, attempts, gave_up, duration_ms, max_duration_ms)
SELECT d.integration_id, a.started_at - a.started_at % 3600000, a.outcome, count(*),
       count(*) FILTER (WHERE d.state = 'failed'
                        AND a.id = (SELECT max(id) FROM attempts WHERE delivery_id = d.id)),
       sum(a.duration_ms), max(a.duration_ms)
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id GROUP BY 1, 2, 3;
INSERT INTO webhook_health (integration_id, last_failure_at, failure_delivery, failure_outcome, failure_status,
    failure_detail)
SELECT d.integration_id, max(a.started_at), a.delivery_id, a.outcome, a.response_status, a.detail
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE a.outcome <> 'ok' GROUP BY d.integration_id;
INSERT INTO webhook_health (integration_id, last_success_at)
SELECT d.integration_id, max(a.started_at)
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE a.outcome = 'ok' GROUP BY d.integration_id
ON CONFLICT (integration_id) DO UPDATE SET last_success_at = excluded.last_success_at;
INSERT INTO event_days (integration_id, day, action, events)
SELECT integration_id, action_at - action_at % 86400000, action, count(*)
FROM events WHERE verified_at IS NOT NULL GROUP BY 1, 2, 3;",
    // 4 → 5 (issue #16): each integration's client certificate for receivers that demand mutual
    // TLS; none before.
    r"CREATE TABLE integration_client_certs (
    integration_id INTEGER PRIMARY KEY REFERENCES integrations(id),
    cert_pem       TEXT NOT NULL,
    key_pem        TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    set_at         INTEGER NOT NULL
) STRICT;",
    // 5 → 6 (issue #16): roles, disabled users, one-time passwords; where sessions came from; tokens'
    // roles. Existing users become owners (they could do everything), existing tokens admins.
    r"ALTER TABLE admin_users ADD COLUMN role TEXT NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'viewer'));
ALTER TABLE admin_users ADD COLUMN disabled_at INTEGER;
ALTER TABLE admin_users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
ALTER TABLE admin_sessions ADD COLUMN client TEXT;
ALTER TABLE admin_sessions ADD COLUMN user_agent TEXT;
ALTER TABLE admin_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin' CHECK (role IN ('owner', 'admin', 'viewer'));",
    // 6 → 7 (issue #17): the proof-of-consent ledger, and each event's place in it. The events
    // already verified are chained by `chain_existing` right after, in the same transaction.
    r"ALTER TABLE events ADD COLUMN ledger_position INTEGER;
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
END;",
    // 7 → 8: nothing changes here. The versions count with PostgreSQL's, whose delivery counts
    // trigger changed (`pg/migrate.rs`).
    "",
    // 8 → 9: nothing changes here either; PostgreSQL's counts stop waiting for their row.
    "",
];

/// Work a step needs beyond its SQL, run in the step's transaction after it: `(to version, what)`.
/// Chaining needs SHA-256 and the evidence's encoding, which SQL does not have.
const AFTER_STEP: &[(i64, StepWork)] = &[(LEDGER_VERSION, chain_existing)];

/// The version that brought the proof-of-consent ledger (its step chains the events already held).
pub const LEDGER_VERSION: i64 = 7;

/// What [`AFTER_STEP`] runs.
type StepWork = fn(&Connection) -> Result<()>;

/// 6 → 7: every event verified so far gets its link, in verification order.
fn chain_existing(conn: &Connection) -> Result<()> {
    let chained = super::ledger::chain_existing(conn)?;
    tracing::info!(chained, "chained the events verified before the ledger");
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(StoreError::Io(format!(
                "{} is not a clicktermd database (it has tables but no schema version)",
                path.display()
            )));
        }
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA_SQL)?;
        tx.commit()?;
        tracing::info!(version = SCHEMA_VERSION, "created a new database");
        return Ok(());
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip((version - 1) as usize) {
        let to = from as i64 + 2;
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        for (_, after) in AFTER_STEP.iter().filter(|(v, _)| *v == to) {
            after(&tx)?;
        }
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
        tracing::info!(from = from + 1, to, "migrated the database schema");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, AttemptOutcome, Timestamp};

    #[test]
    fn schema_sql_sets_the_version_the_code_expects() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_SQL).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(
            MIGRATIONS.len() as i64,
            SCHEMA_VERSION - 1,
            "one migration step per version after 1"
        );
    }

    /// Every object of the schema (tables, indexes, triggers) with its SQL, sorted.
    fn objects(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A database made by the first release (its `schema.sql`, kept as a fixture), with rows in it, is
    /// brought to the current version and then has exactly the schema of a new database, rows intact.
    #[test]
    fn the_first_release_schema_migrates_to_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let mut old = Connection::open(&path).unwrap();
        old.execute_batch(include_str!("../../tests/e2e/fixtures/schema-v1.sql"))
            .unwrap();
        old.execute_batch(
            "INSERT INTO integrations VALUES (1, 'app', 'A', x'00', 's', 'ENABLED', NULL, 1, 0, NULL);
             INSERT INTO deliveries (delivery_id, integration_id, is_test, payload, state, next_attempt_at,
                 lease_until, created_at, updated_at)
             VALUES ('d1', 1, 1, x'7b7d', 'pending', 5, NULL, 0, 0),
                    ('d2', 1, 1, x'7b7d', 'in_flight', NULL, 9, 0, 0),
                    ('d3', 1, 1, x'7b7d', 'held', 0, NULL, 0, 0),
                    ('d4', 1, 1, x'7b7d', 'succeeded', NULL, NULL, 0, 0),
                    ('d5', 1, 1, x'7b7d', 'failed', NULL, NULL, 0, 0);
             INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, url, request_headers,
                 response_status, outcome, detail)
             VALUES (4, 1, 'automatic', 3600005, 40, 'https://x/', '{}', 200, 'ok', NULL),
                    (5, 1, 'automatic', 7200009, 60, 'https://x/', '{}', 500, 'http_status', 'first'),
                    (5, 2, 'automatic', 7200500, 20, 'https://x/', '{}', 502, 'http_status', 'last');
             INSERT INTO templates VALUES (1, 't', 'T', 1, 0, 'en', 0, 0);
             INSERT INTO events (event_id, integration_id, template_id, major, minor, effective_at, end_user_id,
                 action, technical_metadata, language, action_at, verified_at)
             VALUES ('e1', 1, 1, 1, 0, 0, 'u', 'ACCEPTED', '{}', 'en', 86400000 + 7, 86400000 + 9),
                    ('e2', 1, 1, 1, 0, 0, 'u', 'DECLINED', '{}', 'en', 86400000 + 8, 86400000 + 9),
                    ('e3', 1, 1, 1, 0, 0, 'u', 'ACCEPTED', '{}', 'en', 86400000 + 8, NULL);",
        )
        .unwrap();
        migrate(&mut old, &path).unwrap();
        let v: i64 = old
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);

        let fresh_path = dir.path().join("new.db");
        let mut fresh = Connection::open(&fresh_path).unwrap();
        migrate(&mut fresh, &fresh_path).unwrap();
        assert_eq!(objects(&old), objects(&fresh));

        // The rows are there, and the new partial indexes hold them; each delivery has its event type.
        let count = |sql: &str| -> i64 { old.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM deliveries"), 5);
        assert_eq!(
            count("SELECT count(*) FROM deliveries WHERE event_type = 'CLICKWRAP_EVENT_VERIFIED'"),
            5
        );
        // The dashboard's aggregates (schema 4) were filled from the attempts and verified events.
        let hours = super::super::stats::hours(&old, (Timestamp(0), Timestamp(i64::MAX)), Some(1))
            .unwrap()
            .into_iter()
            .map(|h| {
                (
                    h.hour.millis(),
                    h.outcome,
                    h.attempts,
                    h.gave_up,
                    h.duration_ms,
                    h.max_duration_ms,
                )
            })
            .collect::<Vec<_>>();
        assert_eq!(
            hours,
            vec![
                (3_600_000, AttemptOutcome::Ok, 1, 0, 40, 40),
                (7_200_000, AttemptOutcome::HttpStatus, 2, 1, 80, 60)
            ]
        );
        let health = super::super::stats::health(&old).unwrap();
        assert_eq!(health[0].last_success_at, Some(Timestamp(3_600_005)));
        let failure = health[0].last_failure.clone().unwrap();
        assert_eq!(
            (
                failure.at,
                failure.response_status,
                failure.detail.as_deref(),
                failure.delivery_id.as_deref()
            ),
            (Timestamp(7_200_500), Some(502), Some("last"), Some("d5"))
        );
        let days = super::super::stats::days(&old, (Timestamp(0), Timestamp(i64::MAX)), None)
            .unwrap()
            .into_iter()
            .map(|d| (d.day.millis(), d.action, d.events))
            .collect::<Vec<_>>();
        assert_eq!(
            days,
            vec![
                (86_400_000, Action::Accepted, 1),
                (86_400_000, Action::Declined, 1)
            ]
        );
        // The ledger (schema 7) chained the two events verified before it, in verification order
        // (ties by row), and the chain checks out.
        let links = super::super::ledger::links(&old, 0, 10).unwrap();
        let chained: Vec<_> = links
            .iter()
            .map(|l| (l.position, l.event_id.as_deref()))
            .collect();
        assert_eq!(chained, vec![(1, Some("e1")), (2, Some("e2"))]);
        let head = crate::ledger::check_links(crate::model::ChainHead::EMPTY, &links).unwrap();
        assert_eq!(head, super::super::ledger::head(&old).unwrap());
        assert_eq!(head.position, 2);
        // From now on the trigger counts each verify.
        old.execute(
            "UPDATE events SET verified_at = 1 WHERE event_id = 'e3'",
            [],
        )
        .unwrap();
        let accepted: i64 = old
            .query_row(
                "SELECT events FROM event_days WHERE action = 'ACCEPTED'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(accepted, 2);
        assert_eq!(
            count(
                "SELECT count(*) FROM deliveries INDEXED BY deliveries_pending WHERE state = 'pending'"
            ),
            1
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM deliveries INDEXED BY deliveries_leases WHERE state = 'in_flight'"
            ),
            1
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM deliveries INDEXED BY deliveries_held WHERE state = 'held'"
            ),
            1
        );
        // The counts table was filled from the rows, and the triggers keep it from then on.
        let counts = |c: &Connection| -> Vec<(String, i64)> {
            super::super::deliveries::count_by_state(c, 1)
                .unwrap()
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect()
        };
        let want = |pending, in_flight, succeeded, held| -> Vec<(String, i64)> {
            [
                ("pending", pending),
                ("in_flight", in_flight),
                ("succeeded", succeeded),
                ("failed", 1),
                ("held", held),
                ("cancelled", 0),
            ]
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect()
        };
        assert_eq!(counts(&old), want(1, 1, 1, 1));
        old.execute(
            "UPDATE deliveries SET state = 'succeeded' WHERE delivery_id = 'd2'",
            [],
        )
        .unwrap();
        assert_eq!(counts(&old), want(1, 0, 2, 1));
        let check: String = old
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
