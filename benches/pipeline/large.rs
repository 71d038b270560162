//! The large-database benchmark of issue #13 (`cargo bench --bench pipeline -- --large`): does the cost
//! of a read grow with the data, and does a bulk change or a backup stall the other writes?
//!
//! For each of two sizes — small (11 000 events, as the issue's reference database) and large (5 M
//! events by default, `--large-scale N`) — it starts the real binary on an empty data directory,
//! creates through the admin API what the reads need (two templates, one of them rare, and three
//! integrations: a big one with 40 % of the events, a paused one with 20 % whose deliveries are held,
//! and one that only writes during the measurements), stops it, and generates the rest straight into
//! the database file: the other integrations, the events, one delivery per verified event (the big
//! integration's half failed, a few cancelled; the paused one's held; the rest succeeded), their
//! attempts, presentations and audit entries, with `INSERT … SELECT` from recursive CTEs in a few big
//! transactions, the tables' indexes dropped first and built again after (as `CREATE INDEX` does it,
//! from sorted keys). The schema is then exactly the binary's own. It starts the binary again and:
//!
//! - times each read of the public and admin APIs (every list with each filter, a page far down by
//!   cursor, counts, history filtered by a rare state, `/metrics`, details, consent status) several
//!   times after a few untimed tries and keeps the median; the report puts the two sizes side by side with their ratio;
//! - runs a steady stream of SDK acts (one end user accepting after another, open loop) and measures
//!   how long they take while the big integration's failed deliveries are redelivered in bulk, while
//!   the big integration is paused (its now pending deliveries held) and while the paused one is
//!   switched back on (its held deliveries released) — the largest delay another write saw;
//! - takes `clicktermd backup` with the server idle and under that stream, and times both.
//!
//! Callbacks point at a receiver that never answers, so the dispatcher keeps its few slots busy and
//! otherwise idle: the delays measured are the bulk changes', not the sending's. Traffic goes to
//! 127.0.0.1 only.

use super::*;

/// The scale of the large-database benchmark.
#[derive(Debug, Clone)]
pub struct Large {
    /// Events of the large database (deliveries and attempts follow from them).
    pub events: usize,
    /// Events of the small database.
    pub small_events: usize,
    /// Integrations in each database (the three the API creates included).
    pub integrations: usize,
    /// Times each read is made; the median is reported.
    pub tries: usize,
    /// SDK acts per second of the write stream.
    pub stream_rate: u32,
}

impl Large {
    pub fn full() -> Large {
        Large {
            events: 5_000_000,
            small_events: 11_000,
            integrations: 1_000,
            tries: 9,
            stream_rate: 50,
        }
    }
}

/// What was generated and what the reads ask for.
struct World {
    events: usize,
    template_common: String,
    template_rare: String,
    big: App,
    paused: App,
    writer: App,
    /// An event of the big integration from the middle of its history, its end user and delivery.
    event_id: String,
    end_user: String,
    delivery_id: String,
    /// A day around that event.
    day: (String, String),
    generation_s: f64,
    db_bytes: u64,
    counts: Value,
}

pub async fn run(o: &Options, large: &Large) -> Result<Value, String> {
    let machine = machine_info();
    let pki = Pki::generate()?;
    let sink = Arc::new(Sink::new());
    let hang = Receiver::start(&pki, &sink, Mode::Hang, Alpn::H2AndHttp1).await?;
    let mut sizes = Vec::new();
    for (name, events) in [("small", large.small_events), ("large", large.events)] {
        let dir = tempfile::Builder::new()
            .prefix(&format!("large-{name}-"))
            .tempdir_in(&o.work_dir)
            .map_err(|e| format!("temporary directory in {}: {e}", o.work_dir.display()))?;
        let ca_file = dir.path().join("receiver-ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).map_err(|e| format!("write CA: {e}"))?;
        eprintln!("pipeline: large: preparing the {name} database ({events} events)");
        let world = prepare(o, large, dir.path(), &ca_file, &hang, events).await?;
        eprintln!(
            "pipeline: large: {name}: generated in {:.1} s, {} MB",
            world.generation_s,
            world.db_bytes / 1_000_000
        );
        sizes.push((name, dir, ca_file, world));
    }
    // Both servers run during the reads, which alternate between them try by try: on a shared
    // machine whose speed drifts, both sizes are then timed under the same conditions.
    let mut servers = Vec::new();
    for (_, dir, ca_file, _) in &sizes {
        servers.push(Server::start(o, dir.path(), ca_file).await?);
    }
    let measured = measure_all(o, large, &servers, &sizes).await;
    let mut stopped = Ok(());
    for server in servers {
        let result = server.stop(Duration::from_secs_f64(o.timeout_secs) + Duration::from_secs(30));
        stopped = stopped.and(result);
    }
    let (reads, mut per_size) = measured?;
    stopped?;
    for ((_, _, _, world), measured) in sizes.iter().zip(per_size.iter_mut()) {
        measured["events"] = json!(world.events);
        measured["generation_s"] = json!(round1(world.generation_s));
        measured["db_bytes"] = json!(world.db_bytes);
        measured["delivery_counts_at_start"] = world.counts.clone();
    }
    let (small, big) = (&per_size[0], &per_size[1]);
    let worst = reads
        .iter()
        .filter_map(|r| r["ratio"].as_f64())
        .fold(0.0, f64::max);
    Ok(json!({
        "benchmark": "clicktermd large database",
        "mode": "large",
        "binary": o.bin.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()),
        "machine": machine,
        "settings": {
            "integrations": large.integrations,
            "tries_per_read": large.tries,
            "write_stream_acts_per_s": large.stream_rate,
            "webhooks.timeout_secs": o.timeout_secs,
            "bulk_batch": "500 deliveries per write job",
        },
        "reads": reads,
        "worst_read_ratio": round3(worst),
        "small": small,
        "large": big,
    }))
}

