//! The store: the only code that speaks SQL. It owns the database file, its schema and migrations, and
//! the two ways in:
//!
//! - **reads** run on a pooled connection (r2d2) inside `spawn_blocking`, so they never block an async
//!   worker and run in parallel with each other and with the writer (WAL). A read takes its blocking
//!   thread only once a connection is free for it ([`READERS`] permits): more wait as tasks;
//! - **writes** are sent to one writer thread that owns the only writing connection. It takes every job
//!   waiting in its queue, runs each in its own `SAVEPOINT` inside one `BEGIN IMMEDIATE … COMMIT`, and
//!   hands the batch's replies to a sync thread, which makes the write-ahead log durable (`fdatasync`)
//!   and only then answers: one sync covers many requests (group commit), each acknowledged write is on
//!   disk, and the writer goes on with the next batch while the previous one is being synced. A job
//!   that fails rolls back its own savepoint and nothing else. With a single writer there is never a
//!   `SQLITE_BUSY` between our own writers.
//!
//! One cache sits in front of the database: integrations' credentials ([`Store::credentials`]), read by
//! every public-API request. The writer connection's update hook invalidates it whenever a write touches
//! the `integrations` table, so a regenerated key, a disabled or deleted integration takes effect on the
//! next request, exactly as without it.
//!
//! A third thread checkpoints the log into the database file (`PRAGMA wal_checkpoint(PASSIVE)`) after
//! commits, so the writer never copies pages or syncs the database file itself.

pub mod admin;
pub mod audit;
mod cache;
pub mod client_certs;
pub mod consent;
pub mod deliveries;
pub mod events;
pub mod integrations;
pub mod ledger;
mod migrate;
pub mod pg;
#[cfg(test)]
mod plans;
pub mod settings;
pub mod stats;
pub mod templates;
pub mod transfer;
mod vocabulary;

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use crate::config::Synchronous;

pub use migrate::{LEDGER_VERSION, SCHEMA_SQL, SCHEMA_VERSION};

/// The most write jobs committed together. Large enough to amortise an fsync over a burst, small enough
/// that one commit stays short.
const MAX_BATCH: usize = 512;

/// The checkpointer copies the log into the database at most this often.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// After a checkpoint has copied every frame and the log starts over, its file is cut back to this size.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The log starts over only when a checkpoint has copied all of it and a write then begins; under a
/// steady stream of commits a passive checkpoint never catches up (new frames land while it copies),
/// and the log grew without bound (half a gigabyte in a minute of full load), to be copied in one go
/// once the load fell. Past this many frames (64 MB of 4 KiB pages) the checkpointer asks the writer
/// to restart it between two batches.
const WAL_RESTART_FRAMES: i64 = WAL_SIZE_LIMIT / 4096;

/// How long a restarting checkpoint may wait for readers before it gives up until it is asked again.
/// New writes wait while it copies what the passive checkpoints left (about one interval's worth), so
/// it must not also wait long on a slow reader (a backup).
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Prepared statements kept per connection: more than the distinct statements of any hot path, so a
/// busy writer never parses SQL again, and room for the event list's and delivery history's shapes
/// (one statement per combination of filters present) on the readers.
const STATEMENT_CACHE: usize = 256;

/// The read pool's connections. Reads beyond them wait as tasks (a few hundred bytes each), not as
/// blocking threads parked in the pool: 64 concurrent requests once kept about 60 threads, each with
/// its stack, waiting for 8 connections.
const READERS: usize = 8;

/// How long a read waits for a free connection before it is answered 503 (r2d2's own wait).
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("{0}")]
    Io(String),
    #[error(
        "the database {path} has schema version {found}, but this clicktermd supports at most {supported}: \
         it was written by a newer clicktermd. Run that version, or restore a backup made for this one."
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "the disk holding the database is full: nothing was written. Free some space; clicktermd \
         takes writes again by itself"
    )]
    DiskFull,
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("a database task failed: {0}")]
    Task(String),
    #[error("database error: {0}")]
    Postgres(tokio_postgres::Error),
    /// PostgreSQL cannot be reached (refused, gone, or the pool found no connection in time): the
    /// request is answered 503 and the node recovers when the database is back.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(
        "the PostgreSQL database {url} has schema version {found}, but this clicktermd supports at most {supported}: it was written by a newer clicktermd. Run that version."
    )]
    TooNewPostgres {
        url: String,
        found: i64,
        supported: i64,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// Whether this failed because the file system holding the database is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull => true,
            StoreError::Sqlite(e) => sqlite_disk_full(e),
            _ => false,
        }
    }
}

