//! The README's "First consent, with curl", run as it is written: its `sh` block, read from the
//! README, run by `sh` against a real server, with `clicktermd` (the built binary) for `cargo run -q
//! --release --` and the server's address for `http://127.0.0.1:8080`. It must end in an accepted,
//! verified consent and an `ACCEPTED` status; and the README's SDK and public paths must answer.

use std::path::Path;
use std::process::Command;

use crate::common::{TestServer, clicktermd_bin};
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The first `sh` block of the README's section `title`.
fn sh_block(title: &str) -> String {
    let readme = readme();
    let section = readme
        .split(&format!("\n## {title}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("the README has the section {title:?}"))
        .split("\n## ")
        .next()
        .unwrap()
        .to_string();
    section
        .split("```sh\n")
        .nth(1)
        .expect("a sh block")
        .split("```")
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_curl_walk_through_reaches_an_accepted_verified_consent() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The walk-through runs in the server's directory: its CLI finds ./clicktermd-data.
    std::os::unix::fs::symlink(&server.data_dir, dir.path().join("clicktermd-data")).unwrap();
    let script = sh_block("First consent, with curl");
    assert!(
        script.contains("cargo run -q --release --") && script.contains("http://127.0.0.1:8080"),
        "the block the test rewrites: {script}"
    );
    let script = script
        .replace("cargo run -q --release --", "clicktermd")
        .replace(
            "http://127.0.0.1:8080",
            server.url("").trim_end_matches('/'),
        );
    let bin_dir = Path::new(clicktermd_bin()).parent().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-e")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLICKTERMD_") {
            cmd.env_remove(name);
        }
    }
    // On PostgreSQL, what the CLI needs to reach the server's store (nothing on SQLite).
    cmd.envs(server.cli_env());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The last two lines are the verify's answer and the status.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let verified: Value = serde_json::from_str(lines[lines.len() - 2]).expect("verify's JSON");
    assert_eq!(verified["clickwrapEventStatus"], "ACCEPTED", "{stdout}");
    assert_eq!(verified["endUserId"], "user-1", "{stdout}");
    let status: Value = serde_json::from_str(lines[lines.len() - 1]).expect("status JSON");
    assert!(
        status.to_string().contains("\"ACCEPTED\""),
        "the end user's status: {status}"
    );
    server.stop().await;
}

/// Every public route the README's API overview names answers at its full path (not 404): the SDK
/// and public client API paths are written whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paths_in_the_readmes_api_overview_exist() {
    let server = TestServer::start().await;
    let readme = readme();
    let mut checked = 0;
    for line in readme.lines().filter(|l| {
        l.starts_with("| `GET /public-client") || l.starts_with("| `POST /public-client")
    }) {
        let route = line.trim_start_matches("| `").split('`').next().unwrap();
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .split('?')
            .next()
            .unwrap()
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{endUserId}", "someone");
        let client = crate::common::client();
        let res = match method {
            "GET" => client.get(server.url(&path)),
            _ => client.post(server.url(&path)).json(&serde_json::json!({})),
        }
        .send()
        .await
        .unwrap();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["message"], "route not found",
            "{route} is not a route: {body}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} routes found in the README");
    server.stop().await;
}