// ---------------------------------------------------------------------------------------------------
// Generating a database
// ---------------------------------------------------------------------------------------------------

/// The payload of a generated delivery: the size and shape of a real one.
const PAYLOAD: &str = r#"{"eventType":"CLICKWRAP_EVENT_VERIFIED","data":{"clickwrapEventId":"00000000-0000-4000-8000-000000000000","clickwrapTemplateId":"00000000-0000-4000-8000-000000000000","clickwrapTemplateVersion":1,"clickwrapTemplateVersionMinor":0,"endUserId":"user-0","templatePlaceholders":"{\"fullName\":\"Bench User\"}","technicalMetadata":"{\"ip\":\"127.0.0.1\",\"userAgent\":\"clicktermd-bench\"}","actionAt":"2026-01-01T00:00:00.000Z","effectiveAt":"2026-01-01T00:00:00.000Z","clickwrapEventStatus":"ACCEPTED"}}"#;

/// The request headers recorded with a generated attempt.
const HEADERS: &str = r#"{"content-type":"application/json","user-agent":"clicktermd","x-clickterm-signature":"sha256=0000000000000000000000000000000000000000000000000000000000000000","x-clickterm-timestamp":"1767225600"}"#;

async fn prepare(
    o: &Options,
    large: &Large,
    dir: &Path,
    ca_file: &Path,
    hang: &Receiver,
    events: usize,
) -> Result<World, String> {
    // What only the binary should make (credentials, published templates), through the API.
    let server = Server::start(o, dir, ca_file).await?;
    let api = Api::new(server.addr);
    api.set_token(server.admin_token()?);
    let template_common = api.template().await?;
    let template_rare = api.template().await?;
    let callback = hang.url("/hook");
    let big = api.integration("big", &callback, true).await?;
    let paused = api.integration("paused", &callback, false).await?;
    let writer = api.integration("writer", &callback, true).await?;
    let db = server.db_path();
    server.stop(Duration::from_secs(30))?;

    let started = Instant::now();
    let path = db.clone();
    let (b, p, others) = (
        big.id.clone(),
        paused.id.clone(),
        large.integrations.saturating_sub(3),
    );
    let (t1, t2) = (template_common.clone(), template_rare.clone());
    let picked =
        tokio::task::spawn_blocking(move || generate(&path, events, others, (&b, &p), (&t1, &t2)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("generating the database: {e}"))?;
    let generation_s = started.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    let (event_id, end_user, delivery_id, at, counts) = picked;
    let iso = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    };
    Ok(World {
        events,
        template_common,
        template_rare,
        big,
        paused,
        writer,
        event_id,
        end_user,
        delivery_id,
        day: (iso(at - 43_200_000), iso(at + 43_200_000)),
        generation_s,
        db_bytes,
        counts,
    })
}

type Picked = (String, String, String, i64, Value);

