//! The Debian package, end to end. `packaging/build-deb` packages the binary under test (stripped; no
//! release build runs here); lintian judges the package; the unit file is checked for its sandboxing;
//! and, as root, dpkg installs the package on this machine, the installed binary runs the way the
//! systemd unit runs it (its user, its configuration, its umask and working directory, no
//! privileges), an install over itself keeps the data, `remove` keeps the data and `purge` leaves
//! nothing behind.
//!
//! The install test changes the machine (a system user, /etc/clicktermd, /var/lib/clicktermd), so it
//! needs root, as CI has. Without root it fails, saying so, unless `NO_PACKAGE_INSTALL_TEST=1` opts out
//! explicitly. It refuses to touch a clicktermd package that it did not install itself.

use crate::common;
use crate::common::Call;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, assert_success, clicktermd_bin, free_port, stderr, stdout};
use clicktermd::config::{Config, DEFAULT_CONFIG_TOML};
use reqwest::StatusCode;
use serde_json::{Value, json};

// Where the package puts things (the boot test finds them there inside its container too).
pub(crate) const UNIT: &str = "/lib/systemd/system/clicktermd.service";
pub(crate) const CONFIG: &str = "/etc/clicktermd/config.toml";
pub(crate) const STATE: &str = "/var/lib/clicktermd";
pub(crate) const ENABLED_LINK: &str =
    "/etc/systemd/system/multi-user.target.wants/clicktermd.service";
/// Written before the test installs the package and removed after it purged it: a clicktermd package
/// found installed with this file present is a leftover of an interrupted run (and the file holds the
/// pid of a server it may have left running); without it, the package is someone's real installation.
const MARKER: &str = "/var/tmp/clicktermd-packaging-test";
const OPT_OUT: &str = "NO_PACKAGE_INSTALL_TEST";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert_success(&out, &what);
    stdout(&out)
}

/// The package built from the test binary, once per test process.
pub(crate) fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
        let _ = std::fs::remove_dir_all(&out_dir);
        let started = Instant::now();
        let out = run(Command::new(repo().join("packaging/build-deb"))
            .arg("--binary")
            .arg(clicktermd_bin())
            .arg("--out")
            .arg(&out_dir)
            .arg("--fast"));
        assert_success(&out, "packaging/build-deb");
        let deb = PathBuf::from(stdout(&out).trim());
        eprintln!("built {} in {:?}", deb.display(), started.elapsed());
        deb
    })
}

