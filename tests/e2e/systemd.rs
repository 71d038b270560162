//! The Debian package under a real systemd. A minimal Debian of the host's release (debootstrap, from
//! Debian's packages: systemd, systemd-sysv, dbus, curl and adduser, which the package depends on) gets
//! the package installed with `dpkg -i`, as a machine would, and then boots: `systemd-nspawn --boot`
//! with its own network namespace, so the container has a loopback of its own and no other interface.
//! The test reaches it with `nsenter -t PID -a` (commands inside it, curl for the HTTP API) and asserts
//! what the unit and the maintainer scripts promise: the service starts at boot because the package
//! enabled it, answers `/healthz`, runs as the `clicktermd` system user in its 0700 state directory with
//! its sandboxing (seccomp filter, no privileges), delivers a verified event's webhook to a receiver on
//! the container's own 127.0.0.1, keeps its data over `systemctl restart`, stops within its
//! `TimeoutStopSec`, and the container powers off cleanly.
//!
//! The root file system is cached between runs (see [`debian_root`]): building it takes a couple of
//! minutes, copying the cached one a second or two. The test never installs anything on the host; it
//! needs root (debootstrap, systemd-nspawn, nsenter), as CI has, and fails without it unless
//! `NO_SYSTEMD_BOOT_TEST=1` opts out explicitly.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::common::receiver::{ReceivedRequest, SCRIPT, write_certificates};
use crate::common::{DEADLINE, assert_success, stderr, stdout};
// The package's paths, which are the container's here.
use crate::packaging::{CONFIG, ENABLED_LINK, STATE, UNIT, run, run_ok};

const OPT_OUT: &str = "NO_SYSTEMD_BOOT_TEST";

/// Where the root file systems are kept between runs: outside any clone of the repository, so a fresh
/// CI clone on the same machine finds the one an earlier run built; under /var/cache, whose contents
/// may be deleted at any time without losing anything (the next run builds it again).
const CACHE: &str = "/var/cache/clicktermd-tests/debian-root";

/// Bumped whenever what the cached tree contains changes in a way the rest of the key does not show.
const RECIPE: u32 = 1;

/// What debootstrap puts on top of the `minbase` variant (essential packages and apt): an init
/// system and its bus to boot, curl to reach the server from inside, adduser because the package
/// depends on it.
const PACKAGES: [&str; 5] = ["systemd", "systemd-sysv", "dbus", "curl", "adduser"];

/// The receiver's CA, where the conffile's comment suggests an operator puts it.
const RECEIVER_CA: &str = "/etc/clicktermd/receiver-ca.pem";
/// Where the test's files (the package, the CA) are bound into the container while installing.
const STAGE: &str = "/mnt/clicktermd-test";

/// The receiver's port on the container's loopback. The container has a network namespace of its
/// own, so no other program on this machine can hold it.
const RECEIVER_PORT: u16 = 8443;

/// Held while a container of this test runs. systemd-nspawn with `--keep-unit` (there is no systemd on
/// the host to make a scope for it) puts the container in `payload/` and itself in `supervisor/`
/// under its caller's cgroup, the same two for every container started from the same cgroup: two
/// at once would share one cgroup tree, and one's poweroff would kill the other's processes. So
/// boots wait for each other, machine-wide.
const BOOT_LOCK: &str = "/run/lock/clicktermd-boot-test.lock";

/// Booting, and powering off, take seconds; this bounds them on a busy machine.
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The root file system and its cache.

/// The host's Debian release: the container runs the same one, so the package built here (its
/// `libc6` dependency from dpkg-shlibdeps) installs there.
fn host_codename() -> String {
    let os = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .expect("VERSION_CODENAME in /etc/os-release: the boot test needs a Debian host")
}

/// The cache entry's name: the release, the architecture and a digest of everything that decides
/// what debootstrap puts in the tree (its own version, which also fixes its default mirror, the
/// variant, the packages, this recipe). A change to any of them is a new entry, never a stale hit.
fn cache_key(suite: &str) -> String {
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string();
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "debootstrap"]));
    assert!(
        out.status.success(),
        "debootstrap is not installed: apt-get install debootstrap systemd-container (.ci/run does)"
    );
    let debootstrap = stdout(&out);
    let recipe = format!(
        "recipe {RECIPE}\nsuite {suite}\narch {arch}\ndebootstrap {debootstrap}\nvariant minbase\n\
         include {}\n",
        PACKAGES.join(",")
    );
    let digest = hex::encode(Sha256::digest(recipe.as_bytes()));
    format!("{suite}-{arch}-{}", &digest[..16])
}

