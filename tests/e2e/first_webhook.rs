//! The README's "Receive webhooks on your machine", followed to the letter: its commands, read from
//! the README, run by `sh` in an empty directory with the real binary first on the `PATH`, until the
//! real `clicktermd webhook-receiver` reports a delivery whose signature it verified. Only the ports
//! differ (free ones instead of 8080 and 9443, which other tests or programs may hold) and the two
//! values the reader copies from one command's output into the next.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, clicktermd_bin, free_port, wait_healthy};

/// The shell commands of the section's first `sh` block.
fn section_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Receive webhooks on your machine\n")
        .nth(1)
        .expect("the README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("a sh block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A shell command run in `dir` with the built binary as `clicktermd` and no `CLICKTERMD_*` from our
/// environment.
fn shell(dir: &Path, line: &str) -> Command {
    let bin_dir = Path::new(clicktermd_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    // `exec`, so that a long-running command is the child itself and killing it ends it.
    cmd.arg("-c").arg(format!("exec {line}"));
    cmd.current_dir(dir)
        .env("PATH", path)
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLICKTERMD_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A long-running command (a server, the receiver), killed when dropped.
struct Running {
    child: Child,
    out: std::path::PathBuf,
}

impl Running {
    fn start(dir: &Path, line: &str, name: &str) -> Running {
        let out = dir.join(format!("{name}.out"));
        let child = shell(dir, line)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        Running { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until standard output has a line containing `needle`; returns that line.
    async fn wait_for_line(&mut self, needle: &str, what: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{what} exited with {status}: {}", self.output());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: no {needle:?} within {DEADLINE:?}: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to its end; asserts success; returns standard output.
async fn run(dir: &Path, line: &str) -> String {
    let (dir, line) = (dir.to_path_buf(), line.to_string());
    let out = tokio::task::spawn_blocking(move || {
        shell(&dir, &line)
            .stdin(Stdio::null())
            .output()
            .map(|o| (line, o))
    })
    .await
    .unwrap()
    .expect("run sh");
    let (line, out) = out;
    assert!(
        out.status.success(),
        "{line}: {:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value after `label` on its line of `text`.
fn value_after(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_commands_deliver_a_verified_webhook_to_the_local_receiver() {
    let commands = section_commands();
    assert!(
        commands.len() <= 5,
        "at most five commands from nothing to a verified delivery: {commands:#?}"
    );
    let (server_port, receiver_port) = (free_port(), free_port());
    let ports = |line: &str| {
        line.replace("8080", &server_port.to_string())
            .replace("9443", &receiver_port.to_string())
    };
    let [setup, serve, create, receive, send] = &commands[..] else {
        panic!("expected the five commands: {commands:#?}");
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // 1. The receiver's certificate and a configuration that trusts and allows it.
    run(dir, &ports(setup)).await;
    assert!(dir.join("clicktermd.toml").is_file());
    assert!(dir.join("clicktermd-receiver/ca.pem").is_file());

    // 2. The server, in its terminal, finding ./clicktermd.toml by itself.
    assert!(serve.contains("(terminal 1)"), "{serve}");
    let server = Running::start(dir, &ports(serve), "serve");
    assert!(
        wait_healthy(&format!("http://127.0.0.1:{server_port}")).await,
        "the server did not come up: {}",
        std::fs::read_to_string(dir.join("serve.err")).unwrap_or_default()
    );
    let log = std::fs::read_to_string(dir.join("serve.err")).unwrap();
    assert!(log.contains("clicktermd.toml"), "which file: {log}");

    // 3. An integration whose webhooks go to the receiver.
    let created = run(dir, &ports(create)).await;
    let secret = value_after(&created, "Signing secret:");
    let app_id = value_after(&created, "App ID:");
    assert!(secret.starts_with("whsec_"), "{created}");

    // 4. The receiver, in its terminal, with the secret just printed.
    assert!(
        receive.contains("(terminal 2)") && receive.contains("<signing secret>"),
        "{receive}"
    );
    let mut receiver = Running::start(
        dir,
        &ports(receive).replace("<signing secret>", &secret),
        "receiver",
    );
    receiver.wait_for_line("listening on", "the receiver").await;

    // 5. A test webhook.
    assert!(send.contains("<App ID>"), "{send}");
    run(dir, &ports(send).replace("<App ID>", &app_id)).await;

    let line = receiver.wait_for_line("POST", "the receiver").await;
    for needle in [
        "signature ok",
        "→ 200",
        "(test)",
        "status ACCEPTED",
        "CLICKWRAP_EVENT_VERIFIED",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line:?}");
    }
    drop(receiver);
    drop(server);
}