fn cargo_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn deb_field(deb: &Path, field: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
        .trim()
        .to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

// ---------------------------------------------------------------------------------------------
// The package's contents.

#[test]
fn the_package_is_named_versioned_and_filled_as_debian_expects() {
    let deb = package();
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    let version = deb_field(deb, "Version");
    assert!(
        version.starts_with(&format!("{}-", cargo_version())),
        "Debian version {version} must carry the Cargo version {}",
        cargo_version()
    );
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("clicktermd_{version}_{}.deb", arch.trim())
    );
    assert_eq!(deb_field(deb, "Package"), "clicktermd");
    assert_eq!(deb_field(deb, "Architecture"), arch.trim());
    let depends = deb_field(deb, "Depends");
    for dep in ["adduser", "libc6 (>= "] {
        assert!(depends.contains(dep), "Depends: {depends} lacks {dep}");
    }
    let installed_kib: u64 = deb_field(deb, "Installed-Size").parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root));
    let expected = [
        ("usr/bin/clicktermd", 0o755),
        ("lib/systemd/system/clicktermd.service", 0o644),
        ("etc/clicktermd/config.toml", 0o644),
        ("usr/share/doc/clicktermd/copyright", 0o644),
        ("usr/share/doc/clicktermd/changelog.Debian.gz", 0o644),
        ("usr/share/man/man1/clicktermd.1.gz", 0o644),
        ("usr/share/lintian/overrides/clicktermd", 0o644),
    ];
    let mut total = 0;
    for (path, want) in expected {
        let p = root.join(path);
        assert_eq!(mode(&p), want, "{path}");
        total += std::fs::metadata(&p).unwrap().len();
    }
    assert!(
        installed_kib * 1024 >= total,
        "Installed-Size {installed_kib} KiB is less than the files"
    );
    // Owned by root in the archive, whoever built it.
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not root-owned: {line}");
    }
    // Stripped: much smaller than the debug binary it came from.
    let packaged = std::fs::metadata(root.join("usr/bin/clicktermd"))
        .unwrap()
        .len();
    let built = std::fs::metadata(clicktermd_bin()).unwrap().len();
    assert!(packaged < built, "the binary was not stripped");
    let packaged_bin = root.join("usr/bin/clicktermd");
    let reported = run_ok(Command::new(&packaged_bin).arg("version"));
    assert!(
        reported.starts_with(&format!("clicktermd {} ", cargo_version())),
        "{reported}"
    );

    // The conffile, the config shipped and the maintainer scripts.
    let control = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()),
    );
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles")).unwrap(),
        "/etc/clicktermd/config.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.path().join(script)), 0o755, "{script}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/clicktermd/config.toml")).unwrap(),
        std::fs::read_to_string(repo().join("packaging/config.toml")).unwrap()
    );
    // The packaged binary accepts the packaged configuration file: `integration list` gets as far as
    // looking for the database (which it never creates).
    let data = tempfile::tempdir().unwrap();
    let out = run(Command::new(&packaged_bin)
        .arg("--config")
        .arg(root.join("etc/clicktermd/config.toml"))
        .arg("--data-dir")
        .arg(data.path().join("d"))
        .args(["integration", "list"])
        .env_clear());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("no clicktermd database"),
        "integration list with the packaged config: {err}"
    );

    // The man page in the package is the one in packaging/, with the version filled in.
    let man = run_ok(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/clicktermd.1.gz")),
    );
    let th = man.lines().find(|l| l.starts_with(".TH ")).unwrap();
    assert!(
        th.contains(&format!("\"clicktermd {}\"", cargo_version())) && !th.contains('@'),
        "{th}"
    );
    let changelog = run_ok(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/doc/clicktermd/changelog.Debian.gz")),
    );
    assert!(
        changelog.starts_with(&format!("clicktermd ({version}) ")),
        "{changelog}"
    );
    let copyright =
        std::fs::read_to_string(root.join("usr/share/doc/clicktermd/copyright")).unwrap();
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        ),
        "copyright is not machine-readable (DEP-5)"
    );
}

#[test]
fn lintian_finds_no_error_and_no_warning() {
    let deb = package();
    let started = Instant::now();
    let out = run(Command::new("lintian")
        .arg("--fail-on")
        .arg("error,warning")
        .arg(deb));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    eprintln!("lintian ({:?}):\n{text}", started.elapsed());
    let flagged: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(flagged.is_empty(), "lintian: {flagged:#?}");
    assert!(out.status.success(), "lintian failed: {text}");
}

// ---------------------------------------------------------------------------------------------
// The configuration file and the man page, against the binary.

#[test]
fn the_packaged_config_is_the_built_in_defaults_but_for_the_state_directory() {
    let path = repo().join("packaging/config.toml");
    let loaded = Config::load(Some(&path), Vec::new()).expect("packaging/config.toml loads");
    let mut expected = Config::default();
    expected.storage.data_dir = PathBuf::from(STATE);
    assert_eq!(loaded, expected);

    // Every key that `clicktermd init` writes is in the packaged file too, so it documents the whole
    // configuration surface (a key left out would still equal its default above).
    fn keys(text: &str) -> BTreeSet<String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        table
            .iter()
            .flat_map(|(section, v)| {
                v.as_table()
                    .unwrap()
                    .keys()
                    .map(move |k| format!("{section}.{k}"))
            })
            .collect()
    }
    let packaged = std::fs::read_to_string(&path).unwrap();
    assert_eq!(keys(&packaged), keys(DEFAULT_CONFIG_TOML));
    // And every commented-out key of the defaults (tls_cert, extra_ca_file ...) is shown there too.
    for line in DEFAULT_CONFIG_TOML.lines() {
        if line.starts_with("# ") && line.contains(" = ") {
            assert!(packaged.contains(line), "packaged config lacks {line:?}");
        }
    }
}

