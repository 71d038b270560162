//! The end-to-end benchmark of SPEC §10 and issue #7, shared by `benches/pipeline.rs` (the real release
//! binary, full scale) and `tests/e2e/bench_quick.rs` (the debug binary, quick mode, as a smoke test).
//!
//! It starts the real `clicktermd` binary as a child process with a temporary data directory (under
//! cargo's `target/tmp`, so on the project's disk, never a tmpfs) and loopback-only settings: it listens on
//! `127.0.0.1`, may deliver to `127.0.0.1/32` only (`allow_private_cidrs`), trusts the harness's own CA
//! (`extra_ca_file`), and its DNS servers point at a closed loopback port because every callback URL is an
//! IP literal. Beside it, in this process, run TLS receivers (tokio-rustls + hyper, HTTP/1.1 keep-alive and
//! h2) that answer 200 and record arrival times, and the load generators (hyper clients). A Python receiver
//! would be the bottleneck; this one costs a few microseconds per webhook.
//!
//! Each scenario creates its events through the SDK endpoint (`POST /public-client/v1/clickwrap`) and
//! verifies them through `POST /public-client/v1/clickwrap/verify`, as a customer's frontend and backend
//! would. Throughput of the dispatcher is measured by verifying with delivery switched off (the deliveries
//! are written in the verify transaction and held), then switching it on: the held backlog is released at
//! once and the time until the last webhook arrives is the dispatcher's own throughput, not the verify
//! load's. Latency from verify to arrival is measured open-loop at a fixed rate with delivery on.
//!
//! Nothing is hard-coded: every figure comes from clocks and `/proc` during the run. Traffic goes to
//! 127.0.0.1 only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

#[path = "large.rs"]
pub mod large;

/// The tests' PostgreSQL cluster, started here with its default durability
/// ([`postgres::Cluster::start_durable`]) for `--backend postgres`.
#[path = "../../tests/e2e/common/postgres.rs"]
#[allow(dead_code)]
// In the test binaries the harness's copy is a second one beside `common::postgres`, on purpose: the
// benchmark's cluster is its own, durable, and stopped with its run.
#[allow(clippy::duplicate_mod)]
mod postgres;

/// How long any single step may take before the run is abandoned.
const STEP_DEADLINE: Duration = Duration::from_secs(120);

/// What to run and at what scale.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `clicktermd` binary to start.
    pub bin: PathBuf,
    /// Where the temporary data directory is created (on the disk being measured).
    pub work_dir: PathBuf,
    /// `quick` or `full`, for the report.
    pub mode: &'static str,
    /// Concurrent clients of the closed-loop phases (SDK act, verify).
    pub concurrency: usize,
    /// Events verified in the verify phase; they are then the one-receiver (h2) delivery backlog.
    pub verify_events: usize,
    /// Most time the verify phase may take; it stops early when its events run out.
    pub verify_max_secs: f64,
    /// Delivery backlog for the HTTP/1.1-only receiver.
    pub http1_events: usize,
    /// Receivers (integrations, ports) of the fan-out phase, and events per receiver.
    pub receivers: usize,
    pub events_per_receiver: usize,
    /// Healthy integrations in the isolation phase, and how long their backlog should take to drain
    /// (sized from the measured one-receiver rate, so the hung endpoint overlaps the whole drain).
    pub healthy_integrations: usize,
    pub isolation_drain_secs: f64,
    /// Cap on the isolation backlog, per run.
    pub isolation_max_events: usize,
    /// The server's `webhooks.timeout_secs` (the hung endpoint holds each attempt this long).
    pub timeout_secs: f64,
    /// Open-loop verify rate and duration of the latency phase.
    pub latency_rate: u32,
    pub latency_secs: f64,
    /// `--large`: run the large-database benchmark (issue #13) instead, at this scale.
    pub large: Option<large::Large>,
    /// The store the nodes run on (`--backend sqlite|postgres`).
    pub backend: Backend,
    /// `clicktermd serve` processes on the one database (`--nodes N`; more than one only on PostgreSQL).
    pub nodes: usize,
    /// `--compare`: the pipeline three times back to back (SQLite 1 node, PostgreSQL 1 node,
    /// PostgreSQL 2 nodes), reported side by side.
    pub compare: bool,
    /// `--pg-statements FILE`: PostgreSQL counts every statement (`pg_stat_statements`), and the
    /// counts of the measured phases are written to FILE as JSON, the costliest first.
    pub pg_statements: Option<PathBuf>,
}

/// The store of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What `--compare` runs, in this order.
pub const COMPARED: &[(Backend, usize)] = &[
    (Backend::Sqlite, 1),
    (Backend::Postgres, 1),
    (Backend::Postgres, 2),
];

impl Options {
    /// Full scale: the figures the README quotes (about three minutes on 2 cores).
    pub fn full(bin: PathBuf, work_dir: PathBuf) -> Options {
        Options {
            bin,
            work_dir,
            mode: "full",
            concurrency: 64,
            verify_events: 40_000,
            verify_max_secs: 30.0,
            http1_events: 20_000,
            receivers: 100,
            events_per_receiver: 200,
            healthy_integrations: 4,
            isolation_drain_secs: 4.0,
            isolation_max_events: 60_000,
            timeout_secs: 2.0,
            latency_rate: 1000,
            latency_secs: 10.0,
            large: None,
            backend: Backend::Sqlite,
            nodes: 1,
            compare: false,
            pg_statements: None,
        }
    }

    /// Quick mode: every figure, at a scale that finishes in seconds even against a debug build.
    pub fn quick(bin: PathBuf, work_dir: PathBuf) -> Options {
        Options {
            mode: "quick",
            verify_events: 1_500,
            verify_max_secs: 10.0,
            http1_events: 500,
            events_per_receiver: 5,
            isolation_drain_secs: 1.0,
            isolation_max_events: 1_000,
            timeout_secs: 1.0,
            latency_rate: 200,
            latency_secs: 2.0,
            ..Options::full(bin, work_dir)
        }
    }

    /// Applies `--quick`, `--bin PATH`, `--events N`, `--concurrency N`, `--receivers N`,
    /// `--per-receiver N`, `--rate N`, `--duration SECS` (latency phase), `--drain SECS` (isolation),
    /// `--timeout SECS` and `--verify-max SECS`; and for the large-database benchmark `--large`,
    /// `--large-scale N` (events of the large database, implies `--large`), `--large-small N` (of the
    /// small one), `--large-integrations N`, `--large-tries N` and `--large-stream N` (SDK acts per
    /// second during the bulk changes and the backup); `--backend sqlite|postgres`, `--nodes N` and
    /// `--compare`, `--pg-statements FILE`. Unknown arguments (cargo passes `--bench`) are ignored.
    pub fn from_args(
        args: &[String],
        default_bin: PathBuf,
        work_dir: PathBuf,
    ) -> Result<Options, String> {
        let mut o = if args.iter().any(|a| a == "--quick") {
            Options::quick(default_bin, work_dir)
        } else {
            Options::full(default_bin, work_dir)
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
                v.parse()
                    .map_err(|_| format!("{name}: {v:?} is not a number"))
            }
            match a.as_str() {
                "--bin" => o.bin = PathBuf::from(value(a)?),
                "--events" => o.verify_events = num(a, value(a)?)?,
                "--http1-events" => o.http1_events = num(a, value(a)?)?,
                "--concurrency" => o.concurrency = num(a, value(a)?)?,
                "--receivers" => o.receivers = num(a, value(a)?)?,
                "--per-receiver" => o.events_per_receiver = num(a, value(a)?)?,
                "--rate" => o.latency_rate = num(a, value(a)?)?,
                "--duration" => o.latency_secs = num(a, value(a)?)?,
                "--drain" => o.isolation_drain_secs = num(a, value(a)?)?,
                "--timeout" => o.timeout_secs = num(a, value(a)?)?,
                "--verify-max" => o.verify_max_secs = num(a, value(a)?)?,
                "--backend" => {
                    o.backend = match value(a)?.as_str() {
                        "sqlite" => Backend::Sqlite,
                        "postgres" => Backend::Postgres,
                        other => {
                            return Err(format!("--backend: {other:?} is not sqlite or postgres"));
                        }
                    }
                }
                "--nodes" => o.nodes = num(a, value(a)?)?,
                "--compare" => o.compare = true,
                "--pg-statements" => o.pg_statements = Some(PathBuf::from(value(a)?)),
                "--large" => {
                    o.large.get_or_insert_with(large::Large::full);
                }
                "--large-scale" => {
                    o.large.get_or_insert_with(large::Large::full).events = num(a, value(a)?)?
                }
                "--large-small" => {
                    o.large.get_or_insert_with(large::Large::full).small_events = num(a, value(a)?)?
                }
                "--large-integrations" => {
                    o.large.get_or_insert_with(large::Large::full).integrations = num(a, value(a)?)?
                }
                "--large-tries" => {
                    o.large.get_or_insert_with(large::Large::full).tries = num(a, value(a)?)?
                }
                "--large-stream" => {
                    o.large.get_or_insert_with(large::Large::full).stream_rate = num(a, value(a)?)?
                }
                _ => {}
            }
        }
        if o.concurrency == 0 || o.verify_events == 0 || o.receivers == 0 || o.latency_rate == 0 {
            return Err("--concurrency, --events, --receivers and --rate must be positive".into());
        }
        if o.nodes == 0 || (o.nodes > 1 && o.backend != Backend::Postgres) {
            return Err(
                "--nodes must be positive, and more than 1 only with --backend postgres".into(),
            );
        }
        if o.compare && (o.large.is_some() || o.nodes != 1 || o.backend != Backend::Sqlite) {
            return Err(
                "--compare chooses the backends and nodes itself, and is not --large".into(),
            );
        }
        if o.large.is_some() && o.backend != Backend::Sqlite {
            return Err("--large measures the SQLite store only".into());
        }
        if let Some(l) = &o.large {
            o.mode = "large";
            if l.events == 0 || l.small_events == 0 || l.tries == 0 || l.integrations < 3 {
                return Err(
                    "--large-scale, --large-small and --large-tries must be positive, \
                            --large-integrations at least 3"
                        .into(),
                );
            }
        }
        Ok(o)
    }
}