/// Fills the database at `path` (made by the binary, server stopped). Returns an event of the big
/// integration from the middle, its end user, its delivery id, its time, and the delivery counts.
fn generate(
    path: &Path,
    events: usize,
    others: usize,
    (big, paused): (&str, &str),
    (common, rare): (&str, &str),
) -> rusqlite::Result<Picked> {
    use rusqlite::params;
    let mut c = rusqlite::Connection::open(path)?;
    // Nothing else has the file open; a crash here only loses the benchmark's own database.
    c.pragma_update(None, "journal_mode", "DELETE")?;
    c.pragma_update(None, "journal_mode", "OFF")?;
    c.pragma_update(None, "synchronous", "OFF")?;
    c.pragma_update(None, "foreign_keys", "OFF")?;
    c.pragma_update(None, "cache_size", -1_048_576)?;
    c.pragma_update(None, "threads", 2)?;
    let id = |c: &rusqlite::Connection, table: &str, key: &str, value: &str| {
        c.query_row(
            &format!("SELECT id FROM {table} WHERE {key} = ?1"),
            [value],
            |r| r.get::<_, i64>(0),
        )
    };
    let (b, p) = (
        id(&c, "integrations", "app_id", big)?,
        id(&c, "integrations", "app_id", paused)?,
    );
    let (t1, t2) = (
        id(&c, "templates", "template_id", common)?,
        id(&c, "templates", "template_id", rare)?,
    );
    // The events span the last 60 days: within the default attempt retention (90 days), so the
    // server's pruning at start has nothing to delete and runs no writes beside the measurements.
    let day = 86_400_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let t0 = now - 60 * day;
    let step = (60 * day / events.max(1) as i64).max(1);
    let n = events as i64;
    let users = (n / 4).max(1);
    let tx = c.transaction()?;
    let indexes: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN ('events', 'deliveries', 'attempts', 'presentations') ORDER BY rowid",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (name, _) in &indexes {
        tx.execute_batch(&format!("DROP INDEX {name}"))?;
    }
    tx.execute(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1)
         INSERT INTO integrations (app_id, name, app_key_digest, signing_secret, status, callback_url,
             webhook_delivery_enabled, created_at)
         SELECT printf('%08x-0000-4000-8000-%012x', i, i), 'Generated ' || i, randomblob(32),
                'whsec_generated', 'ENABLED', NULL, 1, ?2 FROM seq",
        params![others as i64, t0],
    )?;
    let first_other: i64 = tx
        .query_row(
            "SELECT min(id) FROM integrations WHERE name LIKE 'Generated %'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .unwrap_or(b);
    let others = others.max(1) as i64;
    // 40 % of the events are the big integration's, 20 % the paused one's, the rest spread over the
    // others; one in 500 (the big integration's) is on the rare template; 12 % are declined; 1 % never verified.
    tx.execute(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n)
         INSERT INTO events (id, event_id, integration_id, template_id, major, minor, effective_at,
             end_user_id, action, template_placeholders, technical_metadata, language, presented_at,
             action_at, verified_at)
         SELECT i, lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
                    || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
                CASE WHEN i % 10 < 4 THEN :b WHEN i % 10 < 6 THEN :p
                     ELSE :first_other + (i * 7919) % :others END,
                CASE WHEN i % 500 = 3 THEN :t2 ELSE :t1 END, 1, 0, :t0,
                'user-' || (i % :users),
                CASE WHEN (i * 2654435761) % 100 < 12 THEN 'DECLINED' ELSE 'ACCEPTED' END,
                '{\"fullName\":\"Bench User\"}', '{\"ip\":\"127.0.0.1\",\"userAgent\":\"clicktermd-bench\"}',
                'en', :t0 + i * :step - 5000, :t0 + i * :step,
                CASE WHEN i % 100 = 99 THEN NULL ELSE :t0 + i * :step + 1000 END
         FROM (SELECT i, hex(randomblob(16)) AS h FROM seq)",
        rusqlite::named_params! {
            ":n": n, ":b": b, ":p": p, ":first_other": first_other, ":others": others,
            ":t1": t1, ":t2": t2, ":t0": t0, ":users": users, ":step": step,
        },
    )?;
    // One delivery per verified event: the paused integration's held; the big one's half failed
    // (a third of those with HTTP 500, the rest timeouts) and a few cancelled; the rest succeeded,
    // half of them at the second attempt. A succeeded delivery's last outcome is `ok`.
    tx.execute(
        "INSERT INTO deliveries (id, delivery_id, integration_id, event_id, is_test, payload, state,
             attempts, next_attempt_at, lease_until, last_outcome, chain_trigger, created_at, updated_at)
         SELECT id, printf('%08x-%04x-7000-8000-%012x', created / 1000, id % 65536, id), integration_id,
                id, 0, CAST(?1 AS BLOB), state,
                CASE state WHEN 'failed' THEN 4 WHEN 'succeeded' THEN 1 + id % 2 ELSE 0 END,
                CASE state WHEN 'held' THEN created END, NULL,
                CASE state WHEN 'failed' THEN CASE WHEN id % 3 = 0 THEN 'http_status' ELSE 'timeout' END
                           WHEN 'succeeded' THEN 'ok' END,
                'automatic', created, created + 2000
         FROM (SELECT id, integration_id, verified_at AS created,
                      CASE WHEN integration_id = ?2 THEN 'held'
                           WHEN integration_id = ?3 AND id % 10000 = 2 THEN 'cancelled'
                           WHEN integration_id = ?3 AND (id / 10) % 2 = 0 THEN 'failed'
                           ELSE 'succeeded' END AS state
               FROM events WHERE verified_at IS NOT NULL)",
        params![PAYLOAD, p, b],
    )?;
    tx.execute(
        "WITH n(k) AS (VALUES (1), (2), (3), (4))
         INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, url, remote_addr,
             request_headers, response_status, response_body, outcome, detail)
         SELECT d.id, n.k, 'automatic', d.created_at + n.k * 1000, 20, 'https://127.0.0.1:9/hook',
                '127.0.0.1:9', ?1,
                CASE WHEN d.state = 'succeeded' AND n.k = d.attempts THEN 200
                     WHEN d.last_outcome = 'http_status' THEN 500 END,
                CASE WHEN d.state = 'succeeded' AND n.k = d.attempts THEN x'6f6b' END,
                CASE WHEN d.state = 'succeeded' AND n.k = d.attempts THEN 'ok'
                     WHEN d.last_outcome = 'http_status' THEN 'http_status' ELSE 'timeout' END,
                NULL
         FROM deliveries d JOIN n ON n.k <= d.attempts",
        params![HEADERS],
    )?;
    tx.execute(
        "INSERT INTO presentations (integration_id, template_id, major, minor, end_user_id, presented_at)
         SELECT integration_id, template_id, 1, 0, end_user_id, presented_at FROM events WHERE id % 2 = 0",
        [],
    )?;
    tx.execute(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1)
         INSERT INTO audit_log (at, actor, action, target, detail)
         SELECT ?2 + i * 60000, 'admin', 'integration.update', 'generated', 'webhookDeliveryEnabled=true'
         FROM seq",
        params![(n / 1000).max(10), t0],
    )?;
    for (_, sql) in &indexes {
        tx.execute_batch(sql)?;
    }
    tx.commit()?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    let mid = c.query_row(
        "SELECT e.event_id, e.end_user_id, d.delivery_id, e.action_at FROM events e
         JOIN deliveries d ON d.event_id = e.id
         WHERE e.id >= ?1 AND e.integration_id = ?2 AND e.verified_at IS NOT NULL LIMIT 1",
        params![n / 2, b],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let counts: Vec<(i64, i64, i64, i64, i64, i64)> = c
        .prepare("SELECT sum(pending), sum(in_flight), sum(succeeded), sum(failed), sum(held), sum(cancelled) FROM delivery_counts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let attempts: i64 = c.query_row("SELECT max(id) FROM attempts", [], |r| {
        r.get::<_, Option<i64>>(0).map(|v| v.unwrap_or(0))
    })?;
    let (pending, in_flight, succeeded, failed, held, cancelled) = counts[0];
    let counts = json!({
        "pending": pending, "in_flight": in_flight, "succeeded": succeeded, "failed": failed,
        "held": held, "cancelled": cancelled, "attempts": attempts,
    });
    Ok((mid.0, mid.1, mid.2, mid.3, counts))
}