/// SQLite's "database or disk is full" (`SQLITE_FULL`; its unix layer reports `ENOSPC` so).
fn sqlite_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// Bytes an unprivileged process may still write on the file system holding `dir` (or its nearest
/// existing ancestor), when the system says.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let fs = rustix::fs::statvfs(existing).ok()?;
    Some(fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// Below this much free space the file system counts as full: SQLite cannot grow its log or its shared
/// memory file in less.
pub const FULL_BELOW_BYTES: u64 = 1 << 20;

/// Why a batch was not kept.
#[derive(Clone, Debug)]
struct Lost {
    text: String,
    disk_full: bool,
}

impl From<&rusqlite::Error> for Lost {
    fn from(e: &rusqlite::Error) -> Lost {
        Lost {
            text: e.to_string(),
            disk_full: sqlite_disk_full(e),
        }
    }
}

/// A cheap handle to the database; clone it freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Backend>,
}

/// The two implementations of the operations: each `Store` operation matches on this and runs its
/// engine's own statements (ARCHITECTURE.md, "The store").
pub(crate) enum Backend {
    Sqlite(Sqlite),
    Postgres(pg::Postgres),
}

/// The SQLite store: one file, the writer thread with its group commit, the read pool.
pub(crate) struct Sqlite {
    path: PathBuf,
    pool: r2d2::Pool<SqliteConnectionManager>,
    /// One permit per pooled connection: a read waits for one as a task, before it takes a blocking
    /// thread, so no more than [`READERS`] blocking threads ever run reads (see [`Sqlite::read`]).
    readers: Arc<tokio::sync::Semaphore>,
    writer: mpsc::SyncSender<Job>,
    credentials: cache::Credentials,
    stats: Arc<WriterStats>,
    wake: Arc<tokio::sync::Notify>,
    /// Declared last, so it is dropped after `writer` and `pool`.
    _closer: Closer,
}

/// Closes the store when its last handle goes. Dropping the writer's channel ends the writer thread,
/// whose end ends the sync and checkpoint threads; this waits for the three, so every job sent has
/// been committed and synced and every connection is closed before the process goes on (or exits).
/// The last connection to close checkpoints the log into the database file and deletes it: after a
/// clean stop the database file alone holds everything.
struct Closer {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            // Were the last handle dropped on one of these threads (a job holding a clone), waiting for
            // it would wait forever: that thread ends on its own once it returns.
            if thread.thread().id() == me {
                continue;
            }
            let name = thread.thread().name().unwrap_or("?").to_string();
            if thread.join().is_err() {
                tracing::error!(thread = %name, "a database thread panicked");
            }
        }
    }
}

/// What the writer and sync threads have done since the store was opened, for `/metrics`: how many
/// batches and jobs were committed, how long the writer was busy running and committing them, and how
/// many log syncs the sync thread made and how long they took.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    jobs: AtomicU64,
    busy_micros: AtomicU64,
    syncs: AtomicU64,
    sync_micros: AtomicU64,
    /// The last batch failed because the disk is full; cleared by the next one that commits.
    disk_full: AtomicBool,
    /// When a full disk was last logged (Unix ms), so that a disk on the edge — a small write fits,
    /// the next does not — is logged once per episode rather than at every flip.
    full_logged_at: std::sync::atomic::AtomicI64,
}

/// A reading of [`WriterStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterFigures {
    pub batches: u64,
    pub jobs: u64,
    pub busy_seconds: f64,
    pub syncs: u64,
    pub sync_seconds: f64,
}

impl WriterStats {
    /// Whether writes are failing now because the disk is full.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// Follows the disk-full episodes from the batches' outcomes, logging each start and end once.
    fn note_outcome(&self, outcome: &std::result::Result<(), Lost>) {
        match outcome {
            Err(lost) if lost.disk_full => {
                let now = crate::model::Timestamp::now().millis();
                let last = self.full_logged_at.load(Ordering::Relaxed);
                if !self.disk_full.swap(true, Ordering::Relaxed) && now - last > 60_000 {
                    self.full_logged_at.store(now, Ordering::Relaxed);
                    tracing::error!(
                        error = %lost.text,
                        "the disk holding the database is full: writes are refused (507) until \
                         space is freed; reads go on"
                    );
                }
            }
            Ok(()) => {
                if self.disk_full.swap(false, Ordering::Relaxed) {
                    tracing::warn!("disk space is back: writes are taken again");
                }
            }
            Err(_) => {}
        }
    }

