//! `cargo bench --bench pipeline [-- OPTIONS]`: the end-to-end benchmark of SPEC §10 against the real
//! release binary (cargo builds `clicktermd` with the bench profile, i.e. release, before this runs and
//! tells us where it is). Prints a table on standard error and one JSON document on standard output;
//! `--json FILE` also writes the JSON to FILE. Options are listed in `harness::Options::from_args` and
//! the README.

#[path = "pipeline/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_clicktermd"));
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let options = match harness::Options::from_args(&args, bin, work) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("pipeline: {options:?}");
    let report = match harness::run(&options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pipeline: failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("\n{}", harness::table(&report));
    let missing = harness::missing_figures(&report);
    let text = serde_json::to_string_pretty(&report).expect("JSON");
    println!("{text}");
    if let Some(i) = args.iter().position(|a| a == "--json")
        && let Some(path) = args.get(i + 1)
        && let Err(e) = std::fs::write(path, format!("{text}\n"))
    {
        eprintln!("pipeline: cannot write {path}: {e}");
        return ExitCode::FAILURE;
    }
    if !missing.is_empty() {
        eprintln!("pipeline: figures missing or not positive: {missing:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