// ---------------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------------

/// The reads of both sizes, interleaved; then each size's bulk changes and backups in turn.
async fn measure_all(
    o: &Options,
    large: &Large,
    servers: &[Server],
    sizes: &[(&str, tempfile::TempDir, PathBuf, World)],
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut apis = Vec::new();
    for server in servers {
        let api = Api::new(server.addr);
        api.set_token(server.admin_token()?);
        apis.push(api);
    }
    let mut cases = Vec::new();
    for (api, (_, _, _, w)) in apis.iter().zip(sizes) {
        cases.push(read_cases(api, large, w).await?);
    }
    let mut reads = Vec::new();
    for (small_case, large_case) in cases[0].iter().zip(&cases[1]) {
        let name = small_case.0.clone();
        let mut times: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        let mut items: [Option<usize>; 2] = [None, None];
        for t in 0..WARM_UP + large.tries {
            for (s, (_, path, app)) in [small_case, large_case].into_iter().enumerate() {
                let (took, body) = timed_get(&apis[s], path, app.as_ref()).await?;
                if t >= WARM_UP {
                    times[s].push(took.as_micros() as u64);
                }
                items[s] = body["items"].as_array().map(Vec::len).or(items[s]);
            }
        }
        for t in &mut times {
            t.sort_unstable();
        }
        let (small_ms, large_ms) = (
            ms(percentile(&times[0], 50.0)),
            ms(percentile(&times[1], 50.0)),
        );
        reads.push(json!({
            "read": name,
            "small_p50_ms": small_ms,
            "large_p50_ms": large_ms,
            "ratio": round3(large_ms / small_ms.max(1e-3)),
            "small_max_ms": ms(times[0].last().copied().unwrap_or(0)),
            "large_max_ms": ms(times[1].last().copied().unwrap_or(0)),
            "small_items": items[0],
            "large_items": items[1],
        }));
    }
    let mut per_size = Vec::new();
    for ((api, server), (name, _, _, w)) in apis.iter().zip(servers).zip(sizes) {
        eprintln!("pipeline: large: {name}: bulk changes and backups");
        let bulk = bulk_writes(api, large, w).await?;
        let backup = backups(o, api, large, server, w).await?;
        per_size.push(json!({"bulk_writes": bulk, "backup": backup}));
    }
    Ok((reads, per_size))
}

