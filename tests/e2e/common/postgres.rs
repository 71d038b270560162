//! A real PostgreSQL server for the tests that run on the PostgreSQL store: one throwaway cluster per
//! test process, made with Debian's `initdb` in a temporary directory, run as an unprivileged user
//! (PostgreSQL refuses to run as root; as root the tests run it as `postgres`, or `nobody`), listening
//! only on a loopback port, with a password (scram-sha-256) so URLs carry one as in production. Each
//! test server gets a database of its own. A watchdog stops the cluster and deletes its directory when
//! the test process ends, however it ends.
//!
//! `fsync` is off in the tests' cluster: the tests check behaviour, not durability. The benchmark
//! (`benches/pipeline/harness.rs` includes this file) starts its own with [`Cluster::start_durable`]:
//! PostgreSQL's default durability (`fsync` on, `synchronous_commit = on`, full page writes), in a
//! directory on the disk being measured, stopped by [`Cluster::stop`] when its run is over.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser the tests connect as, and its password.
pub const USER: &str = "clicktermd";
pub const PASSWORD: &str = "test-password-not-secret";

pub struct Cluster {
    pub port: u16,
    /// The CA (PEM file) that signed the server's certificate.
    pub ca: PathBuf,
    pub dir: PathBuf,
    bin: PathBuf,
    next: AtomicU64,
    /// The watchdog's process, waited for by [`Cluster::stop`] (the tests' cluster outlives them).
    watchdog: Mutex<Option<std::process::Child>>,
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(None, false, ""))
}

/// The directory of Debian's PostgreSQL programs (the newest installed), or `pg_config --bindir`.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("PostgreSQL is not installed (apt-get install postgresql): no initdb found");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The user the cluster runs as when the tests run as root.
fn unprivileged_user() -> Option<&'static str> {
    if rustix_is_root() {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let has = |u: &str| passwd.lines().any(|l| l.starts_with(&format!("{u}:")));
        Some(if has("postgres") {
            "postgres"
        } else {
            "nobody"
        })
    } else {
        None
    }
}

fn rustix_is_root() -> bool {
    // The effective uid, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program args…`, as the unprivileged user when there is one.
fn as_user(user: Option<&str>, program: &Path, args: &[&str]) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("port")
        .port()
}

impl Cluster {
    /// A cluster with PostgreSQL's default durability, in a new directory under `parent`, for the
    /// benchmark.
    #[allow(dead_code)] // the benchmark's; the tests use `cluster()`
    pub fn start_durable(parent: &Path) -> Cluster {
        Cluster::start(Some(parent), true, "")
    }

    /// [`Cluster::start_durable`] with `pg_stat_statements` loaded, to count and time every
    /// statement (the benchmark's `--pg-statements`).
    #[allow(dead_code)] // the benchmark's
    pub fn start_durable_counting(parent: &Path) -> Cluster {
        Cluster::start(
            Some(parent),
            true,
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
        )
    }

