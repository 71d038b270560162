//! The query plans of the reads behind the public and admin APIs and of the bulk writes (issue #13).
//! For every combination of filters of every list, the exact statement the code runs is asked for its
//! plan (`EXPLAIN QUERY PLAN`) and must walk the index it names without scanning a big table and
//! without a temporary b-tree for its order: the cost of a page is then the page, not the data.
//! Each plan is taken twice: on a new database, which is what a server runs until someone runs
//! `ANALYZE` (clicktermd never does), and on one with skewed rows and statistics (`sqlite_stat1`), in
//! case the planner would change its mind once it knows the data.

use rusqlite::Connection;
use rusqlite::types::Value;

use super::events::{self, ListQuery, Statement};
use super::{audit, deliveries, ledger, stats};
use crate::model::{Action, AttemptOutcome, DeliveryState, Timestamp};

/// Tables that grow with the data (and their aliases in our statements): no plan may scan them.
const BIG: &[&str] = &[
    "events",
    "e",
    "deliveries",
    "d",
    "attempts",
    "presentations",
    "audit_log",
    "attempt_hours",
    "event_days",
    "ledger",
    "link",
    "prior",
];

/// What a plan may do beyond walking its index by a search.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Allowed {
    Nothing,
    /// Deliveries in flight: walked through `deliveries_leases` and sorted. There are at most
    /// `webhooks.max_in_flight` of them (256 by default), whatever the size of the history.
    WalkAndSortInFlight,
    /// The loose scan of `deliveries_pending` (one probe per integration with pending deliveries):
    /// its first step reads the first entry of the index (`ORDER BY integration_id LIMIT 1`).
    LooseScanOfPending,
}

fn new_database() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    let mut conn = Connection::open(&path).unwrap();
    super::migrate::migrate(&mut conn, &path).unwrap();
    (dir, conn)
}

/// A database whose rows are skewed the way a real one's are — one integration and one template with
/// most of the events, a rare end user, a rare state and outcome — with statistics gathered.
fn analyzed_database() -> (tempfile::TempDir, Connection) {
    let (dir, conn) = new_database();
    conn.execute_batch(
        "INSERT INTO integrations (id, app_id, name, app_key_digest, signing_secret, status, callback_url,
             webhook_delivery_enabled, created_at)
         SELECT value, 'app-' || value, 'A', x'00', 's', 'ENABLED', 'https://x.test/', 1, 0
         FROM (WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 20)
               SELECT value FROM n);
         INSERT INTO templates (id, template_id, name, enabled, always_reaccept, default_language,
             created_at, updated_at) VALUES (1, 't1', 'T', 1, 0, 'en', 0, 0), (2, 't2', 'T', 1, 0, 'en', 0, 0);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
         INSERT INTO events (id, event_id, integration_id, template_id, major, minor, effective_at,
             end_user_id, action, technical_metadata, language, action_at, verified_at)
         SELECT i, 'ev-' || i, CASE WHEN i % 10 = 3 THEN 2 + i % 19 ELSE 1 END,
                CASE WHEN i % 500 IN (0, 3) THEN 2 ELSE 1 END, 1, 0, 0,
                CASE WHEN i % 1000 IN (0, 3) THEN 'rare' ELSE 'user-' || (i % 50) END,
                CASE WHEN i % 20 = 0 THEN 'DECLINED' ELSE 'ACCEPTED' END, '{}', 'en', i * 1000,
                CASE WHEN i % 100 = 0 THEN NULL ELSE i * 1000 + 5 END
         FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
         INSERT INTO deliveries (id, delivery_id, integration_id, event_id, is_test, payload, state, attempts,
             next_attempt_at, lease_until, last_outcome, created_at, updated_at)
         SELECT i, 'd-' || i, CASE WHEN i % 10 = 3 THEN 2 + i % 19 ELSE 1 END, i, 0, x'7b7d',
                CASE WHEN i % 997 = 0 THEN 'cancelled' WHEN i % 50 = 0 THEN 'failed'
                     WHEN i % 331 = 0 THEN 'held' WHEN i % 401 = 0 THEN 'pending'
                     WHEN i % 403 = 0 THEN 'in_flight' ELSE 'succeeded' END,
                1, i * 1000, CASE WHEN i % 403 = 0 THEN i * 1000 END,
                CASE WHEN i % 997 = 0 OR i % 331 = 0 THEN NULL WHEN i % 50 = 0 THEN 'timeout'
                     WHEN i % 401 = 0 OR i % 403 = 0 THEN 'tls_error' ELSE 'ok' END,
                i * 1000, i * 1000
         FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO presentations (integration_id, template_id, major, minor, end_user_id, presented_at)
         SELECT 1, 1, 1, 0, 'user-' || (i % 50), i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO audit_log (at, actor, action) SELECT i, 'admin', 'x' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO attempt_hours (integration_id, hour, outcome, attempts, gave_up, duration_ms,
             max_duration_ms)
         SELECT 1 + i % 20, (i / 20) * 3600000, CASE WHEN i % 7 = 0 THEN 'timeout' ELSE 'ok' END, 5, 0, 50, 20
         FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO event_days (integration_id, day, action, events)
         SELECT 1 + i % 20, (i / 20) * 86400000, CASE WHEN i % 9 = 0 THEN 'DECLINED' ELSE 'ACCEPTED' END, 3
         FROM n;
         INSERT INTO webhook_health (integration_id, last_success_at, last_failure_at, failure_delivery,
             failure_outcome) SELECT id, 5, 6, id, 'timeout' FROM integrations;
         ANALYZE;",
    )
    .unwrap();
    let stats: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_stat1", [], |r| r.get(0))
        .unwrap();
    assert!(stats > 10, "ANALYZE gathered statistics");
    (dir, conn)
}