/// Untimed tries of each read: the server's read pool holds up to 8 connections, each with its own
/// statement cache and page cache.
const WARM_UP: usize = 8;

/// One timed GET: its duration and its JSON body (`Null` when it is not JSON).
async fn timed_get(api: &Api, path: &str, app: Option<&App>) -> Result<(Duration, Value), String> {
    let token = api.token.lock().unwrap().clone();
    let mut req = Request::get(format!("{}{path}", api.base));
    req = match app {
        Some(app) => req
            .header("x-app-id", &app.id)
            .header("x-app-key", &app.key),
        None => req.header("authorization", format!("Bearer {token}")),
    };
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let res = api
        .client
        .request(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let took = t0.elapsed();
    if !status.is_success() {
        return Err(format!(
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok((took, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Follows `field` (the next-page cursor) for `pages - 1` pages from `path`; the path of page `pages`.
async fn page_path(
    api: &Api,
    path: &str,
    app: Option<&App>,
    cursor_field: &str,
    cursor_param: &str,
    pages: usize,
) -> Result<String, String> {
    let mut at = path.to_string();
    for _ in 1..pages {
        let (_, body) = timed_get(api, &at, app).await?;
        let cursor = match &body[cursor_field] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "{path}: no {cursor_field} ({other}) before page {pages}"
                ));
            }
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        at = format!("{path}{sep}{cursor_param}={}", enc(&cursor));
    }
    Ok(at)
}

/// Every read, by name, with its path and (for the public API) the integration it authenticates as.
async fn read_cases(
    api: &Api,
    large: &Large,
    w: &World,
) -> Result<Vec<(String, String, Option<App>)>, String> {
    let public = "/public-client/v1/clickwrap-events";
    let admin = "/api/v1/events";
    let history = format!("/api/v1/integrations/{}/deliveries", w.big.id);
    let (from, to) = (enc(&w.day.0), enc(&w.day.1));
    // Page 50, or as far as the small database's delivery history goes (50 a page) if it is tiny; the
    // same page on both sizes.
    let page = (large.small_events * 39 / 100 / 50).clamp(2, 50);
    let public_far = page_path(api, public, Some(&w.big), "nextPageCursor", "cursor", page).await?;
    let admin_far = page_path(api, admin, None, "nextPageCursor", "cursor", page).await?;
    let history_far = page_path(api, &history, None, "nextBefore", "before", page).await?;
    let far = |what: &str| format!("{what}: page {page} by cursor");
    let big = || Some(w.big.clone());
    let cases: Vec<(String, String, Option<App>)> = vec![
        ("public events: first page".into(), public.into(), big()),
        (far("public events"), public_far, big()),
        (
            "public events: status DECLINED".into(),
            format!("{public}?clickwrapEventStatus=DECLINED"),
            big(),
        ),
        (
            "public events: rare template".into(),
            format!("{public}?clickwrapTemplateId={}", w.template_rare),
            big(),
        ),
        (
            "public events: end user".into(),
            format!("{public}?endUserId={}", enc(&w.end_user)),
            big(),
        ),
        (
            "public events: one day (from, to)".into(),
            format!("{public}?from={from}&to={to}"),
            big(),
        ),
        (
            "public event detail".into(),
            format!("{public}/{}/details", w.event_id),
            big(),
        ),
        (
            "public consent status of an end user".into(),
            format!("/public-client/v1/clickwraps/{}/status", enc(&w.end_user)),
            big(),
        ),
        (
            "public templates".into(),
            "/public-client/v1/clickwrap-templates".into(),
            big(),
        ),
        ("admin events: first page".into(), admin.into(), None),
        (far("admin events"), admin_far, None),
        (
            "admin events: status DECLINED".into(),
            format!("{admin}?clickwrapEventStatus=DECLINED"),
            None,
        ),
        (
            "admin events: rare template".into(),
            format!("{admin}?clickwrapTemplateId={}", w.template_rare),
            None,
        ),
        (
            "admin events: end user".into(),
            format!("{admin}?endUserId={}", enc(&w.end_user)),
            None,
        ),
        (
            "admin events: one integration".into(),
            format!("{admin}?appId={}", w.big.id),
            None,
        ),
        (
            "admin events: one integration and status".into(),
            format!("{admin}?appId={}&clickwrapEventStatus=DECLINED", w.big.id),
            None,
        ),
        (
            "admin event detail".into(),
            format!("{admin}/{}", w.event_id),
            None,
        ),
        ("delivery history: first page".into(), history.clone(), None),
        (far("delivery history"), history_far, None),
        (
            "delivery history: state cancelled (rare)".into(),
            format!("{history}?state=cancelled"),
            None,
        ),
        (
            "delivery history: state failed".into(),
            format!("{history}?state=failed"),
            None,
        ),
        (
            "delivery history: outcome http_status".into(),
            format!("{history}?outcome=http_status"),
            None,
        ),
        (
            "delivery history: failed with http_status".into(),
            format!("{history}?state=failed&outcome=http_status"),
            None,
        ),
        (
            "delivery history: state succeeded".into(),
            format!("{history}?state=succeeded"),
            None,
        ),
        (
            "delivery counts".into(),
            format!("/api/v1/integrations/{}/delivery-counts", w.big.id),
            None,
        ),
        (
            "delivery detail with attempts".into(),
            format!("/api/v1/deliveries/{}", w.delivery_id),
            None,
        ),
        ("audit log".into(), "/api/v1/audit".into(), None),
        (
            "integrations list".into(),
            "/api/v1/integrations".into(),
            None,
        ),
        ("templates list".into(), "/api/v1/templates".into(), None),
        ("/metrics (queue figures)".into(), "/metrics".into(), None),
    ];
    Ok(cases)
}

/// A steady stream of SDK acts (a new end user accepting each time), open loop at `rate` per second.
struct Stream {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Result<u64, String>)>>,
}

impl Stream {
    fn start(api: &Api, app: &App, template: &str, rate: u32) -> Stream {
        static STREAM: AtomicUsize = AtomicUsize::new(0);
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, client, base) = (stop.clone(), api.client.clone(), api.base.clone());
        let (app, template) = (app.id.clone(), template.to_string());
        let task = tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            let mut i = 0u32;
            while !stop2.load(Ordering::Relaxed) {
                tokio::time::sleep_until(start + interval * i).await;
                i += 1;
                let n = STREAM.fetch_add(1, Ordering::Relaxed);
                let body = json!({"appId": app, "clickwrapTemplateId": template,
                                  "endUserId": format!("stream-user-{n}"), "action": "ACCEPTED"});
                let req = Request::post(format!("{base}/public-client/v1/clickwrap"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .expect("request");
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let outcome = match client.request(req).await {
                        Ok(res) if res.status() == StatusCode::CREATED => {
                            let _ = res.into_body().collect().await;
                            Ok(sent.elapsed().as_micros() as u64)
                        }
                        Ok(res) => Err(format!("SDK act: {}", res.status())),
                        Err(e) => Err(format!("SDK act: {e}")),
                    };
                    (sent, outcome)
                }));
            }
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                if let Ok(r) = t.await {
                    out.push(r);
                }
            }
            out
        });
        Stream { stop, task }
    }

    async fn finish(self) -> Result<Vec<(Instant, Result<u64, String>)>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.map_err(|e| e.to_string())
    }
}