    /// A cluster in a new directory under `parent` (the system's temporary directory when `None`);
    /// with `durable` false, without `fsync`, synchronous commits or full page writes; `extra`
    /// is more of `postgres`'s command line.
    fn start(parent: Option<&Path>, durable: bool, extra: &str) -> Cluster {
        let bin = bin_dir();
        let user = unprivileged_user();
        let mut builder = tempfile::Builder::new();
        builder.prefix("clicktermd-pg-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .expect("temporary directory")
        .keep();
        if let Some(u) = user {
            let ok = Command::new("chown")
                .args([u, dir.to_str().expect("UTF-8 path")])
                .status()
                .expect("chown");
            assert!(ok.success(), "chown of the cluster directory to {u}");
        }
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        if let Some(u) = user {
            Command::new("chown")
                .args([u, pwfile.to_str().unwrap()])
                .status()
                .expect("chown");
        }
        let out = as_user(
            user,
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
                "--no-sync",
            ],
        )
        .output()
        .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Any loopback address may connect (it also listens on 127.0.0.3, below).
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str("host all all 127.0.0.0/8 scram-sha-256\n");
        std::fs::write(&hba, rules).expect("pg_hba.conf");
        // TLS for the tests of `sslmode` (plain connections stay allowed): a CA of its own and a
        // certificate for localhost and 127.0.0.1 — not 127.0.0.3, where it listens too, so a
        // name that does not match is at hand.
        let ca = write_tls_files(&dir);
        for (file, mode) in [("server.crt", "0644"), ("server.key", "0600")] {
            let path = dir.join(file);
            Command::new("chmod")
                .args([mode, path.to_str().unwrap()])
                .status()
                .expect("chmod");
            if let Some(u) = user {
                Command::new("chown")
                    .args([u, path.to_str().unwrap()])
                    .status()
                    .expect("chown");
            }
        }
        let port = free_port();
        let log = dir.join("log");
        let durability = if durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        // The watchdog: runs PostgreSQL, and once this test process is gone stops it (fast shutdown)
        // and deletes the cluster. It polls /proc, which works whatever user it runs as.
        let script = format!(
            "{postgres} -D {data} -p {port} -k {dir} \
             -c listen_addresses=127.0.0.1,127.0.0.3 -c ssl=on -c ssl_cert_file={dir}/server.crt \
             -c ssl_key_file={dir}/server.key \
             {durability} {extra} -c max_connections=400 -c shared_buffers=64MB >{log} 2>&1 & pg=$!; \
             while [ -d /proc/{me} ] && [ -d /proc/$pg ]; do sleep 0.5; done; \
             kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            log = log.display(),
            me = std::process::id(),
        );
        let watchdog = as_user(user, Path::new("/bin/sh"), &["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start PostgreSQL");
        let cluster = Cluster {
            port,
            ca,
            dir,
            bin,
            next: AtomicU64::new(0),
            watchdog: Mutex::new(Some(watchdog)),
        };
        cluster.wait_ready(&log);
        cluster
    }

    fn wait_ready(&self, log: &Path) {
        let started = Instant::now();
        loop {
            let out = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .expect("pg_isready");
            if out.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The postmaster's process id, from the first line of `postmaster.pid` in the data directory.
    #[allow(dead_code)] // the benchmark's
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the cluster (fast shutdown: SIGINT to the postmaster), waits for the postmaster to exit
    /// and its watchdog to empty the directory, and removes the directory (the watchdog, running as
    /// the unprivileged user, cannot remove it from a parent that is not its own).
    #[allow(dead_code)] // the benchmark's
    pub fn stop(&self) {
        let started = Instant::now();
        let waited = |done: &dyn Fn() -> bool| {
            while !done() && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
            waited(&|| !Path::new(&format!("/proc/{pid}")).exists());
        }
        waited(&|| std::fs::read_dir(&self.dir).map_or(true, |mut d| d.next().is_none()));
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.lock().unwrap().take() {
            let _ = watchdog.wait();
        }
    }

    /// A URL for `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// A new, empty database; returns its name.
    pub async fn create_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::SeqCst)
        );
        let client = self.connect("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        name
    }

    /// A client connection to `database`, its connection driven by a task of its own.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
                .await
                .expect("connect to the test cluster");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

/// Writes the cluster's CA (`ca.pem`, returned) and a server certificate it signed for localhost and
/// 127.0.0.1 (`server.crt`, `server.key`) into `dir`.
fn write_tls_files(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.distinguished_name
        .push(DnType::CommonName, "clicktermd test PostgreSQL CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server certificate parameters");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    let key = KeyPair::generate().expect("server key");
    let cert = leaf.signed_by(&key, &ca).expect("server certificate");
    std::fs::write(dir.join("server.crt"), cert.pem()).expect("server.crt");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("server.key");
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.pem()).expect("ca.pem");
    path
}