    pub fn figures(&self) -> WriterFigures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterFigures {
            batches: get(&self.batches),
            jobs: get(&self.jobs),
            busy_seconds: get(&self.busy_micros) as f64 / 1e6,
            syncs: get(&self.syncs),
            sync_seconds: get(&self.sync_micros) as f64 / 1e6,
        }
    }

    fn add_micros(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// A write job runs against the writer's connection inside a savepoint. It reports whether it
/// succeeded (so its savepoint is kept or rolled back) and hands back the reply to send once the
/// batch's fate is known.
struct Job {
    /// Answered without waiting for its own batch to be durable (see [`Store::write_uncommitted`]).
    early: bool,
    run: Run,
}
type Run = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Settled) + Send>;

/// What became of the batch a job ran in, as far as its reply is concerned.
enum Settled {
    /// Committed and synced to disk.
    Durable,
    /// An early job: every earlier batch is durable; its own may still be lost.
    Early,
    /// Not kept: the batch could not begin or commit.
    Lost(Lost),
}

/// A committed (or failed) batch on its way to the sync thread.
struct Committed {
    early: Vec<Reply>,
    durable: Vec<Reply>,
    outcome: std::result::Result<(), Lost>,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, applies the schema or migrations, and
    /// starts the writer thread. The directory is created 0700 and the database file 0600.
    pub fn open(data_dir: &Path, synchronous: Synchronous) -> Result<Store> {
        Store::open_with(data_dir, synchronous, WAL_RESTART_FRAMES)
    }