/// How the root was had, for the timings the test prints.
enum RootFrom {
    Cache,
    Built(Duration),
}

/// The cached root for the current key, built first if there is none.
///
/// Safe when runs race: the entry is built in a directory of its own (`.build-*`) and renamed to its
/// key only when complete, so an entry under its key is always whole, and nothing ever writes to it
/// again (each run boots a copy). An exclusive lock on `.lock` is held while looking and building, so
/// a second run waits for the first one's debootstrap instead of doing the same work, and finds its
/// entry. A run killed while building leaves only a `.build-*` directory, removed by a later run
/// once it is a day old.
fn debian_root() -> (PathBuf, RootFrom) {
    let suite = host_codename();
    let key = cache_key(&suite);
    std::fs::create_dir_all(CACHE).unwrap_or_else(|e| panic!("create {CACHE}: {e}"));
    let cache = Path::new(CACHE);
    let lock = File::create(cache.join(".lock")).expect("the cache's lock file");
    lock.lock().expect("lock the root file system cache");
    let entry = cache.join(&key);
    if entry.join("etc/os-release").is_file() {
        return (entry, RootFrom::Cache);
    }
    for old in std::fs::read_dir(cache).unwrap().flatten() {
        let stale = old.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
            SystemTime::now().duration_since(t).unwrap_or_default() > Duration::from_secs(86_400)
        });
        if old.file_name().to_string_lossy().starts_with(".build-") && stale {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache)
        .expect("a build directory in the cache");
    let tree = build.path().join("root");
    let log = build.path().join("debootstrap.log");
    let started = Instant::now();
    // No mirror named: debootstrap's default, Debian's own.
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(&suite)
        .arg(&tree)
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(build.path().join("debootstrap.err")).unwrap())
        .status()
        .expect("run debootstrap (apt-get install debootstrap)");
    assert!(
        status.success(),
        "debootstrap {suite} failed ({status}):\n{}\n{}",
        tail(&log, 30),
        tail(&build.path().join("debootstrap.err"), 30)
    );
    // The downloaded packages and the package lists are of no use to a container that installs
    // nothing from the network: without them every run copies a third less.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        for file in std::fs::read_dir(tree.join(dir)).unwrap().flatten() {
            if file.file_type().unwrap().is_file() {
                std::fs::remove_file(file.path()).unwrap();
            }
        }
    }
    let took = started.elapsed();
    std::fs::rename(&tree, &entry)
        .unwrap_or_else(|e| panic!("move the new root to {}: {e}", entry.display()));
    (entry, RootFrom::Built(took))
}

// ---------------------------------------------------------------------------------------------
// The container.

/// systemd-nspawn on `root` as this test runs it: no systemd on the host to register with or to make
/// a scope (`--keep-unit --register=no`), a network namespace of its own, a clean environment.
fn nspawn(root: &Path, machine: &str) -> Command {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args([
        "--quiet",
        "--keep-unit",
        "--register=no",
        "--private-network",
    ])
    .arg(format!("--machine={machine}"))
    .arg("-D")
    .arg(root)
    .env_clear()
    .env("PATH", PATH);
    cmd
}

/// A booted container: `systemd-nspawn` as a child, the container's PID 1 as seen from here, and its
/// root, a copy of the cached tree. Dropped, it kills the container (its PID 1, and with it everything
/// in its PID namespace) if it is still running, then deletes the copy, so a failed assertion leaves
/// nothing running and nothing behind.
struct Container {
    nspawn: Option<Child>,
    _boot_lock: File,
    leader: u32,
    machine: String,
    root: PathBuf,
    boot_log: PathBuf,
    // Last, so the tree is deleted after the container is gone.
    _dir: TempDir,
}