/// The commands (as paths, e.g. `admin token create`) and long options that `--help` shows, walking
/// every sub-command.
fn help_tree() -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(path: &[String], leaves: &mut BTreeSet<String>, options: &mut BTreeSet<String>) {
        let out = run(Command::new(clicktermd_bin())
            .args(path)
            .arg("--help")
            .env_clear());
        assert_success(&out, &format!("{path:?} --help"));
        let text = stdout(&out);
        let mut section = "";
        let mut children = Vec::new();
        for line in text.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match section {
                "Commands:" if !words.is_empty() && words[0] != "help" => {
                    children.push(words[0].to_string())
                }
                "Options:" => {
                    for w in words {
                        let w = w.trim_end_matches(',');
                        if w.starts_with("--") {
                            options.insert(w.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        if children.is_empty() {
            leaves.insert(path.join(" "));
        }
        for child in children {
            let mut p = path.to_vec();
            p.push(child);
            walk(&p, leaves, options);
        }
    }
    let (mut leaves, mut options) = (BTreeSet::new(), BTreeSet::new());
    walk(&[], &mut leaves, &mut options);
    leaves.remove("");
    (leaves, options)
}

/// The man page source as plain text: roff escapes for `-`, fonts and hyphenation removed.
fn man_text() -> String {
    let src = std::fs::read_to_string(repo().join("packaging/clicktermd.1")).unwrap();
    let mut text = src.replace("\\-", "-").replace("\\%", "");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        text = text.replace(font, "");
    }
    text
}

#[test]
fn the_man_page_documents_exactly_what_help_shows() {
    let (commands, options) = help_tree();
    assert!(
        commands.contains("admin token create") && options.contains("--password-stdin"),
        "the help walk found {commands:?} {options:?}"
    );
    let man = man_text();

    // The commands: each documented under COMMANDS as a `.TP` tag line, and nothing else is.
    let mut tags = Vec::new();
    let mut in_commands = false;
    let mut lines = man.lines();
    while let Some(line) = lines.next() {
        if line.starts_with(".SH ") {
            in_commands = line == ".SH COMMANDS";
        } else if in_commands && line == ".TP" {
            let tag = lines.next().unwrap();
            let tag = tag
                .trim_start_matches(".BI ")
                .trim_start_matches(".B ")
                .replace('"', "");
            tags.push(tag);
        }
    }
    let documented: BTreeSet<String> = tags
        .iter()
        .map(|tag| {
            tag.split_whitespace()
                .take_while(|w| {
                    !w.starts_with('-') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| c != "help")
        .collect();
    assert_eq!(documented, commands, "man page COMMANDS vs --help");

    // The options: every long option of --help is in the man page, and the man page names no other.
    let mut mentioned = BTreeSet::new();
    for word in man.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if word.starts_with("--") && word.len() > 2 {
            mentioned.insert(word.to_string());
        }
    }
    assert_eq!(mentioned, options, "options in the man page vs --help");
}

// ---------------------------------------------------------------------------------------------
// The systemd unit.

/// The `[Service]` directives of a unit file, each with all its values in order.
pub(crate) fn service_directives(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("key=value");
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    map
}

#[test]
fn the_unit_runs_the_service_unprivileged_and_sandboxed() {
    let unit = std::fs::read_to_string(repo().join("packaging/clicktermd.service")).unwrap();
    let d = service_directives(&unit);
    let one = |k: &str| -> &str {
        let v = d.get(k).unwrap_or_else(|| panic!("{k}= missing"));
        assert_eq!(v.len(), 1, "{k}= set more than once");
        &v[0]
    };
    let required = [
        ("User", "clicktermd"),
        ("Group", "clicktermd"),
        (
            "ExecStart",
            "/usr/bin/clicktermd --config /etc/clicktermd/config.toml serve",
        ),
        ("StateDirectory", "clicktermd"),
        ("StateDirectoryMode", "0700"),
        ("WorkingDirectory", STATE),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ];
    for (k, v) in required {
        assert_eq!(one(k), v, "{k}=");
    }
    assert_eq!(
        d["SystemCallFilter"],
        ["@system-service", "~@privileged"],
        "SystemCallFilter="
    );
    assert!(unit.contains("\n[Install]\nWantedBy=multi-user.target\n"));
    // The listen address comes from the config file, which the unit must not override.
    assert!(!d.contains_key("Environment"), "{:?}", d.get("Environment"));

    // systemd's own judgement of the sandbox: "OK" or better (exposure at most 2.0 of 10).
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(repo().join("packaging/clicktermd.service")));
    let text = stdout(&out);
    let verdict = text.lines().last().unwrap_or("");
    assert!(out.status.success(), "{verdict}\n{}\n{text}", stderr(&out));
    eprintln!("{verdict}");
}

/// `1G`, `512M`, `1073741824` in bytes (systemd's base-1024 suffixes).
fn systemd_bytes(value: &str) -> u64 {
    let (digits, unit) = value.split_at(value.trim_end_matches(char::is_alphabetic).len());
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a size: {value}"));
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => panic!("unexpected unit in {value}"),
    };
    n << shift
}

#[test]
fn the_unit_caps_files_memory_and_tasks_to_fit_the_defaults() {
    let unit = std::fs::read_to_string(repo().join("packaging/clicktermd.service")).unwrap();
    let d = service_directives(&unit);
    let one = |k: &str| -> &str {
        let v = d.get(k).unwrap_or_else(|| panic!("{k}= missing"));
        assert_eq!(v.len(), 1, "{k}= set more than once");
        &v[0]
    };
    let defaults = Config::default();
    // The file limit holds the default connection cap and the reserve beside it, with room to spare.
    let files: u64 = one("LimitNOFILE")
        .parse()
        .expect("LimitNOFILE= is a number");
    let needed = clicktermd::http::ConnectionBudget::file_limit_needed(&defaults);
    assert!(
        files >= needed,
        "LimitNOFILE={files} < {needed} needed by the defaults"
    );
    let budget = clicktermd::http::ConnectionBudget::plan(files, &defaults).unwrap();
    assert!(!budget.clamped, "{budget:?}");
    assert!(files <= 1 << 20, "LimitNOFILE={files} is no cap");
    // Memory: the benchmark's peak (~50 MB), four concurrent argon2 hashes (~19 MB each) and every
    // allowed connection with a full buffered head must fit, twice over.
    let memory = systemd_bytes(one("MemoryMax"));
    let floor = 50_000_000
        + 4 * 19_000_000
        + defaults.server.max_connections as u64 * (64 * 1024 + 16 * 1024);
    assert!(memory >= 2 * floor, "MemoryMax={memory} < 2 x {floor}");
    assert!(memory <= 8 << 30, "MemoryMax={memory} is no cap");
    // Tasks: tokio's blocking pool (512 at most), its workers and the store's threads.
    let tasks: u64 = one("TasksMax").parse().expect("TasksMax= is a number");
    assert!((512 + 64 + 3..=4096).contains(&tasks), "TasksMax={tasks}");
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(repo().join("packaging/clicktermd.service")));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !text.contains("MemoryMax") && !text.contains("TasksMax") && !text.contains("LimitNOFILE"),
        "systemd-analyze verify: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Installing, running, upgrading and purging, as root.

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// `dpkg-query`'s status word for clicktermd: `installed`, `config-files`, `not-installed` ...
fn package_status() -> String {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "clicktermd"]));
    if out.status.success() {
        stdout(&out)
    } else {
        "not-installed".to_string()
    }
}