/// Runs every phase and returns the JSON report. Blocking: it makes its own runtime.
pub fn run(options: &Options) -> Result<Value, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    match &options.large {
        Some(large) => runtime.block_on(large::run(options, large)),
        None if options.compare => runtime.block_on(compare(options)),
        None => runtime.block_on(run_async(options)),
    }
}

/// `--compare`: each configuration of [`COMPARED`] in turn, each with a store and nodes of its own.
async fn compare(o: &Options) -> Result<Value, String> {
    let mut runs = Vec::new();
    for &(backend, nodes) in COMPARED {
        let one = Options {
            backend,
            nodes,
            compare: false,
            ..o.clone()
        };
        eprintln!(
            "pipeline: --compare: {} with {nodes} node(s)",
            backend.as_str()
        );
        // A configuration that fails is reported as such, and the others still run: its figures are
        // then missing, so the run exits non-zero.
        runs.push(run_async(&one).await.unwrap_or_else(|e| {
            eprintln!(
                "pipeline: {} with {nodes} node(s) failed: {e}",
                backend.as_str()
            );
            json!({"backend": backend.as_str(), "nodes": nodes, "error": e})
        }));
    }
    Ok(json!({
        "benchmark": "clicktermd pipeline",
        "mode": "compare",
        "scale": o.mode,
        "machine": machine_info(),
        "runs": runs,
    }))
}

async fn run_async(o: &Options) -> Result<Value, String> {
    let machine = machine_info();
    let pki = Pki::generate()?;
    let dir = tempfile::Builder::new()
        .prefix("pipeline-")
        .tempdir_in(&o.work_dir)
        .map_err(|e| format!("temporary directory in {}: {e}", o.work_dir.display()))?;
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).map_err(|e| format!("write CA: {e}"))?;

    let sink = Arc::new(Sink::new());
    let db = Db::start(o, dir.path()).await?;
    let result = run_on(o, &machine, &pki, &sink, &db, dir.path(), &ca_file).await;
    db.stop();
    result
}

/// Starts the nodes on `db`, measures, stops them.
async fn run_on(
    o: &Options,
    machine: &Value,
    pki: &Pki,
    sink: &Arc<Sink>,
    db: &Db,
    dir: &Path,
    ca_file: &Path,
) -> Result<Value, String> {
    let mut servers = Vec::with_capacity(o.nodes);
    for node in 0..o.nodes {
        servers.push(Server::start_node(o, dir, ca_file, node, db.env()).await?);
    }
    if o.pg_statements.is_some() {
        db.statements_reset().await?;
    }
    match measure(o, machine, pki, sink, &servers, db).await {
        Ok(mut report) => {
            if let Some(file) = &o.pg_statements {
                let statements = db.statements().await?;
                std::fs::write(file, serde_json::to_vec_pretty(&statements).expect("JSON"))
                    .map_err(|e| format!("write {}: {e}", file.display()))?;
            }
            let outcomes = db.attempt_outcomes().await?;
            let size_at_exit = db.size().await?;
            let grace = Duration::from_secs_f64(o.timeout_secs) + Duration::from_secs(15);
            for server in servers {
                server.stop(grace)?;
            }
            match db {
                Db::Sqlite(path) => {
                    report["server"]["db_file_bytes_at_exit"] =
                        json!(std::fs::metadata(path).map_or(0, |m| m.len()))
                }
                Db::Postgres { .. } => {
                    report["postgres"]["pg_database_size_at_exit"] = json!(size_at_exit)
                }
            }
            report["attempt_outcomes"] = outcomes;
            Ok(report)
        }
        Err(e) => Err(format!(
            "{e}\nattempt outcomes: {}\nlast lines of the servers' logs:\n{}",
            db.attempt_outcomes().await.unwrap_or_else(|e| json!(e)),
            servers
                .iter()
                .map(|s| tail(&s.stderr))
                .collect::<Vec<_>>()
                .join("\n--- next node ---\n")
        )),
    }
}