/// The plan's lines, as `EXPLAIN QUERY PLAN` words them.
fn plan(conn: &Connection, sql: &str, params: &[(&'static str, Value)]) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    let bound: Vec<(&str, &dyn rusqlite::ToSql)> = params
        .iter()
        .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
        .collect();
    stmt.query_map(bound.as_slice(), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Asserts that `lines` scan no big table and build no temporary b-tree (beyond `allowed`), and, with
/// `index`, that the index is walked.
fn check(what: &str, lines: &[String], index: Option<&str>, allowed: Allowed) {
    let shown = lines.join("\n  ");
    for line in lines {
        let mut words = line.split_whitespace();
        if words.next() == Some("SCAN") {
            let table = words.next().unwrap_or("");
            let bounded = match allowed {
                Allowed::Nothing => false,
                Allowed::WalkAndSortInFlight => {
                    line.contains("USING INDEX deliveries_leases")
                        || line.contains("USING COVERING INDEX deliveries_leases")
                }
                Allowed::LooseScanOfPending => {
                    line == "SCAN deliveries USING COVERING INDEX deliveries_pending"
                }
            };
            assert!(
                !BIG.contains(&table) || bounded,
                "{what}: scans {table}:\n  {shown}"
            );
        }
        if line.contains("TEMP B-TREE") {
            assert!(
                allowed == Allowed::WalkAndSortInFlight && line == "USE TEMP B-TREE FOR ORDER BY",
                "{what}: sorts:\n  {shown}"
            );
        }
    }
    if let Some(index) = index {
        assert!(
            lines.iter().any(|l| l.contains(&format!("INDEX {index} "))
                || l.ends_with(&format!("INDEX {index}"))),
            "{what}: does not walk {index}:\n  {shown}"
        );
    }
}

/// Every combination of the event list's filters, public (with the integration) and admin (with or
/// without it), with a cursor inside and outside `to`.
fn event_queries() -> Vec<ListQuery> {
    let mut out = Vec::new();
    let at = |ms| Some(Timestamp(ms));
    for integration in [None, Some(1)] {
        for template_row in [None, Some(2)] {
            for end_user in [None, Some("rare".to_string())] {
                for action in [None, Some(Action::Accepted), Some(Action::Declined)] {
                    for from in [None, at(1_000)] {
                        for to in [None, at(3_000_000)] {
                            for cursor in [
                                None,
                                Some((Timestamp(2_000_000), "ev-2000".to_string())),
                                Some((Timestamp(9_000_000), "ev-9000".to_string())),
                            ] {
                                out.push(ListQuery {
                                    integration,
                                    template_row,
                                    end_user: end_user.clone(),
                                    action,
                                    from,
                                    to,
                                    cursor,
                                    ..ListQuery::default()
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The statements one page of `q` runs: its own walk, or — across integrations — each integration's
/// walk for keys, without and with the floor the merge sets once it holds a page.
fn event_statements(q: &ListQuery) -> Vec<(ListQuery, Statement)> {
    if q.integration.is_some() || q.end_user.is_some() {
        return vec![(q.clone(), events::list_statement(q))];
    }
    [None, Some((Timestamp(1_500_000), "ev-1500".to_string()))]
        .into_iter()
        .map(|floor| {
            let one = ListQuery {
                integration: Some(1),
                keys_only: true,
                floor,
                ..q.clone()
            };
            let statement = events::list_statement(&one);
            (one, statement)
        })
        .collect()
}

fn check_event_lists(conn: &Connection) {
    let queries = event_queries();
    assert_eq!(queries.len(), 2 * 2 * 2 * 3 * 2 * 2 * 3);
    for q in &queries {
        for (one, Statement { sql, params, index }) in event_statements(q) {
            let lines = plan(conn, &sql, &params);
            check(&format!("{one:?}"), &lines, Some(index), Allowed::Nothing);
            // Without an action filter, an integration's two parts (by action) are walked, each in
            // order, and merged; an end user's events are in time order whatever their action.
            if one.action.is_none() && one.end_user.is_none() {
                assert!(
                    lines.iter().any(|l| l == "MERGE (UNION ALL)"),
                    "{one:?}: {lines:?}"
                );
            }
        }
    }
}

fn check_delivery_history(conn: &Connection) {
    let mut shapes = 0;
    for state in std::iter::once(None).chain(DeliveryState::ALL.iter().copied().map(Some)) {
        for outcome in std::iter::once(None).chain(AttemptOutcome::ALL.iter().copied().map(Some)) {
            for before in [None, Some(3_000)] {
                let statement = deliveries::list_statement(1, state, outcome, before);
                let allowed = if state == Some(DeliveryState::InFlight)
                    && outcome.is_none_or(AttemptOutcome::is_success)
                {
                    Allowed::WalkAndSortInFlight
                } else {
                    Allowed::Nothing
                };
                let lines = plan(conn, &statement.sql, &statement.params);
                check(
                    &format!("deliveries state={state:?} outcome={outcome:?} before={before:?}"),
                    &lines,
                    Some(statement.index),
                    allowed,
                );
                shapes += 1;
            }
        }
    }
    assert_eq!(shapes, 7 * 10 * 2);
}

/// A statement with its parameters, the index it must walk and what else it may do.
type Case = (
    &'static str,
    String,
    Vec<(&'static str, Value)>,
    Option<&'static str>,
    Allowed,
);

/// The other reads of the APIs and the bulk writes, each with the index it must walk (if it names
/// one) and what it may do beyond that.
fn check_single_statements(conn: &Connection) {
    let int = Value::Integer;
    let text = |s: &str| Value::Text(s.to_string());
    let cases: Vec<Case> = vec![
        (
            "event detail (public)",
            events::get_verified_sql(true),
            vec![("?1", text("ev-1")), ("?2", int(1))],
            None,
            Allowed::Nothing,
        ),
        (
            "event detail (admin)",
            events::get_verified_sql(false),
            vec![("?1", text("ev-1"))],
            None,
            Allowed::Nothing,
        ),
        (
            "consent status: latest event",
            events::user_events_sql(),
            vec![
                ("?1", int(1)),
                ("?2", text("user-1")),
                ("?3", int(1)),
                ("?4", int(1)),
            ],
            Some("events_by_user"),
            Allowed::Nothing,
        ),
        (
            "consent status: latest presentation",
            events::LATEST_PRESENTATION.to_string(),
            vec![("?1", int(1)), ("?2", text("user-1")), ("?3", int(1))],
            Some("presentations_by_user"),
            Allowed::Nothing,
        ),
        (
            "audit log",
            audit::LIST.to_string(),
            vec![("?1", int(i64::MAX)), ("?2", int(50))],
            None,
            Allowed::Nothing,
        ),
        (
            "delivery counts",
            deliveries::COUNTS.to_string(),
            vec![("?1", int(1))],
            None,
            Allowed::Nothing,
        ),
        (
            "queue metrics",
            deliveries::queue_stats_sql(),
            vec![("?1", int(0))],
            Some("deliveries_pending"),
            Allowed::LooseScanOfPending,
        ),
        (
            "settling: candidates",
            deliveries::UNSETTLED_CANDIDATES.to_string(),
            vec![],
            None,
            Allowed::Nothing,
        ),
        (
            "settling: release held",
            deliveries::RELEASE_HELD.to_string(),
            vec![("?1", int(1)), ("?2", int(0)), ("?3", int(500))],
            Some("deliveries_held"),
            Allowed::Nothing,
        ),
        (
            "settling: hold pending",
            deliveries::HOLD_PENDING.to_string(),
            vec![("?1", int(1)), ("?2", int(0)), ("?3", int(500))],
            Some("deliveries_pending_by_id"),
            Allowed::Nothing,
        ),
        (
            "settling: cancel pending",
            deliveries::CANCEL_PENDING.to_string(),
            vec![("?1", int(1)), ("?2", int(0)), ("?3", int(500))],
            Some("deliveries_pending_by_id"),
            Allowed::Nothing,
        ),
        (
            "settling: cancel held",
            deliveries::CANCEL_HELD.to_string(),
            vec![("?1", int(1)), ("?2", int(0)), ("?3", int(500))],
            Some("deliveries_held"),
            Allowed::Nothing,
        ),
        (
            "bulk redelivery: first batch",
            deliveries::REDELIVER_FAILED_FIRST.to_string(),
            vec![
                (":state", text("pending")),
                (":now", int(0)),
                (":integration", int(1)),
                (":from", int(0)),
                (":to", int(9)),
                (":limit", int(500)),
            ],
            Some("deliveries_failed_by_time"),
            Allowed::Nothing,
        ),
        (
            "bulk redelivery: next batch",
            deliveries::REDELIVER_FAILED_NEXT.to_string(),
            vec![
                (":state", text("pending")),
                (":now", int(0)),
                (":integration", int(1)),
                (":after_at", int(0)),
                (":after_id", int(0)),
                (":to", int(9)),
                (":limit", int(500)),
            ],
            Some("deliveries_failed_by_time"),
            Allowed::Nothing,
        ),
        (
            "overview: every integration's hours",
            stats::hours_all_sql(),
            vec![("?1", int(0)), ("?2", int(24 * 3_600_000))],
            Some("attempt_hours_by_hour"),
            Allowed::Nothing,
        ),
        (
            "chart: one integration's hours",
            stats::hours_of_sql(),
            vec![("?1", int(0)), ("?2", int(24 * 3_600_000)), ("?3", int(1))],
            None,
            Allowed::Nothing,
        ),
        (
            "chart: every integration's days",
            stats::DAYS_ALL.to_string(),
            vec![("?1", int(0)), ("?2", int(14 * 86_400_000))],
            Some("event_days_by_day"),
            Allowed::Nothing,
        ),
        (
            "chart: one integration's days",
            stats::DAYS_OF.to_string(),
            vec![("?1", int(0)), ("?2", int(14 * 86_400_000)), ("?3", int(1))],
            None,
            Allowed::Nothing,
        ),
        (
            "overview: health and queue per integration",
            stats::HEALTH.to_string(),
            vec![],
            None,
            Allowed::Nothing,
        ),
        (
            "ledger: the head (in every verify)",
            ledger::HEAD_SQL.to_string(),
            vec![],
            None,
            Allowed::Nothing,
        ),
        (
            "verify: the event marked, with its ledger position",
            events::MARK_VERIFIED_SQL.to_string(),
            vec![("?1", text("ev-7")), ("?2", int(1)), ("?3", int(0))],
            None,
            Allowed::Nothing,
        ),
        (
            "ledger: a version's text (in every verify)",
            ledger::TEXT_SQL.to_string(),
            vec![
                ("?1", int(1)),
                ("?2", int(1)),
                ("?3", int(0)),
                ("?4", text("en")),
            ],
            None,
            Allowed::Nothing,
        ),
        (
            "ledger: an event's evidence facts (evidence, certificate, verify-ledger)",
            ledger::SOURCE_SQL.to_string(),
            vec![("?1", int(7))],
            None,
            Allowed::Nothing,
        ),
        (
            "ledger: an event's link and the one before",
            ledger::LINK_OF_SQL.to_string(),
            vec![("?1", int(7))],
            None,
            Allowed::Nothing,
        ),
        (
            "ledger: a verified event by its public id",
            ledger::EVENT_ROW_SQL.to_string(),
            vec![("?1", text("ev-7"))],
            None,
            Allowed::Nothing,
        ),
        (
            "ledger: a page of links for verify-ledger",
            ledger::LINKS_SQL.to_string(),
            vec![("?1", int(100)), ("?2", int(500))],
            None,
            Allowed::Nothing,
        ),
        (
            "recovery at start",
            deliveries::RECOVER_INTERRUPTED.to_string(),
            vec![("?1", int(0))],
            Some("deliveries_leases"),
            Allowed::WalkAndSortInFlight,
        ),
    ];
    for (what, sql, params, index, allowed) in cases {
        check(what, &plan(conn, &sql, &params), index, allowed);
    }
}

#[test]
fn every_list_and_count_walks_an_index_in_order_on_a_new_database() {
    let (_dir, conn) = new_database();
    check_event_lists(&conn);
    check_delivery_history(&conn);
    check_single_statements(&conn);
}

#[test]
fn the_plans_stay_the_same_once_sqlite_has_statistics() {
    let (_dir, conn) = analyzed_database();
    check_event_lists(&conn);
    check_delivery_history(&conn);
    check_single_statements(&conn);
}

/// The checks above can fail: the statement the issue measured (every filter as `?n IS NULL OR`)
/// scans and sorts, and so does a history filter without its index.
#[test]
fn the_check_refuses_a_scan_and_a_sort() {
    let (_dir, conn) = new_database();
    let old = "SELECT e.event_id FROM events e JOIN templates t ON t.id = e.template_id \
               WHERE e.verified_at IS NOT NULL AND (?1 IS NULL OR e.integration_id = ?1) \
               AND (?2 IS NULL OR e.end_user_id = ?2) ORDER BY e.action_at DESC, e.event_id DESC LIMIT 20";
    let lines = plan(&conn, old, &[]);
    let refused = std::panic::catch_unwind(|| check("old", &lines, None, Allowed::Nothing));
    assert!(refused.is_err(), "{lines:?}");
    let lines = plan(
        &conn,
        "SELECT id FROM deliveries WHERE integration_id = 1 AND state = 'in_flight' ORDER BY id DESC",
        &[],
    );
    let refused = std::panic::catch_unwind(|| {
        check(
            "unnamed",
            &lines,
            Some("deliveries_leases"),
            Allowed::WalkAndSortInFlight,
        )
    });
    assert!(refused.is_err(), "{lines:?}");
}

/// Each list statement returns what a plain scan with the same filters returns, in the same order:
/// the shapes are exercised on data, not only planned.
#[test]
fn every_shape_returns_what_the_filters_select() {
    let (_dir, conn) = analyzed_database();
    let mut nonempty = 0;
    for q in event_queries() {
        let got: Vec<String> = events::list_query(&conn, &q, 10_000)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        let mut want: Vec<(i64, String)> = conn
            .prepare(
                "SELECT action_at, event_id, integration_id, template_id, end_user_id, action FROM events \
                 WHERE verified_at IS NOT NULL",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|(at, id, i, t, u, a)| {
                q.integration.is_none_or(|x| x == *i)
                    && q.template_row.is_none_or(|x| x == *t)
                    && q.end_user.as_ref().is_none_or(|x| x == u)
                    && q.action.is_none_or(|x| x.as_str() == a)
                    && q.from.is_none_or(|x| *at >= x.millis())
                    && q.to.is_none_or(|x| *at <= x.millis())
                    && q.cursor.as_ref().is_none_or(|(c_at, c_id)| {
                        (*at, id.as_str()) < (c_at.millis(), c_id.as_str())
                    })
            })
            .map(|(at, id, ..)| (at, id))
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
        assert_eq!(got, want, "{q:?}");
        if !got.is_empty() {
            nonempty += 1;
        }
    }
    assert!(nonempty >= 120, "only {nonempty} of 288 shapes found rows");

    for state in std::iter::once(None).chain(DeliveryState::ALL.iter().copied().map(Some)) {
        for outcome in std::iter::once(None).chain(AttemptOutcome::ALL.iter().copied().map(Some)) {
            for before in [None, Some(3_000)] {
                let got: Vec<i64> = deliveries::list(&conn, 1, state, outcome, before, 10_000)
                    .unwrap()
                    .iter()
                    .map(|d| d.row)
                    .collect();
                let want: Vec<i64> = conn
                    .prepare(
                        "SELECT id FROM deliveries WHERE integration_id = 1 \
                         AND (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR last_outcome = ?2) \
                         AND id < ?3 ORDER BY id DESC",
                    )
                    .unwrap()
                    .query_map(
                        rusqlite::params![state, outcome, before.unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                assert_eq!(
                    got, want,
                    "state={state:?} outcome={outcome:?} before={before:?}"
                );
            }
        }
    }
}