fn dpkg(args: &[&str]) {
    let started = Instant::now();
    let out = run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert_success(&out, &format!("dpkg {args:?}"));
    eprintln!(
        "dpkg {args:?} ({:?}):\n{}{}",
        started.elapsed(),
        stdout(&out),
        stderr(&out)
    );
}

/// The `clicktermd` passwd entry's fields, if the user exists.
fn passwd_entry() -> Option<Vec<String>> {
    let out = run(Command::new("getent").args(["passwd", "clicktermd"]));
    out.status
        .success()
        .then(|| stdout(&out).trim().split(':').map(String::from).collect())
}

fn group_exists() -> bool {
    run(Command::new("getent").args(["group", "clicktermd"]))
        .status
        .success()
}

/// Ends a server this test started (or a previous run of it left behind, by its recorded pid), but
/// only if that pid is still the installed clicktermd binary.
fn stop_pid(pid: u32) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if exe.to_string_lossy().starts_with("/usr/bin/clicktermd") {
        let _ = run(Command::new("kill").arg("-KILL").arg(pid.to_string()));
        // Gone (or a zombie) once its executable link can no longer be read.
        let start = Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/exe")).is_ok() && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Undoes everything an installation by this test may have left: a server it started (by the pid in
/// the marker, and only if that is still the installed binary), the package, and, should a purge
/// have failed half-way, the user, group and directories. Only called while the marker says the
/// installation is this test's own.
fn remove_own_installation() {
    let marker = std::fs::read_to_string(MARKER).unwrap_or_default();
    for pid in marker.split_whitespace().filter_map(|p| p.parse().ok()) {
        stop_pid(pid);
    }
    if package_status() != "not-installed" {
        let _ = run(Command::new("dpkg").args(["--purge", "clicktermd"]));
    }
    if passwd_entry().is_some() {
        let _ = run(Command::new("userdel").arg("clicktermd"));
    }
    if group_exists() {
        let _ = run(Command::new("groupdel").arg("clicktermd"));
    }
    let _ = std::fs::remove_dir_all("/etc/clicktermd");
    let _ = std::fs::remove_dir_all(STATE);
    let _ = std::fs::remove_file(MARKER);
}

/// Clears what an interrupted earlier run of this test left; refuses to touch an installation that is
/// not its own.
fn clean_leftovers() {
    if Path::new(MARKER).exists() {
        eprintln!("removing what an earlier run of this test left installed");
        remove_own_installation();
    }
    let status = package_status();
    assert!(
        status == "not-installed",
        "clicktermd is installed on this machine (dpkg status {status:?}) and not by this test: \
         refusing to purge it and its data. Purge it yourself (dpkg --purge clicktermd) to run the \
         packaging test here."
    );
    assert!(
        passwd_entry().is_none() && !group_exists(),
        "a clicktermd user or group exists without the package; remove it (userdel clicktermd) \
         to run the packaging test here"
    );
    for path in [CONFIG, STATE] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists without the package; remove it to run the packaging test here"
        );
    }
}