async fn measure(
    o: &Options,
    machine: &Value,
    pki: &Pki,
    sink: &Arc<Sink>,
    servers: &[Server],
    db: &Db,
) -> Result<Value, String> {
    let server = &servers[0];
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let api = Api::for_nodes(&addrs);
    let meter = Meter {
        nodes: servers.iter().map(|s| s.pid).collect(),
        postmaster: db.postmaster()?,
    };
    let harness_cpu_start = cpu_seconds("self")?;

    // Idle: started, migrated, nothing asked of it yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_kb = meter.rss_kb("VmRSS")?.0;
    let anon = AnonPeak::start(meter.nodes.clone());

    // Admin setup goes to the first node; the token is minted against the same store.
    let token = server.admin_token()?;
    api.set_token(token);
    let template = api.template().await?;

    // --- verify at 64 clients, then the held backlog to one h2 receiver -------------------------------
    let main_rx = Receiver::start(pki, sink, Mode::Ok, Alpn::H2AndHttp1).await?;
    let main_app = api
        .integration("main", &main_rx.url("/hook"), false)
        .await?;
    let db_before = db.size().await?;
    let cpu_act_start = meter.cpu()?;
    let (act, main_sigs) = api
        .act_many(
            &template,
            std::slice::from_ref(&main_app),
            o.verify_events,
            o.concurrency,
        )
        .await?;
    let (cpu_verify_start, disk_verify_start) = (meter.cpu()?, meter.disk()?);
    let writer_verify_start = meter.sqlite_writer_cpu();
    let verify = api
        .verify_closed(
            &main_sigs,
            o.concurrency,
            Duration::from_secs_f64(o.verify_max_secs),
        )
        .await?;
    let verified_main = verify.ok;
    let (cpu_verify_end, disk_verify_end) = (meter.cpu()?, meter.disk()?);
    let writer_verify = meter
        .sqlite_writer_cpu()
        .zip(writer_verify_start)
        .map(|(end, start)| end - start);
    let one_h2 = drain(&api, sink, &[&main_app], &[main_rx.id], verified_main).await?;
    let (cpu_deliver_end, disk_deliver_end) = (meter.cpu()?, meter.disk()?);
    let db_after = db.size().await?;

    // --- the same backlog shape to an HTTP/1.1-only receiver ------------------------------------------
    let h1_rx = Receiver::start(pki, sink, Mode::Ok, Alpn::Http1Only).await?;
    let h1_app = api.integration("http1", &h1_rx.url("/hook"), false).await?;
    let (_, h1_sigs) = api
        .act_many(
            &template,
            std::slice::from_ref(&h1_app),
            o.http1_events,
            o.concurrency,
        )
        .await?;
    let h1_verified = api
        .verify_closed(&h1_sigs, o.concurrency, STEP_DEADLINE)
        .await?
        .ok;
    let one_h1 = drain(&api, sink, &[&h1_app], &[h1_rx.id], h1_verified).await?;

    // --- fan-out: one integration per receiver, each on its own port ----------------------------------
    let mut fan_rx = Vec::with_capacity(o.receivers);
    let mut fan_apps = Vec::with_capacity(o.receivers);
    for i in 0..o.receivers {
        let rx = Receiver::start(pki, sink, Mode::Ok, Alpn::H2AndHttp1).await?;
        fan_apps.push(
            api.integration(&format!("fan-{i}"), &rx.url("/hook"), false)
                .await?,
        );
        fan_rx.push(rx);
    }
    let (_, fan_sigs) = api
        .act_many(
            &template,
            &fan_apps,
            o.receivers * o.events_per_receiver,
            o.concurrency,
        )
        .await?;
    let fan_verified = api
        .verify_closed(&fan_sigs, o.concurrency, STEP_DEADLINE)
        .await?
        .ok;
    let fan_refs: Vec<&App> = fan_apps.iter().collect();
    let fan_ids: Vec<usize> = fan_rx.iter().map(|r| r.id).collect();
    let fan = drain(&api, sink, &fan_refs, &fan_ids, fan_verified).await?;

    // --- isolation: healthy integrations with and without a hung one ----------------------------------
    let isolation = isolation(o, &api, pki, sink, &template, one_h2.per_s).await?;

    // --- verify → arrival latency, open loop at a fixed rate, delivery on ------------------------------
    let lat_rx = Receiver::start(pki, sink, Mode::Ok, Alpn::H2AndHttp1).await?;
    let lat_app = api
        .integration("latency", &lat_rx.url("/hook"), true)
        .await?;
    let lat_n = ((o.latency_rate as f64) * o.latency_secs).round().max(1.0) as usize;
    let (_, lat_sigs) = api
        .act_many(
            &template,
            std::slice::from_ref(&lat_app),
            lat_n,
            o.concurrency,
        )
        .await?;
    let latency = api
        .latency_open_loop(sink, &lat_sigs, o.latency_rate)
        .await?;

    let (peak_rss_kb, peak_rss_sum_kb) = meter.rss_kb("VmHWM")?;
    let peak_anon_kb = anon.stop();
    let rss_after_kb = meter.rss_kb("VmRSS")?.0;
    let cpu_total = meter.cpu()?;
    let harness_cpu = cpu_seconds("self")? - harness_cpu_start;
    let total_events = sink.total();

    let per_event_ms = |cpu: f64, n: usize| round3(cpu * 1000.0 / n.max(1) as f64);
    let per_event_bytes = |bytes: u64| (bytes as f64 / verified_main.max(1) as f64).round();
    let verify_deliver_cpu = cpu_deliver_end - cpu_verify_start;
    let verify_cpu = cpu_verify_end - cpu_verify_start;
    let deliver_cpu = cpu_deliver_end - cpu_verify_end;
    let verify_disk = disk_verify_end - disk_verify_start;
    let deliver_disk = disk_deliver_end - disk_verify_end;
    let mut settings = json!({
        "concurrency": o.concurrency,
        "webhooks.timeout_secs": o.timeout_secs,
        "webhooks.retry_base_secs": 0.5,
        "webhooks.retry_cap_secs": 2,
        "log.level": "info",
        "transport": "loopback 127.0.0.1; API over HTTP/1.1 keep-alive; webhooks over TLS 1.3",
    });
    match db {
        Db::Sqlite(_) => settings["storage.synchronous"] = json!("full"),
        Db::Postgres { .. } => {
            settings["storage.backend"] = json!("postgres");
            settings["storage.postgres_pool_size"] = json!("16 (default), per node");
            settings["load"] =
                json!("SDK acts and verifies round-robin over the nodes; admin calls to the first");
        }
    }
    let mut report = json!({
        "benchmark": "clicktermd pipeline",
        "mode": o.mode,
        "backend": o.backend.as_str(),
        "nodes": o.nodes,
        // `release` or `debug`: the directory cargo built the binary into.
        "binary": o.bin.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()),
        "machine": machine,
        "settings": settings,
        "sdk_act": act.json(o.concurrency),
        "verify": verify.json(o.concurrency),
        "deliveries_one_receiver_h2": one_h2.json(1, "h2"),
        "deliveries_one_receiver_http1": one_h1.json(1, "http/1.1"),
        "deliveries_fanout": fan.json(o.receivers, "h2"),
        "isolation": isolation,
        "verify_to_arrival": latency,
        // The clicktermd nodes (with PostgreSQL, its processes too where a figure says so). RSS is
        // the largest node's; CPU and disk figures add every node and, on PostgreSQL, the postmaster
        // and all its children (the split is in `postgres`).
        "server": {
            "idle_rss_mb": round1(idle_rss_kb as f64 / 1024.0),
            "peak_rss_mb": round1(peak_rss_kb as f64 / 1024.0),
            "peak_anon_rss_mb": round1(peak_anon_kb as f64 / 1024.0),
            "peak_rss_mb_nodes_total": round1(peak_rss_sum_kb as f64 / 1024.0),
            "rss_after_load_mb": round1(rss_after_kb as f64 / 1024.0),
            "cpu_ms_per_event_verify_and_deliver": per_event_ms(verify_deliver_cpu.total(), verified_main),
            "cpu_ms_per_event_verify_and_deliver_nodes":
                per_event_ms(verify_deliver_cpu.nodes, verified_main),
            "cpu_ms_per_event_act_verify_deliver":
                per_event_ms((cpu_deliver_end - cpu_act_start).total(), verified_main),
            // The two halves of the figure above: the verify phase, then the drain to one receiver.
            "cpu_ms_per_verify": per_event_ms(verify_cpu.total(), verified_main),
            "cpu_ms_per_delivery": per_event_ms(deliver_cpu.total(), verified_main),
            // Bytes written towards the disk (/proc/PID/io write_bytes: the log, and the checkpoints
            // into the database file; on PostgreSQL its WAL and data files), per event of each phase;
            // they do not depend on the disk's speed, so they compare across machines where the
            // throughput figures do not.
            "disk_write_bytes_per_verify": per_event_bytes(verify_disk.total()),
            "disk_write_bytes_per_delivery": per_event_bytes(deliver_disk.total()),
            "cpu_seconds_total": round3(cpu_total.total()),
            // SQLite: pages in use; PostgreSQL: pg_database_size.
            "db_bytes_per_10k_events": ((db_after.saturating_sub(db_before)) as f64
                / verified_main.max(1) as f64 * 10_000.0).round(),
            "webhooks_received_total": total_events,
        },
        "harness_cpu_seconds": round3(harness_cpu),
    });
    if let Some(cpu) = writer_verify {
        // Of the verify phase's CPU, the SQLite writer thread's: the one thread every durable verify
        // passes through, so the figure that bounds their rate (PostgreSQL has no such thread).
        report["server"]["writer_cpu_ms_per_verify"] = json!(per_event_ms(cpu, verified_main));
    }
    if let Db::Postgres { .. } = db {
        // PostgreSQL's own share of the figures above, and what it says of its settings.
        let mut pg = db.settings().await?;
        pg["cpu_ms_per_event_verify_and_deliver"] =
            json!(per_event_ms(verify_deliver_cpu.postgres, verified_main));
        pg["cpu_ms_per_verify"] = json!(per_event_ms(verify_cpu.postgres, verified_main));
        pg["cpu_ms_per_delivery"] = json!(per_event_ms(deliver_cpu.postgres, verified_main));
        pg["cpu_seconds_total"] = json!(round3(cpu_total.postgres));
        pg["disk_write_bytes_per_verify"] = json!(per_event_bytes(verify_disk.postgres));
        pg["disk_write_bytes_per_delivery"] = json!(per_event_bytes(deliver_disk.postgres));
        // Proportional set sizes added up: shared buffers counted once, not once per backend.
        pg["pss_mb_after_load"] = json!(round1(meter.postgres_pss_kb()? as f64 / 1024.0));
        report["postgres"] = pg;
    }
    Ok(report)
}