impl Container {
    /// Copies the cached root, installs the package and the files in `stage` (bound read-only at
    /// [`STAGE`]) with `install` (a shell script run in the container, not booted), lets `configure`
    /// change the tree, then boots it and waits until systemd reports the boot finished.
    fn boot(
        cached: &Path,
        stage: &Path,
        install: &str,
        configure: impl FnOnce(&Path),
    ) -> Container {
        let boot_lock = File::create(BOOT_LOCK).unwrap_or_else(|e| panic!("{BOOT_LOCK}: {e}"));
        let waited = Instant::now();
        boot_lock.lock().expect("lock the boot test's lock");
        if waited.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "waited {:?} for another boot test's container",
                waited.elapsed()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("systemd-boot-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let root = dir.path().join("root");
        let started = Instant::now();
        run_ok(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(cached)
                .arg(&root),
        );
        eprintln!("copied the root file system in {:?}", started.elapsed());
        // The machine name is the container's host name; unique, so two runs never share one.
        let machine = format!("clicktermd-test-{}", std::process::id());

        let started = Instant::now();
        let out = run(nspawn(&root, &machine)
            .arg(format!("--bind-ro={}:{STAGE}", stage.display()))
            .args([
                "--setenv=DEBIAN_FRONTEND=noninteractive",
                "--",
                "/bin/sh",
                "-ec",
            ])
            .arg(install));
        assert_success(&out, "installing the package in the container");
        eprintln!(
            "installed in the container ({:?}):\n{}{}",
            started.elapsed(),
            stdout(&out),
            stderr(&out)
        );
        configure(&root);

        let boot_log = dir.path().join("boot.log");
        let started = Instant::now();
        let nspawn = nspawn(&root, &machine)
            .args(["--boot", "--console=read-only"])
            .stdin(Stdio::null())
            .stdout(File::create(&boot_log).unwrap())
            .stderr(File::create(dir.path().join("nspawn.err")).unwrap())
            .spawn()
            .expect("run systemd-nspawn (apt-get install systemd-container)");
        let mut container = Container {
            nspawn: Some(nspawn),
            _boot_lock: boot_lock,
            leader: 0,
            machine,
            root,
            boot_log,
            _dir: dir,
        };
        container.leader = container.find_leader();
        // `is-system-running --wait` blocks until the boot is over; before systemd listens on its
        // socket it fails at once (nothing, or "offline"/"unknown"), and is asked again.
        let state = loop {
            let out = container.exec(&["systemctl", "is-system-running", "--wait"]);
            let state = stdout(&out).trim().to_string();
            if ["running", "degraded", "maintenance", "stopping"].contains(&state.as_str()) {
                break state;
            }
            container.assert_running();
            assert!(
                started.elapsed() < BOOT_DEADLINE,
                "the container did not finish booting within {BOOT_DEADLINE:?}: {state:?} {}\n{}",
                stderr(&out),
                tail(&container.boot_log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!("booted in {:?}: {state}", started.elapsed());
        assert_eq!(
            state,
            "running",
            "the boot did not end cleanly; failed units:\n{}",
            container.sh("systemctl --failed --no-legend; journalctl -b -p warning --no-pager")
        );
        container
    }

    /// The container's PID 1, as this machine's PID: the child of systemd-nspawn that runs systemd.
    fn find_leader(&mut self) -> u32 {
        let nspawn = self.nspawn.as_ref().unwrap().id();
        let started = Instant::now();
        loop {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                // pid (comm) state ppid …; comm may hold spaces, so split after its ')'.
                let Some((comm, rest)) = stat.rsplit_once(')') else {
                    continue;
                };
                let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
                if ppid == Some(nspawn) && comm.ends_with("(systemd") {
                    return pid;
                }
            }
            self.assert_running();
            assert!(
                started.elapsed() < BOOT_DEADLINE,
                "systemd-nspawn started no systemd"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails, showing the boot log, if systemd-nspawn has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.nspawn.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "systemd-nspawn exited with {status}:\n{}\n{}",
                tail(&self.boot_log, 40),
                tail(&self.boot_log.with_file_name("nspawn.err"), 40)
            );
        }
    }

    /// A command run inside the container: in all its namespaces, with its root file system, and a
    /// clean environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "--"])
            .args(args)
            .env_clear()
            .env("PATH", PATH);
        cmd
    }

    fn exec(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs `args` inside; asserts success; returns standard output.
    fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert_success(&out, &format!("in the container: {args:?}"));
        stdout(&out)
    }

    /// A shell script inside, for diagnostics: whatever it printed, success or not.
    fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        format!("{}{}", stdout(&out), stderr(&out))
    }

    /// `systemctl show -P PROPERTY clicktermd`.
    fn unit_property(&self, property: &str) -> String {
        self.exec_ok(&["systemctl", "show", "-P", property, "clicktermd"])
            .trim()
            .to_string()
    }

    /// An HTTP request to the server on the container's loopback, made by the container's curl;
    /// returns the status and the body as JSON (`null` when empty).
    fn http(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut args = vec![
            "curl".to_string(),
            "--silent".into(),
            "--show-error".into(),
            "--max-time".into(),
            DEADLINE.as_secs().to_string(),
            "--request".into(),
            method.into(),
            "--write-out".into(),
            "\n%{http_code}".into(),
        ];
        for (name, value) in headers {
            args.push("--header".into());
            args.push(format!("{name}: {value}"));
        }
        if body.is_some() {
            args.extend([
                "--header".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                "@-".into(),
            ]);
        }
        args.push(url.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter curl");
        let input = body.map(|b| b.to_string()).unwrap_or_default();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let what = format!("{method} {url}");
        assert_success(&out, &what);
        let text = stdout(&out);
        let (body, status) = text
            .rsplit_once('\n')
            .unwrap_or_else(|| panic!("{what}: no status from curl: {text:?}"));
        let status: u16 = status
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {text:?}"));
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"))
        };
        (status, json)
    }

    /// Waits until systemd-nspawn exits; returns its status and how long that took.
    fn wait_exit(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.nspawn.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.nspawn = None;
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < deadline,
                "the container did not power off within {deadline:?}:\n{}",
                tail(&self.boot_log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        if std::thread::panicking() && self.leader != 0 {
            eprintln!(
                "the container's journal (last 60 lines):\n{}\nits console:\n{}",
                self.sh("journalctl -b --no-pager -n 60"),
                tail(&self.boot_log, 40)
            );
        }
        // SIGKILL to a PID namespace's init ends every process in it.
        if self.leader != 0 {
            let _ = run(Command::new("kill").args(["-KILL", &self.leader.to_string()]));
        }
        let _ = nspawn.kill();
        let _ = nspawn.wait();
        // What systemd-nspawn removes itself when it exits normally, and a killed one leaves: its
        // (empty) propagation directory for the machine and its lock on the root's inode.
        let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.machine));
        if let Ok(meta) = std::fs::metadata(&self.root) {
            let _ = std::fs::remove_file(format!(
                "/run/systemd/nspawn/locks/inode-{}:{}",
                meta.dev(),
                meta.ino()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver, on the container's loopback.

/// `receiver.py` (the harness's HTTPS webhook endpoint, which checks each delivery's signature on its
/// own) run by this machine's python3 inside the container's network namespace only: it listens on
/// the container's 127.0.0.1, where the service's webhooks go, while its script, certificate and
/// request log stay on this side. nsenter execs python3 (no fork for a network namespace), so the
/// child is python3 itself, killed when this is dropped.
struct NetnsReceiver {
    child: Child,
    log: PathBuf,
    stderr: PathBuf,
}

impl NetnsReceiver {
    fn start(container: &Container, certs: &Path, secret: &str) -> NetnsReceiver {
        let log = certs.join("requests.jsonl");
        let stderr = certs.join("receiver.err");
        File::create(&log).unwrap();
        let mut child = Command::new("nsenter")
            .arg("-t")
            .arg(container.leader.to_string())
            .args([
                "-n",
                "--",
                "python3",
                SCRIPT,
                "--bind",
                "127.0.0.1",
                "--port",
            ])
            .arg(RECEIVER_PORT.to_string())
            .arg("--cert")
            .arg(certs.join("cert.pem"))
            .arg("--key")
            .arg(certs.join("key.pem"))
            .arg("--log")
            .arg(&log)
            .env("CLICKTERM_WEBHOOK_SECRET", secret)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("nsenter python3 receiver.py");
        // Listening once the network namespace it is in lists its socket: /proc/PID/net/tcp is that
        // namespace's table (local address hex ip:port, state 0A = LISTEN). No request is made.
        let port = format!(":{RECEIVER_PORT:04X} ");
        let started = Instant::now();
        loop {
            let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", child.id()))
                .unwrap_or_default();
            let listening = table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && format!("{} ", f[1]).ends_with(&port) && f[3] == "0A"
            });
            if listening {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the receiver exited with {status}: {}", tail(&stderr, 30));
            }
            assert!(started.elapsed() < DEADLINE, "the receiver never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        NetnsReceiver { child, log, stderr }
    }

    fn requests(&self) -> Vec<ReceivedRequest> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line ({e}): {l}")))
            .collect()
    }

    fn wait_for_one(&mut self) -> ReceivedRequest {
        let started = Instant::now();
        loop {
            if let Some(first) = self.requests().into_iter().next() {
                return first;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the receiver exited with {status}: {}",
                    tail(&self.stderr, 30)
                );
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no webhook reached the receiver within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for NetnsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The test.

/// `/proc/PID/status` of a process inside the container, as `(key, value)` lines.
fn proc_status(container: &Container, pid: &str) -> Vec<(String, String)> {
    container
        .exec_ok(&["cat", &format!("/proc/{pid}/status")])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(status: &'a [(String, String)], key: &str) -> &'a str {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status"))
}

/// A unit's time span in seconds (`330s`, `5min`, `5min 30s`, `90`), as systemd reads one.
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|part| {
            let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("time span {span:?}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                "h" => n * 3600,
                unit => panic!("time span {span:?}: unit {unit:?}"),
            }
        })
        .sum()
}

/// Polls `GET /api/v1/deliveries/{id}` inside the container until the delivery has finished.
fn finished_delivery(c: &Container, base: &str, auth: &[(&str, &str)], id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, d) = c.http("GET", &format!("{base}/api/v1/deliveries/{id}"), auth, None);
        assert_eq!(status, 200, "{d}");
        if d["state"] == "succeeded" || d["state"] == "failed" {
            return d;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the delivery did not finish: {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_package_boots_under_systemd_delivers_restarts_and_stops_in_time() {
    if !is_root() {
        if std::env::var_os(OPT_OUT).is_some_and(|v| v == "1") {
            eprintln!(
                "SKIPPED: the boot test needs root (debootstrap, systemd-nspawn); {OPT_OUT}=1 opted \
                 out of it. The package was NOT booted under systemd."
            );
            return;
        }
        panic!(
            "this test builds a Debian root with debootstrap and boots it with systemd-nspawn, so it \
             needs root, as CI has. Run the suite as root, or set {OPT_OUT}=1 to skip only this test \
             knowingly."
        );
    }
    let whole = Instant::now();
    let deb = crate::packaging::package();
    let (cached, from) = debian_root();
    match from {
        RootFrom::Cache => eprintln!("root file system from the cache: {}", cached.display()),
        RootFrom::Built(took) => eprintln!("debootstrap built {} in {took:?}", cached.display()),
    }

    // What goes into the container: the package and the receiver's CA (its certificate and key stay
    // here, with the receiver).
    let certs = tempfile::tempdir().unwrap();
    write_certificates(&certs);
    let stage = tempfile::tempdir().unwrap();
    std::fs::copy(deb, stage.path().join("clicktermd.deb")).unwrap();
    std::fs::copy(
        certs.path().join("ca.pem"),
        stage.path().join("receiver-ca.pem"),
    )
    .unwrap();
    // dpkg -i as on any machine (systemd is not running, so postinst enables the unit without
    // starting it); then the CA file the way the conffile says to give the service a file.
    let install = format!(
        "dpkg -i {STAGE}/clicktermd.deb\n\
         install -o root -g clicktermd -m 0640 {STAGE}/receiver-ca.pem {RECEIVER_CA}\n"
    );
    let mut c = Container::boot(&cached, stage.path(), &install, |root| {
        // The operator's two changes to the conffile for a receiver on this machine: its address
        // allowed past the SSRF policy, its CA trusted.
        let path = root.join(CONFIG.trim_start_matches('/'));
        let text = std::fs::read_to_string(&path).unwrap();
        let edits = [
            (
                "allow_private_cidrs = []",
                "allow_private_cidrs = [\"127.0.0.1/32\"]",
            ),
            (
                "# extra_ca_file = \"/etc/clicktermd/receiver-ca.pem\"",
                "extra_ca_file = \"/etc/clicktermd/receiver-ca.pem\"",
            ),
        ];
        let mut edited = text.clone();
        for (from, to) in edits {
            assert_eq!(
                edited.matches(from).count(),
                1,
                "the conffile has one {from:?}"
            );
            edited = edited.replace(from, to);
        }
        // Writing the existing file keeps its owner and mode (root:clicktermd 0640).
        std::fs::write(&path, edited).unwrap();
        let listen = text.parse::<toml::Table>().unwrap()["server"]["listen"]
            .as_str()
            .map(String::from);
        assert_eq!(
            listen.as_deref(),
            Some("127.0.0.1:8080"),
            "the conffile's listen address"
        );
    });
    let base = "http://127.0.0.1:8080";

    // Enabled by the package, started by the boot.
    assert!(
        c.root
            .join(ENABLED_LINK.trim_start_matches('/'))
            .is_symlink(),
        "postinst enabled the unit"
    );
    assert_eq!(
        c.exec_ok(&["systemctl", "is-enabled", "clicktermd"]).trim(),
        "enabled"
    );
    assert_eq!(
        c.exec_ok(&["systemctl", "is-active", "clicktermd"]).trim(),
        "active",
        "{}",
        c.sh("systemctl status clicktermd --no-pager; journalctl -u clicktermd --no-pager")
    );
    // Started by the boot: multi-user.target wants it (the link above), and a target is ordered after
    // what it wants, so the service became active before the target was reached.
    let active_at: u64 = c
        .unit_property("ActiveEnterTimestampMonotonic")
        .parse()
        .unwrap();
    let target_at: u64 = c
        .exec_ok(&[
            "systemctl",
            "show",
            "-P",
            "ActiveEnterTimestampMonotonic",
            "multi-user.target",
        ])
        .trim()
        .parse()
        .unwrap();
    assert!(
        0 < active_at && active_at <= target_at,
        "clicktermd active at {active_at} µs, multi-user.target at {target_at} µs"
    );
    assert_eq!(c.unit_property("NRestarts"), "0");

    // Answers, on the container's loopback.
    let (status, health) = c.http("GET", &format!("{base}/healthz"), &[], None);
    assert_eq!(status, 200, "/healthz: {health}");

    // The user and the state directory, as postinst and StateDirectory= make them.
    let passwd = c.exec_ok(&["getent", "passwd", "clicktermd"]);
    let user: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid < 1000, "clicktermd is a system user: {passwd}");
    assert_eq!((user[5], user[6]), (STATE, "/usr/sbin/nologin"), "{passwd}");
    let stat = |path: &str| {
        c.exec_ok(&["stat", "-c", "%U:%G %a %F", path])
            .trim()
            .to_string()
    };
    assert_eq!(stat(STATE), "clicktermd:clicktermd 700 directory");
    assert_eq!(
        stat(&format!("{STATE}/clicktermd.db")),
        "clicktermd:clicktermd 600 regular file"
    );
    assert_eq!(stat(CONFIG), "root:clicktermd 640 regular file");
    // The first admin password where the README sends an operator for it: the service's journal.
    let password_file = format!("{STATE}/initial-admin-password");
    assert_eq!(
        stat(&password_file),
        "clicktermd:clicktermd 600 regular file"
    );
    let password = c.exec_ok(&["cat", &password_file]).trim().to_string();
    assert!(!password.is_empty());
    let journal = c.exec_ok(&["journalctl", "-u", "clicktermd", "-o", "cat", "--no-pager"]);
    assert!(
        journal.contains(&password),
        "the first admin password is not in journalctl -u clicktermd:\n{journal}"
    );

    // The running process is the unit's, with its sandboxing: its user, no privileges, a seccomp
    // filter (mode 2: SystemCallFilter=), its own mount namespace (ProtectSystem=, PrivateTmp=).
    let main_pid = c.unit_property("MainPID");
    let status = proc_status(&c, &main_pid);
    assert!(
        field(&status, "Uid")
            .split_whitespace()
            .all(|u| u == uid.to_string())
    );
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(field(&status, "CapEff"), "0000000000000000");
    assert_eq!(field(&status, "CapBnd"), "0000000000000000");
    assert_eq!(
        field(&status, "Seccomp"),
        "2",
        "SystemCallFilter= is in force"
    );
    let filters: u32 = field(&status, "Seccomp_filters").parse().unwrap();
    assert!(filters >= 1);
    let own_mounts = c.exec_ok(&["readlink", &format!("/proc/{main_pid}/ns/mnt")]);
    assert_ne!(own_mounts, c.exec_ok(&["readlink", "/proc/1/ns/mnt"]));
    // The filter systemd made of the unit's lines: an allow-list (@system-service less @privileged)
    // with what a server and its webhooks need, without what a privileged process would call.
    let allowed = c.unit_property("SystemCallFilter");
    let allowed: Vec<&str> = allowed.split_whitespace().collect();
    for call in ["connect", "sendto", "recvfrom", "epoll_wait", "fdatasync"] {
        assert!(
            allowed.contains(&call),
            "{call} is not allowed: {allowed:?}"
        );
    }
    for call in ["mount", "reboot", "setuid", "chown", "kexec_load", "swapon"] {
        assert!(!allowed.contains(&call), "{call} is allowed: {allowed:?}");
    }

    // An admin token from the command line, as the service user (the README's way), then a verified
    // event through the API whose webhook goes to the receiver on the container's loopback.
    let token = c
        .exec_ok(&[
            "runuser",
            "-u",
            "clicktermd",
            "--",
            "clicktermd",
            "--config",
            CONFIG,
            "admin",
            "token",
            "create",
        ])
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let callback = format!("https://127.0.0.1:{RECEIVER_PORT}/ok");
    let (status, created) = c.http(
        "POST",
        &format!("{base}/api/v1/integrations"),
        &auth,
        Some(&json!({"name": "Under systemd", "callbackUrl": callback})),
    );
    assert_eq!(status, 201, "create the integration: {created}");
    let app_id = created["appId"].as_str().unwrap().to_string();
    let app_key = created["appKey"].as_str().unwrap().to_string();
    let mut receiver =
        NetnsReceiver::start(&c, certs.path(), created["signingSecret"].as_str().unwrap());

    let (status, template) = c.http(
        "POST",
        &format!("{base}/api/v1/templates"),
        &auth,
        Some(&json!({"name": "Terms", "defaultLanguage": "en",
                     "languages": {"en": {"title": "Terms", "content": "<p>Terms</p>"}}})),
    );
    assert_eq!(status, 201, "{template}");
    let tid = template["id"].as_str().unwrap();
    let (status, version) = c.http(
        "POST",
        &format!("{base}/api/v1/templates/{tid}/versions"),
        &auth,
        Some(&json!({"type": "MAJOR"})),
    );
    assert_eq!(status, 201, "{version}");
    let (status, acted) = c.http(
        "POST",
        &format!("{base}/public-client/v1/clickwrap"),
        &[],
        Some(
            &json!({"appId": app_id, "clickwrapTemplateId": tid, "endUserId": "boot-user",
                     "action": "ACCEPTED"}),
        ),
    );
    assert_eq!(status, 201, "{acted}");
    let (status, verified) = c.http(
        "POST",
        &format!("{base}/public-client/v1/clickwrap/verify"),
        &[("X-APP-ID", &app_id), ("X-APP-KEY", &app_key)],
        Some(&json!({"clicktermSignature": acted["clicktermSignature"]})),
    );
    assert_eq!(status, 200, "{verified}");
    let event_id = verified["clickwrapEventId"].as_str().unwrap().to_string();

    let got = receiver.wait_for_one();
    assert!(got.signature_valid, "{got:?}");
    assert!(got.contract_errors.is_empty(), "{:?}", got.contract_errors);
    assert_eq!(got.route(), "/ok");
    assert!(got.remote.starts_with("127.0.0.1:"), "{}", got.remote);
    assert_eq!(got.json()["data"]["clickwrapEventId"], event_id.as_str());
    let (status, list) = c.http(
        "GET",
        &format!("{base}/api/v1/integrations/{app_id}/deliveries"),
        &auth,
        None,
    );
    assert_eq!(status, 200, "{list}");
    let delivery_id = list["items"][0]["id"].as_str().unwrap().to_string();
    let delivery = finished_delivery(&c, base, &auth, &delivery_id);
    assert_eq!(delivery["state"], "succeeded", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["clickwrapEventId"], event_id.as_str());
    let attempt = &delivery["attemptList"][0];
    assert_eq!(attempt["outcome"], "ok", "{delivery}");
    assert_eq!(attempt["responseStatus"], 200);
    assert_eq!(attempt["remoteAddr"], format!("127.0.0.1:{RECEIVER_PORT}"));
    // Sent by the process that runs under the filter, which never restarted meanwhile.
    assert_eq!(c.unit_property("MainPID"), main_pid);
    assert_eq!(c.unit_property("NRestarts"), "0");

    // systemctl restart: a new process on the same data.
    let started = Instant::now();
    c.exec_ok(&["systemctl", "restart", "clicktermd"]);
    let restarted_pid = c.unit_property("MainPID");
    assert_ne!(restarted_pid, main_pid, "restart started a new process");
    assert_eq!(
        c.exec_ok(&["systemctl", "is-active", "clicktermd"]).trim(),
        "active"
    );
    let up = Instant::now();
    let health = loop {
        let out = c.exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/healthz"),
        ]);
        if stdout(&out) == "200" {
            break true;
        }
        if up.elapsed() > DEADLINE {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        health,
        "/healthz after the restart: {}",
        c.sh("journalctl -u clicktermd --no-pager -n 30")
    );
    eprintln!("restarted and answering in {:?}", started.elapsed());
    let (status, event) = c.http(
        "GET",
        &format!("{base}/api/v1/events/{event_id}"),
        &auth,
        None,
    );
    assert_eq!(status, 200, "the event after the restart: {event}");
    assert_eq!(event["clickwrapEventId"], event_id.as_str(), "{event}");
    let kept = finished_delivery(&c, base, &auth, &delivery_id);
    assert_eq!(kept["state"], "succeeded", "{kept}");
    assert_eq!(
        kept["attempts"], 1,
        "a delivered webhook is not sent again: {kept}"
    );
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(field(&proc_status(&c, &restarted_pid), "Seccomp"), "2");

    // systemctl stop: within TimeoutStopSec, by the process's own clean exit, not by systemd's
    // SIGKILL when the time is up (Result would be "timeout").
    let unit = std::fs::read_to_string(c.root.join(UNIT.trim_start_matches('/'))).unwrap();
    let directives = crate::packaging::service_directives(&unit);
    let timeout = Duration::from_secs(seconds(&directives["TimeoutStopSec"][0]));
    let started = Instant::now();
    c.exec_ok(&["systemctl", "stop", "clicktermd"]);
    let stopped_in = started.elapsed();
    eprintln!("systemctl stop took {stopped_in:?} (TimeoutStopSec {timeout:?})");
    assert!(stopped_in < timeout, "stop took {stopped_in:?}");
    assert_eq!(c.unit_property("ActiveState"), "inactive");
    assert_eq!(c.unit_property("Result"), "success");
    assert_eq!(
        c.unit_property("ExecMainStatus"),
        "0",
        "clicktermd exits 0 on SIGTERM"
    );
    drop(receiver);

    // Power off: systemd stops everything and systemd-nspawn exits 0.
    let _ = c.exec(&["systemctl", "poweroff"]);
    let (status, took) = c.wait_exit(BOOT_DEADLINE);
    eprintln!("powered off in {took:?}: {status}");
    assert!(
        status.success(),
        "systemd-nspawn after poweroff: {status}\n{}",
        tail(&c.boot_log, 30)
    );
    assert!(c.root.join("var/lib/clicktermd/clicktermd.db").is_file());
    drop(c);
    eprintln!("the boot test took {:?} in all", whole.elapsed());
}