/// While it lives, the test owns the installation: on the way out by a failed assertion it stops the
/// server it started and removes everything it installed, so no run leaves the machine changed.
struct Installation {
    server: Option<Child>,
}

impl Drop for Installation {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            remove_own_installation();
        }
    }
}

/// The installed unit's way of starting the service, applied without systemd: its user and group,
/// umask and working directory, no new privileges and an empty capability bounding set, a clean
/// environment, and its ExecStart command line.
struct UnitExec {
    user: String,
    group: String,
    umask: String,
    working_dir: String,
    argv: Vec<String>,
}

impl UnitExec {
    fn from_installed_unit() -> UnitExec {
        let unit = std::fs::read_to_string(UNIT).unwrap();
        let d = service_directives(&unit);
        let one = |k: &str| d[k][0].clone();
        assert_eq!(one("NoNewPrivileges"), "yes");
        assert_eq!(one("CapabilityBoundingSet"), "");
        let exec = one("ExecStart");
        assert!(
            exec.starts_with('/') && !exec.contains(['"', '\'', '$', '%']),
            "ExecStart= needs systemd's parsing: {exec}"
        );
        UnitExec {
            user: one("User"),
            group: one("Group"),
            umask: one("UMask"),
            working_dir: one("WorkingDirectory"),
            argv: exec.split_whitespace().map(String::from).collect(),
        }
    }

    /// A command that runs the unit's command line as the unit would, with `env` added.
    fn command(&self, env: &[(&str, &str)]) -> Command {
        let home = passwd_entry().expect("the clicktermd user")[5].clone();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("umask \"$0\" && exec \"$@\"")
            .arg(&self.umask)
            .arg("setpriv")
            .arg(format!("--reuid={}", self.user))
            .arg(format!("--regid={}", self.group))
            .args([
                "--init-groups",
                "--no-new-privs",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--",
            ]);
        cmd.args(&self.argv)
            .current_dir(&self.working_dir)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .envs(env.iter().copied());
        cmd
    }
}

/// A running installed server: its child process, its address and where its standard error goes.
struct Served {
    base: String,
    stderr_path: PathBuf,
}