/// Deliveries/s of healthy integrations without, then with, a hung integration beside them.
async fn isolation(
    o: &Options,
    api: &Api,
    pki: &Pki,
    sink: &Arc<Sink>,
    template: &str,
    one_rate: f64,
) -> Result<Value, String> {
    let n = o.healthy_integrations;
    let mut rx = Vec::new();
    let mut apps = Vec::new();
    for i in 0..n {
        let r = Receiver::start(pki, sink, Mode::Ok, Alpn::H2AndHttp1).await?;
        apps.push(
            api.integration(&format!("healthy-{i}"), &r.url("/hook"), false)
                .await?,
        );
        rx.push(r);
    }
    let hung_rx = Receiver::start(pki, sink, Mode::Hang, Alpn::H2AndHttp1).await?;
    let hung_app = api
        .integration("hung", &hung_rx.url("/hook"), false)
        .await?;
    // Large enough that the drain lasts about `isolation_drain_secs` if each healthy integration goes
    // at the one-receiver rate.
    let backlog = ((one_rate * n as f64 * o.isolation_drain_secs) as usize)
        .clamp(n * 50, o.isolation_max_events)
        .div_ceil(n)
        * n;
    let hung_backlog = 200usize;
    let (_, base_sigs) = api
        .act_many(template, &apps, backlog, o.concurrency)
        .await?;
    let (_, with_sigs) = api
        .act_many(template, &apps, backlog, o.concurrency)
        .await?;
    let (_, after_sigs) = api
        .act_many(template, &apps, backlog, o.concurrency)
        .await?;
    let (_, hung_sigs) = api
        .act_many(
            template,
            std::slice::from_ref(&hung_app),
            hung_backlog,
            o.concurrency,
        )
        .await?;
    let refs: Vec<&App> = apps.iter().collect();
    let ids: Vec<usize> = rx.iter().map(|r| r.id).collect();

    let base_n = api
        .verify_closed(&base_sigs, o.concurrency, STEP_DEADLINE)
        .await?
        .ok;
    let baseline = drain(api, sink, &refs, &ids, base_n).await?;

    for app in &apps {
        api.delivery(app, false).await?;
    }
    let with_n = api
        .verify_closed(&with_sigs, o.concurrency, STEP_DEADLINE)
        .await?
        .ok;
    api.verify_closed(&hung_sigs, o.concurrency, STEP_DEADLINE)
        .await?;
    // The hung endpoint first, until it holds its full share of attempts, then the healthy backlog.
    api.delivery(&hung_app, true).await?;
    let start = Instant::now();
    while sink.count(hung_rx.id) < 16.min(hung_backlog) as u64 {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the hung receiver never saw its attempts".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hung_before = sink.count(hung_rx.id);
    let with_hung = drain(api, sink, &refs, &ids, with_n).await?;
    let hung_during = sink.count(hung_rx.id);

    // The baseline again, after the hung endpoint has been switched off: the ratio is taken against
    // the mean of the runs before and after, so a drift of the machine (or of the growing database)
    // over the phase is not counted as the hung endpoint's doing.
    api.delivery(&hung_app, false).await?;
    for app in &apps {
        api.delivery(app, false).await?;
    }
    let after_n = api
        .verify_closed(&after_sigs, o.concurrency, STEP_DEADLINE)
        .await?
        .ok;
    let baseline_after = drain(api, sink, &refs, &ids, after_n).await?;
    let alone = (baseline.per_s + baseline_after.per_s) / 2.0;
    Ok(json!({
        "healthy_integrations": n,
        "backlog_per_run": backlog,
        "hung_timeout_s": o.timeout_secs,
        "baseline_deliveries_per_s": round1(baseline.per_s),
        "baseline_duration_s": round3(baseline.secs),
        "baseline_after_deliveries_per_s": round1(baseline_after.per_s),
        "baseline_after_duration_s": round3(baseline_after.secs),
        "alone_deliveries_per_s": round1(alone),
        "with_hung_deliveries_per_s": round1(with_hung.per_s),
        "with_hung_duration_s": round3(with_hung.secs),
        "ratio": round3(with_hung.per_s / alone),
        "hung_attempts_started_before": hung_before,
        "hung_attempts_seen_during": hung_during,
    }))
}

// ---------------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------------

struct Server {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    data_dir: PathBuf,
    bin: PathBuf,
    stderr: PathBuf,
    /// The `CLICKTERMD_STORAGE__*` variables of its store (none for SQLite), also given to the CLI.
    store_env: Vec<(&'static str, String)>,
}

impl Server {
    /// Starts the binary on SQLite in `dir/data`.
    async fn start(o: &Options, dir: &Path, ca_file: &Path) -> Result<Server, String> {
        Server::start_node(o, dir, ca_file, 0, Vec::new()).await
    }

    /// Starts node `node` (its data directory `dir/data`, `dir/data-1` …) with loopback-only
    /// settings and `store_env`; retries on another port if the one picked was taken in the meantime.
    async fn start_node(
        o: &Options,
        dir: &Path,
        ca_file: &Path,
        node: usize,
        store_env: Vec<(&'static str, String)>,
    ) -> Result<Server, String> {
        if !o.bin.is_file() {
            return Err(format!(
                "no clicktermd binary at {} (build it first)",
                o.bin.display()
            ));
        }
        let (data_dir, stderr) = match node {
            0 => (dir.join("data"), dir.join("server.log")),
            n => (
                dir.join(format!("data-{n}")),
                dir.join(format!("server-{n}.log")),
            ),
        };
        let mut last = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("bind 127.0.0.1:0: {e}"))?
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = std::fs::File::create(&stderr).map_err(|e| format!("server log: {e}"))?;
            let mut cmd = clean_command(&o.bin);
            cmd.arg("serve")
                .env("CLICKTERMD_SERVER__LISTEN", addr.to_string())
                .env("CLICKTERMD_STORAGE__DATA_DIR", &data_dir)
                .env(
                    "CLICKTERMD_WEBHOOKS__ALLOW_PRIVATE_CIDRS",
                    "[\"127.0.0.1/32\"]",
                )
                .env("CLICKTERMD_WEBHOOKS__EXTRA_CA_FILE", ca_file)
                // Callback URLs are IP literals, so nothing is ever looked up; if something were, it
                // would go to a closed loopback port, never to the machine's resolvers.
                .env("CLICKTERMD_WEBHOOKS__DNS_SERVERS", "[\"127.0.0.1:9\"]")
                .env(
                    "CLICKTERMD_WEBHOOKS__TIMEOUT_SECS",
                    o.timeout_secs.to_string(),
                )
                // A failed attempt is retried within the run rather than a minute later.
                .env("CLICKTERMD_WEBHOOKS__RETRY_BASE_SECS", "0.5")
                .env("CLICKTERMD_WEBHOOKS__RETRY_CAP_SECS", "2")
                .envs(store_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let child = cmd
                .spawn()
                .map_err(|e| format!("start {}: {e}", o.bin.display()))?;
            let mut server = Server {
                pid: child.id(),
                child: Some(child),
                addr,
                data_dir: data_dir.clone(),
                bin: o.bin.clone(),
                stderr: stderr.clone(),
                store_env: store_env.clone(),
            };
            match server.wait_healthy().await {
                Ok(()) => {
                    // For attaching a profiler: `perf record -g -p PID`.
                    eprintln!(
                        "pipeline: clicktermd node {node} pid {} on {addr}",
                        server.pid
                    );
                    return Ok(server);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = http_client();
        let uri: hyper::Uri = format!("http://{}/healthz", self.addr).parse().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "the server exited with {status}: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ));
            }
            if let Ok(res) = client.get(uri.clone()).await
                && res.status() == StatusCode::OK
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err("the server did not become healthy within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn db_path(&self) -> PathBuf {
        self.data_dir.join("clicktermd.db")
    }

    /// `clicktermd admin token create` against the live data directory (and store).
    fn admin_token(&self) -> Result<String, String> {
        let out = clean_command(&self.bin)
            .envs(self.store_env.iter().map(|(k, v)| (k, v)))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["admin", "token", "create", "--name", "bench"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("admin token create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "admin token create: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// SIGTERM, then wait for a clean exit (attempts in flight may take their timeout).
    fn stop(mut self, grace: Duration) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("the server was already gone".into());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "the server exited with {status}: {}",
                        tail(&self.stderr)
                    ))
                };
            }
            if start.elapsed() > grace {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the server did not stop within {grace:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command for the binary without any inherited `CLICKTERMD_*` or `RUST_LOG`.
fn clean_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLICKTERMD_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    // Not the checkout, where a developer's ./clicktermd.toml would be read.
    cmd.current_dir(env!("CARGO_TARGET_TMPDIR"));
    cmd
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

// ---------------------------------------------------------------------------------------------------
// The API client and load generators
// ---------------------------------------------------------------------------------------------------

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// How many end users' browsers the SDK load comes from.
const BROWSERS: usize = 512;

/// Clients whose connections come from [`BROWSERS`] different loopback addresses (127.1.0.1 …): end
/// users' browsers each have their own address, and the server limits SDK requests per address
/// (`limits.sdk_requests_per_sec_per_address`), so the SDK load is spread as real traffic is.
fn browser_clients() -> Vec<HttpClient> {
    (0..BROWSERS)
        .map(|i| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let ip = std::net::IpAddr::from([127, 1, (i / 250) as u8, (i % 250) as u8 + 1]);
            connector.set_local_address(Some(ip));
            Client::builder(TokioExecutor::new()).build(connector)
        })
        .collect()
}

/// An integration as the benchmark uses it.
#[derive(Clone)]
struct App {
    id: String,
    key: String,
}

/// An SDK action's answer: what the backend verifies, and the event it names.
struct Signature {
    app: App,
    signature: String,
    event_id: String,
}

struct Api {
    /// The first node's URL, where admin calls go.
    base: String,
    /// Every node's, for the SDK and verify load (round-robin).
    bases: Vec<String>,
    client: HttpClient,
    /// The SDK's clients, one per end user's address.
    browsers: Vec<HttpClient>,
    token: Mutex<String>,
}

/// What a closed-loop phase measured.
struct Load {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    secs: f64,
    latencies_us: Vec<u64>,
}

impl Load {
    fn json(&self, concurrency: usize) -> Value {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        json!({
            "concurrency": concurrency,
            "requests": self.ok,
            "errors": self.errors,
            "duration_s": round3(self.secs),
            "requests_per_s": round1(self.ok as f64 / self.secs),
            "p50_ms": ms(percentile(&l, 50.0)),
            "p99_ms": ms(percentile(&l, 99.0)),
        })
    }
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api::for_nodes(&[addr])
    }

    fn for_nodes(addrs: &[SocketAddr]) -> Api {
        let bases: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
        Api {
            base: bases[0].clone(),
            bases,
            client: http_client(),
            browsers: browser_clients(),
            token: Mutex::new(String::new()),
        }
    }

    fn set_token(&self, token: String) {
        *self.token.lock().unwrap() = token;
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let token = self.token.lock().unwrap().clone();
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A published template visible to every integration; returns its id.
    async fn template(&self) -> Result<String, String> {
        let t = self
            .admin(
                Method::POST,
                "/api/v1/templates",
                json!({"name": "Benchmark terms", "defaultLanguage": "en",
                       "languages": {"en": {"title": "Terms", "content": "<p>Terms for {{fullName}}</p>"}}}),
            )
            .await?;
        let id = t["id"].as_str().ok_or("template id")?.to_string();
        self.admin(
            Method::POST,
            &format!("/api/v1/templates/{id}/versions"),
            json!({"type": "MAJOR"}),
        )
        .await?;
        Ok(id)
    }

    /// An integration with `callback` (saved through the URL policy); delivery on or held.
    async fn integration(&self, name: &str, callback: &str, deliver: bool) -> Result<App, String> {
        let created = self
            .admin(
                Method::POST,
                "/api/v1/integrations",
                json!({"name": name, "callbackUrl": callback}),
            )
            .await?;
        let app = App {
            id: created["appId"].as_str().ok_or("appId")?.to_string(),
            key: created["appKey"].as_str().ok_or("appKey")?.to_string(),
        };
        if !deliver {
            self.delivery(&app, false).await?;
        }
        Ok(app)
    }

    /// Switches an integration's webhook delivery on (releasing what it held) or off.
    async fn delivery(&self, app: &App, on: bool) -> Result<(), String> {
        self.admin(
            Method::PATCH,
            &format!("/api/v1/integrations/{}", app.id),
            json!({"webhookDeliveryEnabled": on}),
        )
        .await
        .map(|_| ())
    }

    /// `n` end users accept through the SDK endpoint, spread round-robin over `apps`.
    async fn act_many(
        &self,
        template: &str,
        apps: &[App],
        n: usize,
        concurrency: usize,
    ) -> Result<(Load, Vec<Signature>), String> {
        static USER: AtomicUsize = AtomicUsize::new(0);
        let first_user = USER.fetch_add(n, Ordering::Relaxed);
        let uris: Vec<hyper::Uri> = self
            .bases
            .iter()
            .map(|b| format!("{b}/public-client/v1/clickwrap").parse().unwrap())
            .collect();
        let bodies: Vec<Bytes> = (0..n)
            .map(|i| {
                Bytes::from(
                    json!({"appId": apps[i % apps.len()].id, "clickwrapTemplateId": template,
                           "endUserId": format!("bench-user-{}", first_user + i), "action": "ACCEPTED",
                           "templatePlaceholders": "{\"fullName\":\"Bench User\"}"})
                    .to_string(),
                )
            })
            .collect();
        let make = move |i: usize| {
            Request::post(uris[i % uris.len()].clone())
                .header("content-type", "application/json")
                .header("user-agent", "clicktermd-bench")
                .body(Full::new(bodies[i].clone()))
                .unwrap()
        };
        let (load, answers) =
            closed_loop(&self.browsers, concurrency, n, STEP_DEADLINE, make, true).await;
        if load.errors > 0 {
            return Err(format!(
                "SDK act: {} errors, first: {:?}",
                load.errors, load.first_error
            ));
        }
        let mut sigs = Vec::with_capacity(n);
        for (i, body) in answers {
            let v: Value = serde_json::from_slice(&body).map_err(|e| format!("act answer: {e}"))?;
            sigs.push(Signature {
                app: apps[i % apps.len()].clone(),
                signature: v["clicktermSignature"]
                    .as_str()
                    .ok_or("clicktermSignature")?
                    .to_string(),
                event_id: v["clickwrapEventId"]
                    .as_str()
                    .ok_or("clickwrapEventId")?
                    .to_string(),
            });
        }
        Ok((load, sigs))
    }

    /// The verify request of `sig`, to node `i` modulo the nodes.
    fn verify_request(&self, sig: &Signature, i: usize) -> Request<Full<Bytes>> {
        let app = &sig.app;
        let base = &self.bases[i % self.bases.len()];
        Request::post(format!("{base}/public-client/v1/clickwrap/verify"))
            .header("content-type", "application/json")
            .header("x-app-id", &app.id)
            .header("x-app-key", &app.key)
            .body(Full::new(Bytes::from(
                json!({"clicktermSignature": sig.signature}).to_string(),
            )))
            .unwrap()
    }

    /// Verifies `sigs` with `concurrency` clients in a closed loop, until they run out or `max` passes.
    async fn verify_closed(
        &self,
        sigs: &[Signature],
        concurrency: usize,
        max: Duration,
    ) -> Result<Load, String> {
        let requests: Vec<Request<Full<Bytes>>> = sigs
            .iter()
            .enumerate()
            .map(|(i, s)| self.verify_request(s, i))
            .collect();
        let requests = Mutex::new(requests.into_iter().map(Some).collect::<Vec<_>>());
        let make = move |i: usize| {
            requests.lock().unwrap()[i]
                .take()
                .expect("each request once")
        };
        let (load, _) = closed_loop(
            std::slice::from_ref(&self.client),
            concurrency,
            sigs.len(),
            max,
            make,
            false,
        )
        .await;
        if load.errors > 0 {
            return Err(format!(
                "verify: {} errors, first: {:?}",
                load.errors, load.first_error
            ));
        }
        Ok(load)
    }

    /// Verifies `sigs` at `rate` per second, open loop (each request leaves on schedule whatever the
    /// previous ones are doing), with delivery on; measures verify latency and verify-to-arrival latency.
    async fn latency_open_loop(
        &self,
        sink: &Arc<Sink>,
        sigs: &[Signature],
        rate: u32,
    ) -> Result<Value, String> {
        let n = sigs.len();
        let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
        let verify_lat: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let errors = Arc::new(AtomicUsize::new(0));
        let index: HashMap<&str, usize> = sigs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.event_id.as_str(), i))
            .collect();
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for (i, sig) in sigs.iter().enumerate() {
            tokio::time::sleep_until(start + interval * i as u32).await;
            let req = self.verify_request(sig, i);
            let (client, sent, verify_lat, errors) = (
                self.client.clone(),
                sent.clone(),
                verify_lat.clone(),
                errors.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                sent.lock().unwrap()[i] = Some(t0);
                match client.request(req).await {
                    Ok(res) if res.status() == StatusCode::OK => {
                        let _ = res.into_body().collect().await;
                        verify_lat
                            .lock()
                            .unwrap()
                            .push(t0.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let send_secs = start.elapsed().as_secs_f64();
        for t in tasks {
            let _ = t.await;
        }
        let errors = errors.load(Ordering::Relaxed);
        if errors > 0 {
            return Err(format!("latency phase: {errors} verify errors"));
        }
        // Wait for every webhook of this phase.
        let deadline = Instant::now() + Duration::from_secs(60);
        let sent = sent.lock().unwrap().clone();
        let arrivals = loop {
            let arrived: Vec<(usize, Instant)> = sink
                .arrivals()
                .into_iter()
                .filter_map(|(event, at)| index.get(event.as_str()).map(|&i| (i, at)))
                .collect();
            if arrived.len() >= n || Instant::now() > deadline {
                break arrived;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut lat: Vec<u64> = arrivals
            .iter()
            .filter_map(|&(i, at)| {
                sent[i].map(|s| at.saturating_duration_since(s).as_micros() as u64)
            })
            .collect();
        lat.sort_unstable();
        let mut v = verify_lat.lock().unwrap().clone();
        v.sort_unstable();
        if lat.len() < n {
            return Err(format!(
                "latency phase: {} of {n} webhooks arrived",
                lat.len()
            ));
        }
        Ok(json!({
            "rate_per_s": rate,
            "events": n,
            "duration_s": round3(send_secs),
            "achieved_rate_per_s": round1(n as f64 / send_secs),
            "arrived": lat.len(),
            "p50_ms": ms(percentile(&lat, 50.0)),
            "p99_ms": ms(percentile(&lat, 99.0)),
            "max_ms": ms(lat.last().copied().unwrap_or(0)),
            "verify_p50_ms": ms(percentile(&v, 50.0)),
            "verify_p99_ms": ms(percentile(&v, 99.0)),
        }))
    }
}

/// Runs `n` requests made by `make(i)` with `concurrency` workers, each waiting for its answer before
/// sending the next; stops early after `max`. Returns the measurements and, with `keep`, the bodies of
/// the successful answers by request index.
async fn closed_loop<F>(
    clients: &[HttpClient],
    concurrency: usize,
    n: usize,
    max: Duration,
    make: F,
    keep: bool,
) -> (Load, Vec<(usize, Bytes)>)
where
    F: Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    let workers_n = concurrency.min(n.max(1));
    for w in 0..workers_n {
        // Each worker has its share of the clients and takes them in turn.
        let mut mine: Vec<HttpClient> =
            clients.iter().skip(w).step_by(workers_n).cloned().collect();
        if mine.is_empty() {
            mine.push(clients[w % clients.len()].clone());
        }
        let (make, next) = (make.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut turn = 0usize;
            let mut lat = Vec::new();
            let mut bodies = Vec::new();
            let (mut ok, mut errors, mut first_error) = (0usize, 0usize, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || start.elapsed() >= max {
                    break;
                }
                let client = &mine[turn % mine.len()];
                turn += 1;
                let t0 = Instant::now();
                let outcome = match client.request(make(i)).await {
                    Ok(res) => {
                        let status = res.status();
                        match res.into_body().collect().await {
                            Ok(b) if status.is_success() => Ok(b.to_bytes()),
                            Ok(b) => Err(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&b.to_bytes())
                            )),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(body) => {
                        lat.push(t0.elapsed().as_micros() as u64);
                        ok += 1;
                        if keep {
                            bodies.push((i, body));
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, bodies, ok, errors, first_error)
        }));
    }
    let mut load = Load {
        ok: 0,
        errors: 0,
        first_error: None,
        secs: 0.0,
        latencies_us: Vec::new(),
    };
    let mut bodies = Vec::new();
    for w in workers {
        let (lat, b, ok, errors, first_error) = w.await.expect("load worker");
        load.latencies_us.extend(lat);
        bodies.extend(b);
        load.ok += ok;
        load.errors += errors;
        if load.first_error.is_none() {
            load.first_error = first_error;
        }
    }
    load.secs = start.elapsed().as_secs_f64();
    // In request order: the events an act phase created are then verified in the order they were
    // created, as a backend verifying each acceptance when it happens would. (Gathered worker by
    // worker, consecutive answers were 64 requests apart, and so were the verifies that used them.)
    bodies.sort_unstable_by_key(|&(i, _)| i);
    (load, bodies)
}

/// A delivery drain: how long a released backlog took to arrive.
struct Drain {
    n: usize,
    connections: u64,
    secs: f64,
    per_s: f64,
}

impl Drain {
    fn json(&self, receivers: usize, protocol: &str) -> Value {
        json!({
            "receivers": receivers,
            "protocol": protocol,
            "deliveries": self.n,
            "tls_connections": self.connections,
            "duration_s": round3(self.secs),
            "deliveries_per_s": round1(self.per_s),
        })
    }
}

/// Switches delivery on for `apps` (releasing their held backlog) and waits until `n` webhooks have
/// arrived at `receivers`; the rate is from the first release to the last arrival.
async fn drain(
    api: &Api,
    sink: &Arc<Sink>,
    apps: &[&App],
    receivers: &[usize],
    n: usize,
) -> Result<Drain, String> {
    let before: u64 = receivers.iter().map(|&r| sink.count(r)).sum();
    let connections_before = sink.connections.load(Ordering::Relaxed);
    let start = Instant::now();
    let start_us = sink.now_us();
    // Release concurrently, as a fan-out of PATCHes, so no receiver starts much later than another.
    let releases: Vec<_> = apps.iter().map(|a| api.delivery(a, true)).collect();
    for r in futures_join_all(releases).await {
        r?;
    }
    let target = before + n as u64;
    loop {
        let got: u64 = receivers.iter().map(|&r| sink.count(r)).sum();
        if got >= target {
            break;
        }
        if start.elapsed() > STEP_DEADLINE {
            return Err(format!("drain: {} of {n} webhooks arrived", got - before));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last_us = receivers
        .iter()
        .map(|&r| sink.last_us(r))
        .max()
        .unwrap_or(start_us);
    let secs = (last_us.saturating_sub(start_us)) as f64 / 1e6;
    Ok(Drain {
        n,
        connections: sink.connections.load(Ordering::Relaxed) - connections_before,
        secs,
        per_s: n as f64 / secs.max(1e-6),
    })
}

/// Awaits futures concurrently on this task (no extra dependency for `join_all`).
async fn futures_join_all<T, F: std::future::Future<Output = T>>(futs: Vec<F>) -> Vec<T> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<T>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("ready")).collect()
}

// ---------------------------------------------------------------------------------------------------
// The receivers
// ---------------------------------------------------------------------------------------------------

/// Where every receiver records what arrived: a counter and the latest arrival per receiver, and each
/// webhook's event id with its arrival time.
struct Sink {
    start: Instant,
    /// TLS connections accepted by every receiver: with keep-alive, far fewer than webhooks.
    connections: AtomicU64,
    counts: Mutex<Vec<Arc<(AtomicU64, AtomicU64)>>>,
    events: Mutex<Vec<(String, Instant)>>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            start: Instant::now(),
            connections: AtomicU64::new(0),
            counts: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        }
    }

    fn register(&self) -> (usize, Arc<(AtomicU64, AtomicU64)>) {
        let mut c = self.counts.lock().unwrap();
        let slot = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        c.push(slot.clone());
        (c.len() - 1, slot)
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn count(&self, receiver: usize) -> u64 {
        self.counts.lock().unwrap()[receiver]
            .0
            .load(Ordering::Acquire)
    }

    fn last_us(&self, receiver: usize) -> u64 {
        self.counts.lock().unwrap()[receiver]
            .1
            .load(Ordering::Acquire)
    }

    fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.load(Ordering::Acquire))
            .sum()
    }

    fn arrivals(&self) -> Vec<(String, Instant)> {
        self.events.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answer 200 at once.
    Ok,
    /// Read the request, then never answer (until the client gives up).
    Hang,
}

#[derive(Clone, Copy)]
enum Alpn {
    H2AndHttp1,
    Http1Only,
}

/// A TLS receiver on its own `127.0.0.1` port; it stops when dropped.
struct Receiver {
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(
        pki: &Pki,
        sink: &Arc<Sink>,
        mode: Mode,
        alpn: Alpn,
    ) -> Result<Receiver, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind receiver: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(alpn)?);
        let (id, slot) = sink.register();
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stop2) = (sink.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let _ = tcp.set_nodelay(true);
                let (acceptor, sink, slot) = (acceptor.clone(), sink.clone(), slot.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    sink.connections.fetch_add(1, Ordering::Relaxed);
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (sink, slot) = (sink.clone(), slot.clone());
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let at = Instant::now();
                            slot.1.store(
                                at.duration_since(sink.start).as_micros() as u64,
                                Ordering::Release,
                            );
                            slot.0.fetch_add(1, Ordering::AcqRel);
                            if let Ok(body) = body
                                && let Some(id) = event_id(&body)
                            {
                                sink.events.lock().unwrap().push((id, at));
                            }
                            if mode == Mode::Hang {
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            id,
            addr,
            stop,
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// The `clickwrapEventId` of a webhook body, found without parsing the whole document.
fn event_id(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"clickwrapEventId\":\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

/// A CA (trusted by the server through `extra_ca_file`) and a receiver certificate for 127.0.0.1.
struct Pki {
    ca_pem: String,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl Pki {
    fn generate() -> Result<Pki, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let e = |e: rcgen::Error| e.to_string();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "clicktermd benchmark CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(e)?).map_err(e)?;
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(e)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "benchmark receiver");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(e)?;
        let cert = leaf.signed_by(&key, &ca).map_err(e)?;
        Ok(Pki {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone(), ca.der().clone()],
            key_der: key.serialize_der(),
        })
    }

    fn server_config(&self, alpn: Alpn) -> Result<Arc<rustls::ServerConfig>, String> {
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), key)
        .map_err(|e| e.to_string())?;
        config.alpn_protocols = match alpn {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------------
// Measurements from /proc and the database
// ---------------------------------------------------------------------------------------------------

/// The fields of `/proc/PID/stat` after the command name (state is the first, ppid the second).
fn stat_fields(pid: &str) -> Result<Vec<String>, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may contain spaces and parentheses; the fields after the last ')' do not.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// The sum of fields `from..=to` (0-based after the name) of `/proc/PID/stat`, in seconds.
fn stat_seconds(pid: &str, fields: std::ops::RangeInclusive<usize>) -> Result<f64, String> {
    let f = stat_fields(pid)?;
    let mut ticks = 0.0;
    for i in fields {
        ticks += f
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| "bad stat field".to_string())?;
    }
    Ok(ticks / clock_ticks())
}

/// `user + system` CPU seconds of a process (`"self"` or a pid), all threads, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> Result<f64, String> {
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    stat_seconds(pid, 11..=12)
}

/// As [`cpu_seconds`], plus its children that have exited and been waited for (`cutime`, `cstime`).
fn cpu_seconds_with_children(pid: &str) -> Result<f64, String> {
    stat_seconds(pid, 11..=14)
}

fn cpu_seconds_of(pid: u32) -> Result<f64, String> {
    cpu_seconds(&pid.to_string())
}

/// `write_bytes` of `/proc/PID/io`: bytes the process caused to be written to storage.
fn disk_write_bytes_of(pid: u32) -> Result<u64, String> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .map_err(|e| format!("/proc/{pid}/io: {e}"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no write_bytes in /proc/{pid}/io"))
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (100 on every Linux seen so far).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The largest anonymous resident memory (`RssAnon`) any node reached, sampled every 100 ms on a
/// thread of its own. `VmHWM` also counts the executable's pages, and how many of those a process
/// maps depends on the page cache's state of the file: the same bytes read 14.8 MB of file-backed
/// memory at start as a copy written an hour before and 17.1 MB as a copy written a minute before.
/// The anonymous part is the memory the server itself takes.
struct AnonPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl AnonPeak {
    fn start(nodes: Vec<u32>) -> AnonPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asked = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = 0;
            while !asked.load(std::sync::atomic::Ordering::Relaxed) {
                for &pid in &nodes {
                    most = most.max(proc_status_kb(pid, "RssAnon").unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        });
        AnonPeak {
            stop,
            thread: Some(thread),
        }
    }

    /// The peak in KiB (its last sample at most 100 ms old).
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

/// A run that fails half-way stops its sampler too.
impl Drop for AnonPeak {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn proc_status_kb(pid: u32, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{field} not in /proc/{pid}/status"))
}

/// The store of a run: SQLite's file in the first node's data directory, or a database in a
/// PostgreSQL cluster started for this run with its default durability.
enum Db {
    Sqlite(PathBuf),
    Postgres {
        cluster: postgres::Cluster,
        database: String,
    },
}

impl Db {
    async fn start(o: &Options, dir: &Path) -> Result<Db, String> {
        match o.backend {
            Backend::Sqlite => Ok(Db::Sqlite(dir.join("data/clicktermd.db"))),
            Backend::Postgres => {
                // In `work_dir` (on the disk being measured), not in the run's own directory, which
                // is private to this user while the cluster runs as `postgres` when we are root.
                let parent = o.work_dir.clone();
                let counting = o.pg_statements.is_some();
                let cluster = tokio::task::spawn_blocking(move || {
                    if counting {
                        postgres::Cluster::start_durable_counting(&parent)
                    } else {
                        postgres::Cluster::start_durable(&parent)
                    }
                })
                .await
                .map_err(|e| format!("start the PostgreSQL cluster: {e}"))?;
                let database = cluster.create_database().await;
                if counting {
                    cluster
                        .connect(&database)
                        .await
                        .batch_execute("CREATE EXTENSION pg_stat_statements")
                        .await
                        .map_err(|e| format!("CREATE EXTENSION pg_stat_statements: {e}"))?;
                }
                eprintln!(
                    "pipeline: PostgreSQL (postmaster pid {:?}) on 127.0.0.1:{}, database {database}",
                    cluster.postmaster_pid(),
                    cluster.port
                );
                Ok(Db::Postgres { cluster, database })
            }
        }
    }

    /// What a node (and the CLI) needs to reach this store beside its data directory.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Db::Sqlite(_) => Vec::new(),
            Db::Postgres { cluster, database } => vec![
                ("CLICKTERMD_STORAGE__BACKEND", "postgres".to_string()),
                ("CLICKTERMD_STORAGE__POSTGRES_URL", cluster.url(database)),
            ],
        }
    }

    fn postmaster(&self) -> Result<Option<u32>, String> {
        match self {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres { cluster, .. } => cluster
                .postmaster_pid()
                .map(Some)
                .ok_or_else(|| format!("no postmaster.pid in {}", cluster.dir.display())),
        }
    }

    /// `--pg-statements`: forgets the statements counted so far (the nodes' start-up and setup).
    async fn statements_reset(&self) -> Result<(), String> {
        if let Db::Postgres { cluster, database } = self {
            cluster
                .connect(database)
                .await
                .batch_execute("SELECT pg_stat_statements_reset()")
                .await
                .map_err(|e| format!("pg_stat_statements_reset: {e}"))?;
        }
        Ok(())
    }

    /// `--pg-statements`: the statements counted since [`Db::statements_reset`], the costliest
    /// (total execution time) first, with their calls, rows, time and WAL.
    async fn statements(&self) -> Result<Value, String> {
        let Db::Postgres { cluster, database } = self else {
            return Ok(Value::Null);
        };
        let rows = cluster
            .connect(database)
            .await
            .query(
                "SELECT query, calls, rows, total_exec_time, wal_bytes::float8, \
                        shared_blks_dirtied, shared_blks_written, shared_blks_hit + shared_blks_read \
                 FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database \
                 WHERE datname = current_database()) ORDER BY total_exec_time DESC",
                &[],
            )
            .await
            .map_err(|e| format!("pg_stat_statements: {e}"))?;
        Ok(Value::Array(
            rows.iter()
                .map(|r| {
                    json!({
                        "query": r.get::<_, String>(0),
                        "calls": r.get::<_, i64>(1),
                        "rows": r.get::<_, i64>(2),
                        "total_ms": round3(r.get::<_, f64>(3)),
                        "wal_bytes": r.get::<_, f64>(4),
                        "blocks_dirtied": r.get::<_, i64>(5),
                        "blocks_written": r.get::<_, i64>(6),
                        "blocks_read": r.get::<_, i64>(7),
                    })
                })
                .collect(),
        ))
    }

    /// The database's size in bytes now: SQLite's pages in use, PostgreSQL's `pg_database_size`.
    async fn size(&self) -> Result<u64, String> {
        match self {
            Db::Sqlite(path) => db_bytes(path),
            Db::Postgres { cluster, database } => {
                let c = cluster.connect(database).await;
                let row = c
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .await
                    .map_err(|e| format!("pg_database_size: {e}"))?;
                Ok(row.get::<_, i64>(0) as u64)
            }
        }
    }

    /// How many attempts ended with each outcome (`ok`, `timeout` …), from the live database.
    async fn attempt_outcomes(&self) -> Result<Value, String> {
        match self {
            Db::Sqlite(path) => attempt_outcomes(path),
            Db::Postgres { cluster, database } => {
                let c = cluster.connect(database).await;
                let rows = c
                    .query(ATTEMPT_OUTCOMES, &[])
                    .await
                    .map_err(|e| format!("attempt outcomes: {e}"))?;
                let mut out = serde_json::Map::new();
                for row in rows {
                    out.insert(row.get::<_, String>(0), json!(row.get::<_, i64>(1)));
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// PostgreSQL's version and durability settings, as the server reports them.
    async fn settings(&self) -> Result<Value, String> {
        let Db::Postgres { cluster, database } = self else {
            return Ok(json!({}));
        };
        let c = cluster.connect(database).await;
        let mut out = json!({});
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_sync_method",
            "shared_buffers",
            "max_connections",
        ] {
            let row = c
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map_err(|e| format!("SHOW {name}: {e}"))?;
            out[name] = json!(row.get::<_, String>(0));
        }
        Ok(out)
    }

    /// Stops PostgreSQL and deletes its cluster (SQLite's file goes with the run's directory).
    fn stop(&self) {
        if let Db::Postgres { cluster, .. } = self {
            cluster.stop();
        }
    }
}

const ATTEMPT_OUTCOMES: &str =
    "SELECT outcome, count(*) FROM attempts GROUP BY outcome ORDER BY outcome";

/// A figure of the nodes and of PostgreSQL's processes (zero without PostgreSQL).
#[derive(Clone, Copy, Debug, Default)]
struct Split<T> {
    nodes: T,
    postgres: T,
}

impl Split<f64> {
    fn total(&self) -> f64 {
        self.nodes + self.postgres
    }
}

impl Split<u64> {
    fn total(&self) -> u64 {
        self.nodes + self.postgres
    }
}

impl std::ops::Sub for Split<f64> {
    type Output = Split<f64>;
    fn sub(self, o: Split<f64>) -> Split<f64> {
        Split {
            nodes: self.nodes - o.nodes,
            postgres: self.postgres - o.postgres,
        }
    }
}

impl std::ops::Sub for Split<u64> {
    type Output = Split<u64>;
    fn sub(self, o: Split<u64>) -> Split<u64> {
        Split {
            nodes: self.nodes.saturating_sub(o.nodes),
            postgres: self.postgres.saturating_sub(o.postgres),
        }
    }
}

/// Reads what the processes of a run use from `/proc`: every node, and PostgreSQL's postmaster with
/// its children (found by their parent id). A child that has exited is in the postmaster's own
/// figures: its CPU in `cutime`/`cstime`, its I/O in the postmaster's `/proc/PID/io` (the kernel adds
/// a reaped child's to its parent's).
struct Meter {
    nodes: Vec<u32>,
    postmaster: Option<u32>,
}

impl Meter {
    /// The postmaster's live children.
    fn postgres_children(&self) -> Vec<u32> {
        let Some(pm) = self.postmaster else {
            return Vec::new();
        };
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                stat_fields(&pid.to_string()).is_ok_and(|f| f.get(1) == Some(&pm.to_string()))
            })
            .collect()
    }

    /// CPU seconds (user + system) of the first node's SQLite writer thread (`clicktermd-db-writer`,
    /// which the kernel shortens to 15 bytes), if it has one.
    fn sqlite_writer_cpu(&self) -> Option<f64> {
        let pid = *self.nodes.first()?;
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .find_map(|task| {
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                (comm.trim_end() == "clicktermd-db-w").then(|| {
                    let tid = task.file_name();
                    stat_seconds(&format!("{pid}/task/{}", tid.to_string_lossy()), 11..=12).ok()
                })?
            })
    }

    /// CPU seconds (user + system) of the nodes, and of PostgreSQL with its exited children.
    fn cpu(&self) -> Result<Split<f64>, String> {
        let mut nodes = 0.0;
        for &pid in &self.nodes {
            nodes += cpu_seconds_of(pid)?;
        }
        let mut postgres = 0.0;
        if let Some(pm) = self.postmaster {
            for child in self.postgres_children() {
                // A child may exit between the listing and this read: then it is in `cutime`.
                postgres += cpu_seconds_with_children(&child.to_string()).unwrap_or(0.0);
            }
            postgres += cpu_seconds_with_children(&pm.to_string())?;
        }
        Ok(Split { nodes, postgres })
    }

    /// Bytes written towards storage by the nodes and by PostgreSQL's processes.
    fn disk(&self) -> Result<Split<u64>, String> {
        let mut nodes = 0;
        for &pid in &self.nodes {
            nodes += disk_write_bytes_of(pid)?;
        }
        let mut postgres = 0;
        if let Some(pm) = self.postmaster {
            for child in self.postgres_children() {
                postgres += disk_write_bytes_of(child).unwrap_or(0);
            }
            postgres += disk_write_bytes_of(pm)?;
        }
        Ok(Split { nodes, postgres })
    }

    /// A `kB` field of the nodes' `/proc/PID/status`: the largest node's, and the sum.
    fn rss_kb(&self, field: &str) -> Result<(u64, u64), String> {
        let mut each = Vec::new();
        for &pid in &self.nodes {
            each.push(proc_status_kb(pid, field)?);
        }
        Ok((each.iter().copied().max().unwrap_or(0), each.iter().sum()))
    }

    /// PostgreSQL's memory: the proportional set sizes of the postmaster and its children added up.
    fn postgres_pss_kb(&self) -> Result<u64, String> {
        let Some(pm) = self.postmaster else {
            return Ok(0);
        };
        let mut pids = self.postgres_children();
        pids.push(pm);
        let mut total = 0;
        for pid in pids {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }
}

/// How many attempts ended with each outcome (`ok`, `timeout` …), from the live database.
fn attempt_outcomes(path: &Path) -> Result<Value, String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut stmt = c.prepare(ATTEMPT_OUTCOMES).map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(|e| e.to_string())?;
    let mut out = serde_json::Map::new();
    for row in rows {
        let (outcome, n) = row.map_err(|e| e.to_string())?;
        out.insert(outcome, json!(n));
    }
    Ok(Value::Object(out))
}

/// The database's used size in bytes as a reader sees it now (WAL included): pages in use × page size.
fn db_bytes(path: &Path) -> Result<u64, String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let q = |p: &str| -> Result<u64, String> {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
            .map(|v| v as u64)
            .map_err(|e| format!("PRAGMA {p}: {e}"))
    };
    Ok((q("page_count")? - q("freelist_count")?) * q("page_size")?)
}

fn machine_info() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "loadavg_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

// ---------------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------------

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The figures that must be present and positive in every report, as JSON pointers.
pub const FIGURES: &[&str] = &[
    "/sdk_act/requests_per_s",
    "/verify/requests_per_s",
    "/verify/p50_ms",
    "/verify/p99_ms",
    "/deliveries_one_receiver_h2/deliveries_per_s",
    "/deliveries_one_receiver_http1/deliveries_per_s",
    "/deliveries_fanout/deliveries_per_s",
    "/verify_to_arrival/p50_ms",
    "/verify_to_arrival/p99_ms",
    "/isolation/baseline_deliveries_per_s",
    "/isolation/baseline_after_deliveries_per_s",
    "/isolation/with_hung_deliveries_per_s",
    "/isolation/ratio",
    "/isolation/hung_attempts_seen_during",
    "/server/idle_rss_mb",
    "/server/peak_rss_mb",
    "/server/peak_anon_rss_mb",
    "/server/cpu_ms_per_event_verify_and_deliver",
    "/server/cpu_ms_per_verify",
    "/server/cpu_ms_per_delivery",
    "/server/disk_write_bytes_per_verify",
    "/server/disk_write_bytes_per_delivery",
    "/server/db_bytes_per_10k_events",
];

/// Figures that a PostgreSQL run adds: its own share of the CPU and the disk writes.
pub const POSTGRES_FIGURES: &[&str] = &[
    "/postgres/cpu_ms_per_event_verify_and_deliver",
    "/postgres/cpu_ms_per_verify",
    "/postgres/cpu_ms_per_delivery",
    "/postgres/disk_write_bytes_per_verify",
    "/postgres/pss_mb_after_load",
];

/// The figures of [`FIGURES`] (or of the large benchmark's) that are missing from `report` or not
/// positive; empty when all are there.
pub fn missing_figures(report: &Value) -> Vec<String> {
    if report["mode"] == "large" {
        return large::missing_figures(report);
    }
    if report["mode"] == "compare" {
        let runs = report["runs"].as_array().map_or(&[][..], Vec::as_slice);
        let mut missing: Vec<String> = runs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                missing_figures(r)
                    .into_iter()
                    .map(move |p| format!("/runs/{i}{p}"))
            })
            .collect();
        if runs.len() != COMPARED.len() {
            missing.push("/runs".into());
        }
        return missing;
    }
    let postgres: &[&str] = if report["backend"] == "postgres" {
        POSTGRES_FIGURES
    } else {
        &[]
    };
    FIGURES
        .iter()
        .chain(postgres)
        .filter(|p| {
            !report
                .pointer(p)
                .and_then(Value::as_f64)
                .is_some_and(|v| v > 0.0)
        })
        .map(|p| p.to_string())
        .collect()
}

/// The report as a table for people: figure, value, and the target of issue #7 where it sets one.
pub fn table(r: &Value) -> String {
    if r["mode"] == "large" {
        return large::table(r);
    }
    if r["mode"] == "compare" {
        return compare_table(r);
    }
    let f = |p: &str| {
        r.pointer(p)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows: Vec<(String, String, &str)> = vec![
        (
            format!(
                "SDK act (create event), {} clients",
                f("/sdk_act/concurrency")
            ),
            format!(
                "{} req/s, p50 {} ms, p99 {} ms",
                f("/sdk_act/requests_per_s"),
                f("/sdk_act/p50_ms"),
                f("/sdk_act/p99_ms")
            ),
            "",
        ),
        (
            format!(
                "verify, {} clients ({} requests)",
                f("/verify/concurrency"),
                f("/verify/requests")
            ),
            format!(
                "{} req/s, p50 {} ms, p99 {} ms",
                f("/verify/requests_per_s"),
                f("/verify/p50_ms"),
                f("/verify/p99_ms")
            ),
            ">= 10000 req/s",
        ),
        (
            format!(
                "deliveries, 1 receiver, h2 ({})",
                f("/deliveries_one_receiver_h2/deliveries")
            ),
            format!("{} /s", f("/deliveries_one_receiver_h2/deliveries_per_s")),
            ">= 6000 /s",
        ),
        (
            format!(
                "deliveries, 1 receiver, HTTP/1.1 ({})",
                f("/deliveries_one_receiver_http1/deliveries")
            ),
            format!(
                "{} /s",
                f("/deliveries_one_receiver_http1/deliveries_per_s")
            ),
            ">= 6000 /s",
        ),
        (
            format!(
                "deliveries, {} receivers ({})",
                f("/deliveries_fanout/receivers"),
                f("/deliveries_fanout/deliveries")
            ),
            format!("{} /s", f("/deliveries_fanout/deliveries_per_s")),
            "",
        ),
        (
            format!(
                "verify -> arrival at {}/s open loop",
                f("/verify_to_arrival/rate_per_s")
            ),
            format!(
                "p50 {} ms, p99 {} ms",
                f("/verify_to_arrival/p50_ms"),
                f("/verify_to_arrival/p99_ms")
            ),
            "p50 <= 4 ms, p99 <= 8 ms",
        ),
        (
            format!(
                "isolation: {} healthy + 1 hung ({} s timeout)",
                f("/isolation/healthy_integrations"),
                f("/isolation/hung_timeout_s")
            ),
            format!(
                "{} /s vs {} /s alone (mean of {} before, {} after): ratio {}",
                f("/isolation/with_hung_deliveries_per_s"),
                f("/isolation/alone_deliveries_per_s"),
                f("/isolation/baseline_deliveries_per_s"),
                f("/isolation/baseline_after_deliveries_per_s"),
                f("/isolation/ratio")
            ),
            "ratio ~ 1",
        ),
        (
            "server CPU per verified + delivered event".into(),
            format!(
                "{} ms (verify {} + delivery {})",
                f("/server/cpu_ms_per_event_verify_and_deliver"),
                f("/server/cpu_ms_per_verify"),
                f("/server/cpu_ms_per_delivery")
            ),
            "<= 0.26 ms",
        ),
        (
            "disk writes per verify / per delivery".into(),
            format!(
                "{} B / {} B",
                f("/server/disk_write_bytes_per_verify"),
                f("/server/disk_write_bytes_per_delivery")
            ),
            "",
        ),
        (
            "server RSS idle / peak".into(),
            format!(
                "{} MB / {} MB (anonymous at most {} MB)",
                f("/server/idle_rss_mb"),
                f("/server/peak_rss_mb"),
                f("/server/peak_anon_rss_mb")
            ),
            "< 20 MB / < 60 MB",
        ),
        (
            "database size per 10 000 events".into(),
            format!("{} bytes", f("/server/db_bytes_per_10k_events")),
            "",
        ),
    ];
    if r["backend"] == "postgres" {
        // After the CPU row: how much of it was PostgreSQL's own processes.
        let at = rows
            .iter()
            .position(|r| r.0.starts_with("server CPU"))
            .map_or(rows.len(), |i| i + 1);
        rows.insert(
            at,
            (
                "  of which clicktermd nodes / PostgreSQL".into(),
                format!(
                    "{} ms / {} ms",
                    f("/server/cpu_ms_per_event_verify_and_deliver_nodes"),
                    f("/postgres/cpu_ms_per_event_verify_and_deliver")
                ),
                "",
            ),
        );
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = format!(
        "clicktermd pipeline benchmark ({} mode, {} on {} node(s), {} cores, {})\n",
        f("/mode").trim_matches('"'),
        f("/backend").trim_matches('"'),
        f("/nodes"),
        f("/machine/nproc"),
        f("/machine/cpu_model").trim_matches('"'),
    );
    out.push_str(&format!(
        "{:w0$}  {:w1$}  {}\n",
        "figure", "measured", "target (issue #7)"
    ));
    for (a, b, c) in rows {
        out.push_str(&format!("{a:w0$}  {b:w1$}  {c}\n"));
    }
    out
}

/// `--compare`'s table: one column per configuration of [`COMPARED`], the issue #12 target beside.
fn compare_table(r: &Value) -> String {
    let runs = r["runs"].as_array().map_or(&[][..], Vec::as_slice);
    let f = |run: &Value, p: &str| {
        run.pointer(p)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_else(|| "-".into())
    };
    type Cell = fn(&dyn Fn(&str) -> String) -> String;
    let rows: Vec<(&str, Cell, &str)> = vec![
        (
            "verifies/s (64 clients)",
            |g| g("/verify/requests_per_s"),
            ">= 5000",
        ),
        (
            "verify p50 / p99 ms",
            |g| format!("{} / {}", g("/verify/p50_ms"), g("/verify/p99_ms")),
            "",
        ),
        ("SDK acts/s", |g| g("/sdk_act/requests_per_s"), ""),
        (
            "deliveries/s, 1 receiver h2",
            |g| g("/deliveries_one_receiver_h2/deliveries_per_s"),
            ">= 5000",
        ),
        (
            "deliveries/s, 1 receiver HTTP/1.1",
            |g| g("/deliveries_one_receiver_http1/deliveries_per_s"),
            "",
        ),
        (
            "deliveries/s, fan-out",
            |g| g("/deliveries_fanout/deliveries_per_s"),
            "",
        ),
        (
            "verify -> arrival p50 / p99 ms",
            |g| {
                format!(
                    "{} / {}",
                    g("/verify_to_arrival/p50_ms"),
                    g("/verify_to_arrival/p99_ms")
                )
            },
            "",
        ),
        (
            "CPU ms per verified + delivered event",
            |g| g("/server/cpu_ms_per_event_verify_and_deliver"),
            "<= 0.5 (with PostgreSQL)",
        ),
        (
            "  nodes / PostgreSQL",
            |g| {
                format!(
                    "{} / {}",
                    g("/server/cpu_ms_per_event_verify_and_deliver_nodes"),
                    g("/postgres/cpu_ms_per_event_verify_and_deliver")
                )
            },
            "",
        ),
        (
            "  verify / delivery",
            |g| {
                format!(
                    "{} / {}",
                    g("/server/cpu_ms_per_verify"),
                    g("/server/cpu_ms_per_delivery")
                )
            },
            "",
        ),
        (
            "peak RSS MB (largest node)",
            |g| g("/server/peak_rss_mb"),
            "",
        ),
        (
            "PostgreSQL PSS MB after load",
            |g| g("/postgres/pss_mb_after_load"),
            "",
        ),
        (
            "disk bytes per verify / delivery",
            |g| {
                format!(
                    "{} / {}",
                    g("/server/disk_write_bytes_per_verify"),
                    g("/server/disk_write_bytes_per_delivery")
                )
            },
            "",
        ),
        (
            "database bytes per 10 000 events",
            |g| g("/server/db_bytes_per_10k_events"),
            "",
        ),
    ];
    let heads: Vec<String> = runs
        .iter()
        .map(|run| format!("{} x{}", f(run, "/backend"), f(run, "/nodes")))
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, cell, _)| runs.iter().map(|run| cell(&|p| f(run, p))).collect())
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([heads[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "clicktermd pipeline benchmark, compared ({} scale, {} cores, {})\n",
        f(r, "/scale"),
        f(r, "/machine/nproc"),
        f(r, "/machine/cpu_model"),
    );
    let line = |first: &str, cols: &[String], last: &str| {
        let mut l = format!("{first:w0$}");
        for (c, w) in cols.iter().zip(&widths) {
            l.push_str(&format!("  {c:>w$}"));
        }
        format!("{l}  {last}\n")
    };
    out.push_str(&line("figure", &heads, "target (issue #12)"));
    for ((name, _, target), c) in rows.iter().zip(&cells) {
        out.push_str(&line(name, c, target));
    }
    out
}
