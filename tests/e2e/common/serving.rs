//! The real `clicktermd serve` as a child process on a free loopback port, for tests that need a whole
//! process: signals, `kill -9`, restarts on the same data directory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{DEADLINE, clicktermd_command};

/// The real binary serving in the background; killed (not gracefully) if a test fails first.
pub struct Serving {
    pub child: std::process::Child,
    log: std::path::PathBuf,
}

impl Serving {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: the process dies at once, with no chance to finish anything; waits for it to be gone.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait for the killed process");
    }

    /// SIGTERM, then wait (with the deadline) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let out = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .output()
            .expect("run kill");
        assert!(out.status.success(), "kill -TERM {pid} failed");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "clicktermd did not stop after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `clicktermd serve` on a free loopback port and waits for /healthz. The port is picked by
/// binding port 0 and releasing it; if another process takes it meanwhile, the start is retried.
pub async fn serve(data: &Path, log: &Path, env: &[(&str, &str)]) -> (Serving, String) {
    serve_under(&[], data, log, env).await
}

/// [`serve`], waiting up to `deadline` instead of [`DEADLINE`] for the server to be healthy (a start
/// that first migrates a large database).
pub async fn serve_within(
    deadline: Duration,
    data: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> (Serving, String) {
    serve_under_within(&[], deadline, data, log, env).await
}

/// [`serve`], with the command run by `wrapper` (e.g. `["prlimit", "--nofile=300", "--"]`).
pub async fn serve_under(
    wrapper: &[&str],
    data: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> (Serving, String) {
    serve_under_within(wrapper, DEADLINE, data, log, env).await
}

async fn serve_under_within(
    wrapper: &[&str],
    deadline: Duration,
    data: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> (Serving, String) {
    for _ in 0..5 {
        let port = super::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut vars = vec![("CLICKTERMD_SERVER__LISTEN", listen.as_str())];
        vars.extend_from_slice(env);
        let data = data.to_str().expect("UTF-8 path");
        let mut command = clicktermd_command(&["--data-dir", data, "serve"], &vars);
        if let Some((program, args)) = wrapper.split_first() {
            let inner = command;
            command = std::process::Command::new(program);
            command
                .args(args)
                .arg(inner.get_program())
                .args(inner.get_args());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => command.env(k, v),
                    None => command.env_remove(k),
                };
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn clicktermd serve");
        let mut serving = Serving {
            child,
            log: log.to_path_buf(),
        };
        let base = format!("http://{listen}");
        let http = super::client();
        let start = Instant::now();
        loop {
            if let Some(status) = serving.child.try_wait().unwrap() {
                let log = serving.log();
                assert!(
                    log.contains("cannot listen"),
                    "clicktermd serve exited with {status}:\n{log}"
                );
                break; // The port was taken: try another.
            }
            if let Ok(res) = http.get(format!("{base}/healthz")).send().await
                && res.status() == StatusCode::OK
            {
                return (serving, base);
            }
            assert!(
                start.elapsed() < deadline,
                "clicktermd serve not healthy:\n{}",
                serving.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("could not start clicktermd serve on a free port");
}

/// `clicktermd ARGS serve --listen 127.0.0.1:PORT` started in `cwd` (where it may find
/// `./clicktermd.toml`) on a free port; waits for /healthz. Returns the process and its base URL.
pub async fn serve_in(cwd: &Path, args: &[&str], log: &Path) -> (Serving, String) {
    let listen = format!("127.0.0.1:{}", super::free_port());
    let mut all = args.to_vec();
    all.extend(["serve", "--listen", &listen]);
    let child = clicktermd_command(&all, &[])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn clicktermd serve");
    let mut serving = Serving {
        child,
        log: log.to_path_buf(),
    };
    let base = format!("http://{listen}");
    let http = super::client();
    let start = Instant::now();
    loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            panic!("clicktermd serve exited with {status}:\n{}", serving.log());
        }
        if let Ok(res) = http.get(format!("{base}/healthz")).send().await
            && res.status() == StatusCode::OK
        {
            return (serving, base);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "clicktermd serve not healthy:\n{}",
            serving.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
