//! The benchmark's quick mode as a smoke test (issue #7): the harness of `cargo bench --bench pipeline`
//! runs end to end against the debug binary at a small scale and must report every figure. Timing is not
//! asserted: a debug build on a shared machine says nothing about speed. In the PostgreSQL suite the
//! same test runs `--backend postgres` (one node, on the durable cluster the harness starts itself).
//! The large-database mode, SQLite's own, is in `bench_large.rs`.

#[path = "../../benches/pipeline/harness.rs"]
pub(crate) mod harness;

use std::path::PathBuf;

#[test]
fn quick_mode_completes_and_reports_every_figure() {
    // Exactly what `cargo bench --bench pipeline -- --quick` runs (with `--backend postgres` in the
    // PostgreSQL suite), against the debug binary.
    let args: &[&str] = if crate::POSTGRES {
        &["--quick", "--backend", "postgres"]
    } else {
        &["--quick"]
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let options = harness::Options::from_args(
        &args,
        PathBuf::from(env!("CARGO_BIN_EXE_clicktermd")),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    )
    .expect("options");
    assert_eq!(options.mode, "quick");
    let backend = if crate::POSTGRES {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(options.backend.as_str(), backend);
    let report =
        harness::run(&options).unwrap_or_else(|e| panic!("the quick benchmark failed: {e}"));
    let missing = harness::missing_figures(&report);
    assert!(
        missing.is_empty(),
        "missing or not positive: {missing:?} in {report:#}"
    );
    // Nothing in the report is null: every figure was measured.
    fn no_nulls(v: &serde_json::Value, at: &str) {
        match v {
            serde_json::Value::Null => panic!("{at} is null"),
            serde_json::Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| no_nulls(v, &format!("{at}/{k}"))),
            serde_json::Value::Array(a) => a.iter().for_each(|v| no_nulls(v, at)),
            _ => {}
        }
    }
    no_nulls(&report, "");
    assert_eq!(report["verify"]["errors"], 0, "{report:#}");
    assert_eq!(report["backend"], backend, "{report:#}");
    if crate::POSTGRES {
        // Measured on PostgreSQL's default durability, as the server itself reports it.
        assert_eq!(report["postgres"]["fsync"], "on", "{report:#}");
        assert_eq!(report["postgres"]["synchronous_commit"], "on", "{report:#}");
    }
    let table = harness::table(&report);
    eprintln!("{table}\n{report:#}");
    assert!(table.contains("verify"), "{table}");
}