/// The stream's acts sent within `[from, to)`: how many, errors, p50, p99 and max latency.
fn window(acts: &[(Instant, Result<u64, String>)], from: Instant, to: Instant) -> Value {
    let mut lat: Vec<u64> = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for (sent, outcome) in acts.iter().filter(|(s, _)| *s >= from && *s < to) {
        let _ = sent;
        match outcome {
            Ok(us) => lat.push(*us),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.clone());
            }
        }
    }
    lat.sort_unstable();
    json!({
        "acts": lat.len(),
        "errors": errors,
        "first_error": first_error.unwrap_or_default(),
        "p50_ms": ms(percentile(&lat, 50.0)),
        "p99_ms": ms(percentile(&lat, 99.0)),
        "max_ms": ms(lat.last().copied().unwrap_or(0)),
    })
}

async fn counts(api: &Api, app: &App) -> Result<Value, String> {
    api.admin(
        Method::GET,
        &format!("/api/v1/integrations/{}/delivery-counts", app.id),
        Value::Null,
    )
    .await
}

/// Polls `app`'s delivery counts until `state` is at most `left`.
async fn until_count(api: &Api, app: &App, state: &str, left: i64) -> Result<Value, String> {
    let start = Instant::now();
    loop {
        let c = counts(api, app).await?;
        if c[state].as_i64().unwrap_or(i64::MAX) <= left {
            return Ok(c);
        }
        if start.elapsed() > Duration::from_secs(3600) {
            return Err(format!("{state} never fell to {left}: {c}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The three bulk changes, each under the write stream, with the stream's latency before and during.
async fn bulk_writes(api: &Api, large: &Large, w: &World) -> Result<Value, String> {
    let idle = Duration::from_secs(3);
    let stream = Stream::start(api, &w.writer, &w.template_common, large.stream_rate);
    let t_base = Instant::now();
    tokio::time::sleep(idle).await;

    // Redeliver every failed delivery of the big integration (delivery on, receiver hanging).
    let t_redeliver = Instant::now();
    let answer = api
        .admin(
            Method::POST,
            &format!("/api/v1/integrations/{}/redeliver", w.big.id),
            json!({"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}),
        )
        .await?;
    let redelivered = answer["redelivered"].as_i64().unwrap_or(0);
    let t_redelivered = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Pause it: its (now pending) deliveries are held, the first batch with the change.
    let t_pause = Instant::now();
    api.delivery(&w.big, false).await?;
    let paused_counts = until_count(api, &w.big, "pending", 0).await?;
    let t_paused = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Switch the paused integration on: its held deliveries are released.
    let held = counts(api, &w.paused).await?["held"].as_i64().unwrap_or(0);
    let t_resume = Instant::now();
    api.delivery(&w.paused, true).await?;
    let resumed_counts = until_count(api, &w.paused, "held", 0).await?;
    let t_resumed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acts = stream.finish().await?;
    // Leave nothing for the dispatcher to do before the backups.
    api.delivery(&w.paused, false).await?;
    until_count(api, &w.paused, "pending", 0).await?;

    let op = |deliveries: i64, from: Instant, to: Instant| {
        json!({
            "deliveries": deliveries,
            "duration_s": round3(to.duration_since(from).as_secs_f64()),
            "write_stream_during": window(&acts, from, to),
        })
    };
    Ok(json!({
        "write_stream_before": window(&acts, t_base, t_redeliver),
        "redeliver_failed": op(redelivered, t_redeliver, t_redelivered),
        "pause_hold_pending": op(
            paused_counts["held"].as_i64().unwrap_or(0),
            t_pause,
            t_paused
        ),
        "resume_release_held": op(held, t_resume, t_resumed),
        "counts_after_pause": paused_counts,
        "counts_after_resume": resumed_counts,
    }))
}

/// `clicktermd backup` with the server idle, then under the write stream.
async fn backups(
    o: &Options,
    api: &Api,
    large: &Large,
    server: &Server,
    w: &World,
) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for under_load in [false, true] {
        let dest = server
            .data_dir
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("backup-{under_load}.db"));
        let stream = under_load
            .then(|| Stream::start(api, &w.writer, &w.template_common, large.stream_rate));
        if under_load {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (bin, data, path) = (o.bin.clone(), server.data_dir.clone(), dest.clone());
        let began = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            clean_command(&bin)
                .arg("--data-dir")
                .arg(&data)
                .arg("backup")
                .arg(&path)
                .stdin(Stdio::null())
                .output()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("clicktermd backup: {e}"))?;
        let ended = Instant::now();
        let during = match stream {
            Some(s) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let acts = s.finish().await?;
                Some(window(&acts, began, ended))
            }
            None => None,
        };
        if !result.status.success() {
            return Err(format!(
                "clicktermd backup: {}",
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        let bytes = std::fs::metadata(&dest).map_or(0, |m| m.len());
        // A full integrity check of a large copy takes longer than the copy; the events it holds are
        // counted instead (a walk of an index), and the small copy is checked in full.
        let (check, events) = {
            let c = rusqlite::Connection::open(&dest).map_err(|e| e.to_string())?;
            let check: String = if w.events <= 100_000 {
                c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .map_err(|e| e.to_string())?
            } else {
                "not run (large)".into()
            };
            let events: i64 = c
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            (check, events)
        };
        let _ = std::fs::remove_file(&dest);
        let key = if under_load {
            "under_write_stream"
        } else {
            "idle"
        };
        out.insert(
            key.into(),
            json!({
                "duration_s": round3(ended.duration_since(began).as_secs_f64()),
                "bytes": bytes,
                "events_in_copy": events,
                "integrity_check": check,
                "write_stream_during": during,
            }),
        );
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------------

/// The figures that must be present and positive in a large report, as JSON pointers.
pub const FIGURES: &[&str] = &[
    "/worst_read_ratio",
    "/small/bulk_writes/redeliver_failed/deliveries",
    "/large/bulk_writes/redeliver_failed/deliveries",
    "/large/bulk_writes/redeliver_failed/write_stream_during/acts",
    "/large/bulk_writes/pause_hold_pending/deliveries",
    "/large/bulk_writes/resume_release_held/deliveries",
    "/large/bulk_writes/resume_release_held/write_stream_during/acts",
    "/large/backup/idle/duration_s",
    "/large/backup/under_write_stream/duration_s",
    "/large/backup/under_write_stream/events_in_copy",
    "/large/backup/under_write_stream/write_stream_during/acts",
];

pub fn missing_figures(report: &Value) -> Vec<String> {
    let mut missing: Vec<String> = FIGURES
        .iter()
        .filter(|p| {
            !report
                .pointer(p)
                .and_then(Value::as_f64)
                .is_some_and(|v| v > 0.0)
        })
        .map(|p| p.to_string())
        .collect();
    for r in report["reads"].as_array().into_iter().flatten() {
        for k in ["small_p50_ms", "large_p50_ms"] {
            if !r[k].as_f64().is_some_and(|v| v > 0.0) {
                missing.push(format!("{} {k}", r["read"]));
            }
        }
    }
    for size in ["small", "large"] {
        for op in [
            "redeliver_failed",
            "pause_hold_pending",
            "resume_release_held",
        ] {
            if report[size]["bulk_writes"][op]["write_stream_during"]["errors"] != 0 {
                missing.push(format!("{size} {op}: SDK acts failed"));
            }
        }
    }
    missing
}

/// The report as tables: each read on both sizes with the ratio, then the bulk changes and backups.
pub fn table(r: &Value) -> String {
    let mut out = format!(
        "clicktermd large-database benchmark ({} cores, {}): small {} events, large {} events\n",
        r["machine"]["nproc"],
        r["machine"]["cpu_model"].as_str().unwrap_or("?"),
        r["small"]["events"],
        r["large"]["events"],
    );
    let w0 = r["reads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["read"].as_str().map(str::len))
        .max()
        .unwrap_or(10);
    out.push_str(&format!(
        "{:w0$}  {:>10}  {:>10}  {:>7}\n",
        "read (p50 ms)", "small", "large", "ratio"
    ));
    for x in r["reads"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:w0$}  {:>10}  {:>10}  {:>7}\n",
            x["read"].as_str().unwrap_or(""),
            x["small_p50_ms"],
            x["large_p50_ms"],
            x["ratio"]
        ));
    }
    out.push_str(&format!("worst ratio {}\n", r["worst_read_ratio"]));
    for size in ["small", "large"] {
        let b = &r[size]["bulk_writes"];
        out.push_str(&format!(
            "{size}: SDK acts before: p99 {} ms, max {} ms\n",
            b["write_stream_before"]["p99_ms"], b["write_stream_before"]["max_ms"]
        ));
        for (op, label) in [
            ("redeliver_failed", "bulk redeliver"),
            ("pause_hold_pending", "pause (hold)"),
            ("resume_release_held", "resume (release)"),
        ] {
            let x = &b[op];
            out.push_str(&format!(
                "{size}: {label}: {} deliveries in {} s; SDK acts during: {} acts, p99 {} ms, max {} ms\n",
                x["deliveries"],
                x["duration_s"],
                x["write_stream_during"]["acts"],
                x["write_stream_during"]["p99_ms"],
                x["write_stream_during"]["max_ms"],
            ));
        }
        let k = &r[size]["backup"];
        out.push_str(&format!(
            "{size}: backup idle {} s; under the write stream {} s ({} acts during, max {} ms); {} bytes\n",
            k["idle"]["duration_s"],
            k["under_write_stream"]["duration_s"],
            k["under_write_stream"]["write_stream_during"]["acts"],
            k["under_write_stream"]["write_stream_during"]["max_ms"],
            k["under_write_stream"]["bytes"],
        ));
    }
    out
}