fn start_service(inst: &mut Installation, exec: &UnitExec, logs: &Path, name: &str) -> Served {
    assert!(inst.server.is_none());
    let started = Instant::now();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let stderr_path = logs.join(format!("{name}.stderr"));
    let child = exec
        .command(&[("CLICKTERMD_SERVER__LISTEN", &listen)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start the installed clicktermd");
    std::fs::write(MARKER, child.id().to_string()).unwrap();
    inst.server = Some(child);
    let served = Served {
        base: format!("http://{listen}"),
        stderr_path,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let healthy = rt.block_on(async {
        let client = common::client();
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(res) = client.get(format!("{}/healthz", served.base)).send().await
                && res.status() == StatusCode::OK
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    eprintln!("{name} start: healthy after {:?}", started.elapsed());
    if !healthy {
        let status = inst.server.as_mut().unwrap().try_wait();
        panic!(
            "the installed clicktermd did not answer 200 on /healthz ({status:?}):\n{}",
            std::fs::read_to_string(&served.stderr_path).unwrap_or_default()
        );
    }
    served
}

/// Stops the server with SIGTERM, as systemd would, and expects a clean exit.
fn stop_service(inst: &mut Installation) {
    let mut child = inst.server.take().expect("a running server");
    run_ok(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string()),
    );
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "clicktermd exited with {status} on SIGTERM"
            );
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "clicktermd did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(MARKER, "").unwrap();
}

/// What a process's /proc status says about its user and privileges.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

async fn login(base: &str, password: &str) -> reqwest::Client {
    let client = common::cookie_client();
    let res = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "login with the first-start password"
    );
    client
}

#[test]
fn installs_runs_as_its_user_survives_reinstall_and_purges_clean() {
    if !is_root() {
        if std::env::var_os(OPT_OUT).is_some_and(|v| v == "1") {
            eprintln!(
                "SKIPPED: the package install test needs root; {OPT_OUT}=1 opted out of it. \
                 The package was NOT installed, started or purged."
            );
            return;
        }
        panic!(
            "this test installs the clicktermd package system-wide with dpkg (a system user, \
             /etc/clicktermd, /var/lib/clicktermd) and purges it again, so it needs root, as CI \
             has. Run the suite as root, or set {OPT_OUT}=1 to skip only this test knowingly."
        );
    }
    let deb = package().to_str().unwrap().to_string();
    clean_leftovers();
    let logs = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Install.
    std::fs::write(MARKER, "").unwrap();
    let mut inst = Installation { server: None };
    dpkg(&["-i", &deb]);
    assert_eq!(package_status(), "installed");
    let user = passwd_entry().expect("postinst created the clicktermd user");
    let uid: u32 = user[2].parse().unwrap();
    let gid: u32 = user[3].parse().unwrap();
    assert!(uid < 1000, "clicktermd is a system user: uid {uid}");
    assert_eq!(user[5], STATE, "home");
    assert!(user[6].ends_with("nologin"), "shell {}", user[6]);
    assert!(group_exists());
    let state = std::fs::metadata(STATE).unwrap();
    assert!(state.is_dir());
    assert_eq!(
        (mode(Path::new(STATE)), state.uid(), state.gid()),
        (0o700, uid, gid)
    );
    let config = std::fs::metadata(CONFIG).unwrap();
    assert_eq!(
        (mode(Path::new(CONFIG)), config.uid(), config.gid()),
        (0o640, 0, gid)
    );
    assert!(Path::new("/usr/bin/clicktermd").is_file());
    assert_eq!(
        std::fs::read_link(ENABLED_LINK).expect("postinst enabled the unit"),
        Path::new(UNIT)
    );
    // systemd's check of the installed unit: directives, the binary and the man page it names.
    let out = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    assert!(
        out.status.success() && !stderr(&out).contains("clicktermd"),
        "systemd-analyze verify: {}",
        stderr(&out)
    );

    // Start it the way the unit does.
    let exec = UnitExec::from_installed_unit();
    let served = start_service(&mut inst, &exec, logs.path(), "first");
    let pid = inst.server.as_ref().unwrap().id();
    let status = proc_status(pid);
    assert!(
        status["Uid"]
            .split_whitespace()
            .all(|u| u == uid.to_string()),
        "runs as clicktermd: Uid {}",
        status["Uid"]
    );
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["CapBnd"], "0000000000000000");
    assert_eq!(status["CapEff"], "0000000000000000");

    // The first-start password: in the journal (standard error, plain text) and in a file only the
    // service user can read.
    let password_file = Path::new(STATE).join("initial-admin-password");
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    let meta = std::fs::metadata(&password_file).unwrap();
    assert_eq!((mode(&password_file), meta.uid()), (0o600, uid));
    let first_log = std::fs::read_to_string(&served.stderr_path).unwrap();
    assert!(first_log.contains(&password), "{first_log}");
    assert!(
        first_log.contains("/var/lib/clicktermd/initial-admin-password"),
        "{first_log}"
    );
    assert!(
        !first_log.contains('\u{1b}'),
        "escape codes in the journal: {first_log:?}"
    );
    let db = Path::new(STATE).join("clicktermd.db");
    let meta = std::fs::metadata(&db).unwrap();
    assert_eq!((mode(&db), meta.uid()), (0o600, uid));

    // Data: an integration through the admin API, and the CLI as the README shows it, as the service
    // user against the running service's database.
    let app_id = rt.block_on(async {
        let admin = login(&served.base, &password).await;
        let res = admin
            .post(format!("{}/api/v1/integrations", served.base))
            .json(&json!({"name": "Packaged shop"}))
            .json_with(StatusCode::CREATED)
            .await;
        let body: Value = res;
        body["appId"].as_str().unwrap().to_string()
    });
    // As the README's install section says to run the command line.
    let cli = |args: &[&str]| {
        run_ok(
            Command::new("runuser")
                .args(["-u", "clicktermd", "--", "clicktermd", "--config", CONFIG])
                .args(args),
        )
    };
    let listed: Value = serde_json::from_str(&cli(&["integration", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["appId"], app_id.as_str(), "{listed}");
    stop_service(&mut inst);

    // Install the same package over itself: the upgrade path. The data, the user and the config stay.
    let config_before = std::fs::read(CONFIG).unwrap();
    dpkg(&["-i", &deb]);
    assert_eq!(package_status(), "installed");
    let again = passwd_entry().unwrap();
    assert_eq!(
        (&again[2], &again[3]),
        (&user[2], &user[3]),
        "same uid and gid"
    );
    assert_eq!(std::fs::read(CONFIG).unwrap(), config_before);
    assert_eq!(mode(Path::new(STATE)), 0o700);
    let served = start_service(&mut inst, &exec, logs.path(), "second");
    let second_log = std::fs::read_to_string(&served.stderr_path).unwrap();
    assert!(
        !second_log.contains("created the admin user"),
        "a new admin on the same data? {second_log}"
    );
    rt.block_on(async {
        let admin = login(&served.base, &password).await;
        let res = admin
            .get(format!("{}/api/v1/integrations", served.base))
            .json_ok()
            .await;
        let list: Value = res;
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["appId"] == app_id.as_str())
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Packaged shop"], "{list}");
    });
    stop_service(&mut inst);

    // Remove keeps the data, the configuration and the user.
    dpkg(&["-r", "clicktermd"]);
    assert_eq!(package_status(), "config-files");
    assert!(!Path::new("/usr/bin/clicktermd").exists());
    assert!(db.is_file(), "remove deleted the database");
    assert!(Path::new(CONFIG).is_file(), "remove deleted the conffile");
    assert!(passwd_entry().is_some(), "remove deleted the user");

    // Purge removes everything of the package's, but files an operator put beside its
    // configuration (a TLS key, a CA file) are not its to delete.
    let operator_files = [
        "/etc/clicktermd/tls/key.pem",
        "/etc/clicktermd/receiver-ca.pem",
    ];
    std::fs::create_dir_all("/etc/clicktermd/tls").unwrap();
    for file in operator_files {
        std::fs::write(file, "an operator's file\n").unwrap();
    }
    dpkg(&["--purge", "clicktermd"]);
    assert_eq!(package_status(), "not-installed");
    assert!(passwd_entry().is_none(), "purge left the clicktermd user");
    assert!(!group_exists(), "purge left the clicktermd group");
    assert!(!Path::new(CONFIG).exists(), "purge left the conffile");
    for file in operator_files {
        assert_eq!(
            std::fs::read_to_string(file).unwrap_or_default(),
            "an operator's file\n",
            "purge deleted {file}, which the package did not install"
        );
    }
    std::fs::remove_dir_all("/etc/clicktermd").unwrap();
    // Without such files, purge leaves nothing at all.
    dpkg(&["-i", &deb]);
    dpkg(&["--purge", "clicktermd"]);
    for path in [
        "/etc/clicktermd",
        STATE,
        UNIT,
        ENABLED_LINK,
        "/var/lib/systemd/deb-systemd-helper-enabled/clicktermd.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/clicktermd.service",
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "purge left {path}"
        );
    }
    std::fs::remove_file(MARKER).unwrap();
    drop(inst);
}