    fn open_with(data_dir: &Path, synchronous: Synchronous, restart_frames: i64) -> Result<Store> {
        create_private_dir(data_dir)?;
        let path = data_dir.join("clicktermd.db");
        // Create the file ourselves so it is 0600 from its first byte; SQLite gives its -wal and -shm
        // files the same permissions as the database file.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                StoreError::Io(format!("cannot create database {}: {e}", path.display()))
            })?;

        let mut conn = open_connection(&path, "FULL")?;
        migrate::migrate(&mut conn, &path)?;
        // The writer commits without syncing; the sync thread syncs the log before anyone is told
        // (under `synchronous = full`), and the checkpointer alone copies the log into the database.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let checkpointer = open_connection(&path, "NORMAL")?;
        let restart_due = Arc::new(AtomicBool::new(false));
        let restart_asked = restart_due.clone();

        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| configure(c, "NORMAL"));
        let pool = r2d2::Pool::builder()
            .max_size(READERS as u32)
            .min_idle(Some(1))
            .build(manager)?;

        let credentials = cache::Credentials::default();
        let hook = credentials.generation();
        conn.update_hook(Some(move |_, _: &str, table: &str, _| {
            if table == "integrations" {
                hook.bump();
            }
        }))?;
        let changes = credentials.generation();
        let stats = Arc::new(WriterStats::default());
        let (writer_stats, sync_stats) = (stats.clone(), stats.clone());

        let (writer, jobs) = mpsc::sync_channel::<Job>(4 * MAX_BATCH);
        let (to_sync, committed) = mpsc::channel::<Committed>();
        let (to_checkpoint, commits) = mpsc::sync_channel::<()>(1);
        let wal = Wal {
            path: wal_path(&path),
            file: None,
            sync: synchronous == Synchronous::Full,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StoreError::Io(format!("cannot start the thread {name}: {e}")))
        };
        let threads = vec![
            spawn(
                "clicktermd-db-writer",
                Box::new(move || {
                    writer_loop(
                        conn,
                        jobs,
                        to_sync,
                        to_checkpoint,
                        changes,
                        &writer_stats,
                        &restart_due,
                    )
                }),
            )?,
            spawn(
                "clicktermd-db-sync",
                Box::new(move || sync_loop(wal, committed, &sync_stats)),
            )?,
            spawn(
                "clicktermd-db-checkpoint",
                Box::new(move || {
                    checkpoint_loop(checkpointer, commits, restart_frames, &restart_asked)
                }),
            )?,
        ];

        Ok(Store {
            inner: Arc::new(Backend::Sqlite(Sqlite {
                path,
                pool,
                readers: Arc::new(tokio::sync::Semaphore::new(READERS)),
                writer,
                credentials,
                stats,
                wake: Arc::new(tokio::sync::Notify::new()),
                _closer: Closer { threads },
            })),
        })
    }

    /// Connects to the PostgreSQL database of `storage.postgres_url`, migrating it under an advisory
    /// lock (see [`pg::Postgres::connect`]).
    pub async fn open_postgres(storage: &crate::config::StorageConfig) -> Result<Store> {
        Ok(Store {
            inner: Arc::new(Backend::Postgres(pg::Postgres::connect(storage).await?)),
        })
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner
    }

    /// The SQLite database file, when this store is one.
    pub fn path(&self) -> Option<&Path> {
        match self.backend() {
            Backend::Sqlite(s) => Some(&s.path),
            Backend::Postgres(_) => None,
        }
    }

    /// Where the records are, as it may be shown: the SQLite file, or the PostgreSQL URL without its
    /// password.
    pub fn describe(&self) -> String {
        match self.backend() {
            Backend::Sqlite(s) => s.path.display().to_string(),
            Backend::Postgres(p) => p.describe(),
        }
    }

    /// Whether writes are being refused because the disk holding the database is full.
    pub fn disk_full(&self) -> bool {
        self.writer_stats().disk_full()
    }

    /// A small real write (the time of the probe, in `settings`): tells whether the database can be
    /// written now. Used at start, and while the disk is full to notice when space returns.
    pub async fn probe_write(&self) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.write(|c| {
                    c.prepare_cached(
                        "INSERT INTO settings (key, value) VALUES ('write_probe', ?1) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([crate::model::Timestamp::now()
                        .millis()
                        .to_be_bytes()
                        .to_vec()])?;
                    Ok(())
                })
                .await
            }
            Backend::Postgres(p) => p.probe_write().await,
        }
    }

    /// The writer's and sync thread's running totals.
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        match self.backend() {
            Backend::Sqlite(s) => s.stats.clone(),
            Backend::Postgres(p) => p.stats(),
        }
    }

    /// The authentication facts of `app_id` (see [`integrations::credentials`]), from the cache when it
    /// holds them and nothing has changed in `integrations` since they were read.
    pub async fn credentials(&self, app_id: &str) -> Result<Option<integrations::Credentials>> {
        let cache = match self.backend() {
            Backend::Sqlite(s) => Some(&s.credentials),
            Backend::Postgres(p) => p.credentials_cache(),
        };
        if let Some(found) = cache.and_then(|c| c.get(app_id)) {
            return Ok(Some(found));
        }
        // Taken before the read starts: if the table changes while we read, the entry is stale at once.
        let seen = cache.map(|c| c.generation().current());
        let id = app_id.to_string();
        let found = match self.backend() {
            Backend::Sqlite(s) => s.read(move |c| integrations::credentials(c, &id)).await?,
            Backend::Postgres(p) => p.credentials(&id).await?,
        };
        if let (Some(found), Some(cache), Some(seen)) = (&found, cache, seen) {
            cache.put(app_id, seen, found.clone());
        }
        Ok(found)
    }

    /// Whether the database answers a query on a pooled connection.
    pub async fn ping(&self) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => {
                s.read(|c| {
                    Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                        .map(|_| ())?)
                })
                .await
            }
            Backend::Postgres(p) => p.ping().await,
        }
    }

    /// Woken whenever deliveries may have become due elsewhere: on PostgreSQL, by another node (its
    /// LISTEN connection); this node's own services wake the dispatcher themselves.
    pub fn delivery_wake(&self) -> Arc<tokio::sync::Notify> {
        match self.backend() {
            Backend::Sqlite(s) => s.wake.clone(),
            Backend::Postgres(p) => p.delivery_wake(),
        }
    }

    /// The SQLite store, for the unit tests that run their own statements on it.
    #[cfg(test)]
    fn sqlite(&self) -> &Sqlite {
        match self.backend() {
            Backend::Sqlite(s) => s,
            Backend::Postgres(_) => panic!("a SQLite store"),
        }
    }

    /// Copies the live database to `dest` (see [`backup`]); a PostgreSQL database is `pg_dump`'s.
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        match self.backend() {
            Backend::Sqlite(s) => backup(&s.path, dest),
            Backend::Postgres(_) => Err(StoreError::Io(
                "the records are in PostgreSQL: back them up with pg_dump (or PostgreSQL's own \
                 replication); `clicktermd backup` copies a SQLite database"
                    .into(),
            )),
        }
    }
}

