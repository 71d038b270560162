//! The large-database benchmark (issue #13) as a smoke test: SQLite's own (it generates the database
//! file directly), so only in the SQLite suite. It uses the harness `bench_quick` includes.

use crate::bench_quick::harness;
use std::path::PathBuf;

/// The large-database benchmark (issue #13) end to end at a tiny scale against the debug binary: both
/// databases generated, every read timed on both, the bulk changes and backups measured, every figure
/// present. Again no timing is asserted.
#[test]
fn the_large_database_mode_completes_and_reports_every_figure() {
    let args: Vec<String> = [
        "--large-scale",
        "4000",
        "--large-small",
        "1500",
        "--large-integrations",
        "20",
        "--large-tries",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let options = harness::Options::from_args(
        &args,
        PathBuf::from(env!("CARGO_BIN_EXE_clicktermd")),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    )
    .expect("options");
    assert_eq!(options.mode, "large");
    let report = harness::run(&options)
        .unwrap_or_else(|e| panic!("the large-database benchmark failed: {e}"));
    let missing = harness::missing_figures(&report);
    assert!(
        missing.is_empty(),
        "missing or not positive: {missing:?} in {report:#}"
    );
    let reads = report["reads"].as_array().expect("reads");
    assert!(reads.len() >= 25, "{reads:?}");
    // The generated rows are what the reads and bulk changes expect of them.
    let counts = &report["large"]["delivery_counts_at_start"];
    assert!(counts["failed"].as_i64() > Some(0), "{counts}");
    assert!(counts["held"].as_i64() > Some(0), "{counts}");
    assert!(counts["cancelled"].as_i64() > Some(0), "{counts}");
    assert_eq!(
        report["large"]["bulk_writes"]["redeliver_failed"]["deliveries"], counts["failed"],
        "every failed delivery redelivered"
    );
    assert_eq!(
        report["large"]["backup"]["under_write_stream"]["events_in_copy"]
            .as_i64()
            .map(|n| n >= 4_000),
        Some(true),
        "{report:#}"
    );
    let table = harness::table(&report);
    eprintln!("{table}");
    assert!(table.contains("ratio"), "{table}");
}