impl Sqlite {
    /// Runs `f` on a pooled read connection, off the async workers.
    async fn read<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, E> + Send + 'static,
    {
        let permit =
            match tokio::time::timeout(READ_WAIT, self.readers.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(StoreError::Task("the read pool is closed".into()).into()),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "no database connection was free for {} s",
                        READ_WAIT.as_secs()
                    ))
                    .into());
                }
            };
        let pool = self.pool.clone();
        let done = tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(StoreError::from)?;
            f(&conn)
        })
        .await;
        // Given back once the blocking thread is done with the task, not from inside it: the next
        // read then finds that thread idle, where a permit given back a moment earlier had tokio
        // start a new thread for it (the pool grew to 60 threads for 8 connections).
        drop(permit);
        done.map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` as one atomic unit on the writer connection and returns its result once it is durably
    /// committed. If `f` returns an error, none of its changes are kept. `f` may fail with any error
    /// that a store error converts into, so a job can refuse on domain grounds mid-transaction.
    async fn write<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, E> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// One batch of a change done in batches (bulk redelivery, settling an integration's deliveries):
    /// like [`Store::write`], then waits as long as the batch took before answering. A loop of these
    /// takes at most half of the writer's time and of the disk's write bandwidth, leaving the rest to
    /// every other write. At full speed a bulk change wrote the log faster than the checkpointer
    /// copied it (a redelivery of 100 000 deliveries: 130 MB/s), and the log restarts and the syncs
    /// behind the checkpoints held other writes for 60–140 ms; paced, 30–40 ms, in three times as long.
    async fn write_batch<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, E> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let done = self.submit(f, false).await;
        tokio::time::sleep(started.elapsed()).await;
        done
    }

    /// Like [`Store::write`], but answers as soon as `f` has run inside the writer's open transaction,
    /// without waiting for the batch's commit (and its fsync). Later writes see its changes at once;
    /// readers see them after the commit. A crash or a failed commit can lose them after the caller
    /// was answered, so this is only for changes that are redone when lost: the dispatcher's claims (a
    /// lost claim leaves the delivery due, so it is claimed and sent again — at least once, as SPEC
    /// §5.3 allows). Never for anything acknowledged to a client.
    async fn write_uncommitted<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, E> + Send + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, E, F>(&self, f: F, early: bool) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<std::result::Result<T, E>>();
        let run = Box::new(move |conn: &Connection| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::Task("a write job panicked".into()).into()));
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |settled| {
                let _ = tx.send(match settled {
                    Settled::Durable | Settled::Early => result,
                    Settled::Lost(lost) if ok && lost.disk_full => Err(StoreError::DiskFull.into()),
                    Settled::Lost(lost) if ok => {
                        Err(StoreError::Task(format!("commit failed: {}", lost.text)).into())
                    }
                    Settled::Lost(_) => result,
                });
            });
            (ok, reply)
        });
        let job = Job { early, run };
        // The channel is bounded. Usually there is room and the job is queued from this async task
        // directly; a hop to a blocking thread for every write cost two thread wake-ups per request.
        // Under overload, senders wait for room on a blocking thread instead of queueing without limit.
        match self.writer.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::WriterGone.into()),
            Err(mpsc::TrySendError::Full(job)) => {
                let sender = self.writer.clone();
                tokio::task::spawn_blocking(move || sender.send(job))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
                    .map_err(|_| StoreError::WriterGone)?;
            }
        }
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// While writes fail because the disk is full, probes with a small write every few seconds, so that
/// the server notices space coming back (and `/healthz` says so) even when nobody writes. Ends with
/// `stop`.
pub async fn watch_disk(store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(2);
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if store.disk_full() {
            let _ = store.probe_write().await;
        }
    }
}

/// Takes a consistent copy of the database at `src` into the new file `dest` with SQLite's online
/// backup API, while a server may be writing to it. `dest` must not exist; it is created 0600 and
/// appears only once complete and on disk.
///
/// The whole copy runs inside one read transaction on the source: one snapshot of the write-ahead
/// log, whatever is committed meanwhile. SQLite restarts a backup from the first page when its source
/// connection begins a new read transaction and finds the database changed (its page cache is reset,
/// `sqlite3BackupRestart` in `pager_reset`); copied in steps that each took their own transaction, as
/// before, it restarted at every commit between two steps, so under steady writes a large database
/// never finished (an 11 GB copy was stuck at 84 MB after seven minutes at 2 writes/s). Holding the
/// one transaction open across the steps, no step ever sees a change. A restart is still watched for
/// (the pages left to copy must only go down); should one happen, the rest is copied in one step.
/// Readers of WAL never block writers, so the snapshot stalls nobody; the log grows until the copy
/// ends, because the checkpoint cannot pass a reader (the writer's log restart gives up after a
/// moment rather than wait for it, see [`RESTART_WAIT`]).
///
/// The copy goes in steps of [`BACKUP_STEP_PAGES`], each synced to disk before the next: written in
/// one go, the copy of a 6 GB database left gigabytes of dirty pages for the kernel to flush at once,
/// and the server's log syncs queued behind them (writes acknowledged 300–400 ms late).
///
/// The copy is written to `dest` with a `.partial` suffix, made a single self-contained file
/// (rollback journal, not WAL), synced, and only then linked to `dest` — which fails if `dest` has
/// appeared meanwhile, so nothing is overwritten — and the directory synced.
pub fn backup(src: &Path, dest: &Path) -> Result<()> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::Io(format!("cannot {what} {}: {e}", path.display()))
    };
    if dest.exists() {
        return Err(StoreError::Io(format!(
            "{} already exists; a backup never overwrites a file",
            dest.display()
        )));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| io("create the backup file", &partial, e))?;
    let copied = copy_snapshot(src, &partial).and_then(|()| {
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("sync", &partial, e))?;
        std::fs::hard_link(&partial, dest).map_err(|e| io("create", dest, e))
    });
    let removed = std::fs::remove_file(&partial);
    copied?;
    removed.map_err(|e| io("remove", &partial, e))?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory", dir, e))?;
    Ok(())
}

/// Pages copied per backup step (16 MiB of 4 KiB pages); the copy is synced after each.
const BACKUP_STEP_PAGES: i32 = 4096;

/// Copies every page of `src` into the empty database file `dest` within one read transaction (see
/// [`backup`]), then turns it into a rollback-journal database.
fn copy_snapshot(src: &Path, dest: &Path) -> Result<()> {
    use rusqlite::backup::StepResult;
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    source.busy_timeout(std::time::Duration::from_secs(10))?;
    // The read transaction the whole copy is taken in: it begins with the first read.
    source.execute_batch("BEGIN")?;
    source.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let mut target = Connection::open(dest)?;
    let written = std::fs::File::open(dest)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", dest.display())))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        let started = Instant::now();
        let mut copied = 0;
        let mut step = BACKUP_STEP_PAGES;
        loop {
            match backup.step(step)? {
                StepResult::Done => break,
                StepResult::More => {
                    let progress = backup.progress();
                    let now = progress.pagecount - progress.remaining;
                    if now < copied {
                        tracing::warn!("the backup restarted; copying the rest in one step");
                        step = -1;
                    }
                    copied = now;
                    written.sync_data().map_err(|e| {
                        StoreError::Io(format!("cannot sync {}: {e}", dest.display()))
                    })?;
                }
                // Busy or Locked: the source's log being recovered, say, before the first step.
                _ if started.elapsed() > std::time::Duration::from_secs(60) => {
                    return Err(StoreError::Io(format!(
                        "the database {} stayed locked for a minute; no backup taken",
                        src.display()
                    )));
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
    source.execute_batch("COMMIT")?;
    // The copy inherits WAL mode; make it a single self-contained file.
    target.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// One serving process per data directory: an exclusive advisory lock on `clicktermd.lock`, held for
/// as long as the value lives and released by the kernel when the process dies (even by `kill -9`).
/// Because of it, deliveries found `in_flight` at start belong to a process that is gone and can be
/// attempted again at once instead of waiting for their lease. Commands that only read or take a
/// backup do not take it and may run beside the server.
pub struct ServeLock {
    _file: std::fs::File,
}

impl ServeLock {
    /// Creates the data directory (0700) if needed, then takes the lock.
    pub fn acquire(data_dir: &Path) -> Result<ServeLock> {
        create_private_dir(data_dir)?;
        let path = data_dir.join("clicktermd.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(ServeLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Io(format!(
                "another clicktermd is already serving the data directory {} (it holds {})",
                data_dir.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StoreError::Io(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
        // `mode` is filtered by the umask; set it exactly.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            StoreError::Io(format!("cannot set permissions of {}: {e}", dir.display()))
        })?;
    } else if !dir.is_dir() {
        return Err(StoreError::Io(format!(
            "data directory {} is not a directory",
            dir.display()
        )));
    }
    Ok(())
}

fn open_connection(path: &Path, synchronous: &str) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn, synchronous)?;
    Ok(conn)
}

/// `synchronous` is SQLite's own level for this connection. Under our `synchronous = full` the log is
/// still synced before any write is acknowledged — by the sync thread, not inside `COMMIT`.
fn configure(conn: &Connection, synchronous: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The writer thread: one batch per loop, as described in the module documentation. Ends when every
/// `Store` handle is gone.
fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    to_sync: mpsc::Sender<Committed>,
    to_checkpoint: mpsc::SyncSender<()>,
    changes: cache::Generation,
    stats: &WriterStats,
    restart_due: &AtomicBool,
) {
    while let Ok(first) = jobs.recv() {
        let started = Instant::now();
        let before = changes.current();
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Early jobs run first, so they see only what earlier batches wrote — which is durable by the
        // time they are answered. (Concurrent requests have no order among themselves to keep.)
        batch.sort_by_key(|job| !job.early);
        let count = batch.len() as u64;
        let committed = run_batch(&conn, batch);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.jobs.fetch_add(count, Ordering::Relaxed);
        WriterStats::add_micros(&stats.busy_micros, started);
        // The update hook bumped the generation when a job changed `integrations`, but a reader may
        // have taken that generation and then read the rows as they were before this commit. Bumping
        // again now, before anyone is answered, makes whatever it cached stale too.
        if changes.current() != before {
            changes.bump();
        }
        if committed.outcome.is_ok() {
            let _ = to_checkpoint.try_send(());
        }
        stats.note_outcome(&committed.outcome);
        if to_sync.send(committed).is_err() {
            break;
        }
        // Between batches the writer holds no transaction, so the restart never competes with it.
        if restart_due.swap(false, Ordering::Relaxed) {
            restart_log(&conn);
        }
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) -> Committed {
    let mut committed = Committed {
        early: Vec::new(),
        durable: Vec::with_capacity(batch.len()),
        outcome: Ok(()),
    };
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        let why = Lost::from(&e);
        for job in batch {
            fail_job(job, conn, &why);
        }
        committed.outcome = Err(why);
        return committed;
    }
    for job in batch {
        let savepoint = run_cached(conn, "SAVEPOINT job");
        let (ok, reply) = (job.run)(conn);
        if savepoint.is_ok() {
            let end = if ok {
                run_cached(conn, "RELEASE job")
            } else {
                run_cached(conn, "ROLLBACK TO job").and_then(|()| run_cached(conn, "RELEASE job"))
            };
            if let Err(e) = end {
                tracing::error!(error = %e, "savepoint cleanup failed");
            }
        }
        if job.early {
            committed.early.push(reply);
        } else {
            committed.durable.push(reply);
        }
    }
    committed.outcome = run_cached(conn, "COMMIT").map_err(|e| {
        let lost = Lost::from(&e);
        // A full disk is logged once per episode by the writer loop, not for every batch.
        if !lost.disk_full {
            tracing::error!(error = %e, "commit failed; the batch is rolled back");
        }
        let _ = conn.execute_batch("ROLLBACK");
        lost
    });
    committed
}

/// Runs a statement without parameters from the connection's statement cache.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Answers a job whose batch could not even begin: it runs inside a transaction that is rolled back, so
/// its caller gets the error and nothing is kept.
fn fail_job(job: Job, conn: &Connection, why: &Lost) {
    let in_tx = conn.execute_batch("BEGIN").is_ok();
    let (_, reply) = (job.run)(conn);
    if in_tx {
        let _ = conn.execute_batch("ROLLBACK");
    }
    reply(Settled::Lost(why.clone()));
}

/// The write-ahead log as the sync thread sees it: a file it syncs (opened at its first sync), or
/// nothing to do under `synchronous = normal`.
struct Wal {
    path: PathBuf,
    file: Option<std::fs::File>,
    sync: bool,
}

impl Wal {
    /// Syncs the log; `false` when there is nothing to do (`synchronous = normal`).
    fn sync(&mut self) -> std::io::Result<bool> {
        if !self.sync {
            return Ok(false);
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(std::fs::File::open(&self.path)?),
        };
        file.sync_data().map(|()| true)
    }
}

/// The sync thread: takes committed batches in order, syncs the log once for all that are waiting, and
/// answers their jobs. An early job is answered as soon as every batch before its own is durable.
///
/// A failed sync is fatal: the kernel may have dropped the pages it could not write and report the
/// next sync clean, so nothing committed after it could be acknowledged honestly. The process aborts;
/// at the next start SQLite recovers the log as far as it reached the disk, and nothing lost had been
/// acknowledged.
fn sync_loop(mut wal: Wal, batches: mpsc::Receiver<Committed>, stats: &WriterStats) {
    while let Ok(first) = batches.recv() {
        for reply in first.early {
            reply(Settled::Early);
        }
        let mut waiting = vec![(first.durable, first.outcome)];
        let mut early = Vec::new();
        while let Ok(next) = batches.try_recv() {
            early.extend(next.early);
            waiting.push((next.durable, next.outcome));
        }
        let must_sync = waiting
            .iter()
            .any(|(replies, outcome)| outcome.is_ok() && !replies.is_empty());
        let started = Instant::now();
        let synced = if must_sync { wal.sync() } else { Ok(false) };
        if let Ok(true) = synced {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            WriterStats::add_micros(&stats.sync_micros, started);
        }
        if let Err(e) = synced {
            tracing::error!(
                error = %e,
                wal = %wal.path.display(),
                "cannot sync the database log to disk; stopping before acknowledging anything more"
            );
            std::process::abort();
        }
        for (replies, outcome) in waiting {
            for reply in replies {
                reply(match &outcome {
                    Ok(()) => Settled::Durable,
                    Err(lost) => Settled::Lost(lost.clone()),
                });
            }
        }
        for reply in early {
            reply(Settled::Early);
        }
    }
}

/// The checkpointer: after commits (at most every [`CHECKPOINT_INTERVAL`]), copies the log into the
/// database file without blocking the writer or readers (`PASSIVE`).
fn checkpoint_loop(
    conn: Connection,
    commits: mpsc::Receiver<()>,
    restart_frames: i64,
    restart_due: &AtomicBool,
) {
    let mut failing = false;
    while commits.recv().is_ok() {
        // (busy, frames in the log, frames copied)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => {
                failing = false;
                if frames >= restart_frames {
                    restart_due.store(true, Ordering::Relaxed);
                }
            }
            // Once per streak: on a full disk every round fails until space returns.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "checkpoint failed; the next ones will retry");
            }
            Err(_) => {}
        }
        std::thread::sleep(CHECKPOINT_INTERVAL);
    }
}

/// Run by the writer between batches when the checkpointer asks: copies the rest of the log into the
/// database, so the next write starts the log over (see [`WAL_RESTART_FRAMES`]). It gives up after
/// [`RESTART_WAIT`] if a reader is in the way; the checkpointer asks again after its next round.
fn restart_log(conn: &Connection) {
    let _ = conn.busy_timeout(RESTART_WAIT);
    match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    }) {
        Ok((0, frames)) => tracing::debug!(frames, "write-ahead log restarted"),
        Ok((_, frames)) => tracing::debug!(frames, "write-ahead log restart put off: a reader"),
        Err(e) => tracing::debug!(error = %e, "write-ahead log restart put off"),
    }
    let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store is the only code that speaks SQL (ARCHITECTURE.md): outside `src/store/` no source
    /// file names `rusqlite`, so a service cannot hold a connection or run a statement, and a second
    /// store implementation has one interface to provide — the `Store` operations.
    #[test]
    fn no_code_outside_the_store_names_rusqlite() {
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let store = src.join("store");
        let outside: Vec<_> = files.iter().filter(|f| !f.starts_with(&store)).collect();
        assert!(
            outside.len() > 20,
            "the walk found the sources: {outside:?}"
        );
        let offenders: Vec<_> = outside
            .iter()
            .filter(|f| std::fs::read_to_string(f).unwrap().contains("rusqlite"))
            .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
            .collect();
        assert!(
            offenders.is_empty(),
            "rusqlite is named outside src/store/ in {offenders:?}: give the store an operation instead"
        );
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data"), Synchronous::Full).unwrap();
        (dir, store)
    }

    /// Under a steady stream of commits the log is restarted once it passes its limit (here 256
    /// frames, 1 MiB), instead of growing with everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_a_steady_stream_of_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(&dir.path().join("data"), Synchronous::Full, 256).unwrap();
        store
            .sqlite()
            .write(|c| -> Result<()> {
                c.execute_batch("CREATE TABLE t (v BLOB)")?;
                Ok(())
            })
            .await
            .unwrap();
        let wal = wal_path(store.path().unwrap());
        let mut largest = 0;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..1_000 {
                    store
                        .sqlite()
                        .write(|c| -> Result<()> {
                            c.execute("INSERT INTO t (v) VALUES (randomblob(8000))", [])?;
                            Ok(())
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        while tasks.iter().any(|t| !t.is_finished()) {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // 8 000 rows of 8 000 bytes: 64 MB went through the log, which held all of it before.
        let written: i64 = store
            .sqlite()
            .read(|c| -> Result<i64> {
                Ok(c.query_row("SELECT sum(length(v)) FROM t", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(written, 8_000 * 8_000);
        assert!(
            largest < written as u64 / 3,
            "the log reached {largest} bytes for {written} written"
        );
    }

    #[tokio::test]
    async fn a_failed_job_keeps_nothing_and_does_not_disturb_its_batch() {
        let (_dir, store) = store();
        store
            .sqlite()
            .write(|c| -> Result<()> {
                c.execute_batch("CREATE TABLE t (v INTEGER UNIQUE)")?;
                Ok(())
            })
            .await
            .unwrap();
        // Many concurrent writers land in shared batches; every odd job inserts then fails.
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .sqlite()
                    .write(move |c| -> Result<i64> {
                        c.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                        if i % 2 == 1 {
                            c.execute("INSERT INTO t (v) VALUES (?1)", [i])?; // UNIQUE violation
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 100);
        let (count, odd): (i64, i64) = store
            .sqlite()
            .read(|c| -> Result<(i64, i64)> {
                Ok(c.query_row(
                    "SELECT count(*), count(*) FILTER (WHERE v % 2 = 1) FROM t",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!((count, odd), (100, 0));
    }

    #[test]
    fn data_dir_and_database_are_private() {
        let (dir, store) = store();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(store.path().unwrap()), 0o600);
    }
}
