//! schemathesis (PyPI) against the OpenAPI document the running daemon serves: every
//! operation, valid and invalid inputs, as admin (every route open to it), and not one answer
//! is a 5xx. schemathesis lives in a venv under `target/` (`scripts/schemathesis-venv.sh`,
//! which `scripts/test.sh` runs first; this test runs it when the venv is missing).

mod common;
mod common_api;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common_api::{ApiRig, RigOptions};
use dcguard::api::auth::Role;
use dcguard::api::ratelimit::LimitSettings;

/// Test cases per operation and phase: bounds the run to a few minutes.
const MAX_EXAMPLES: &str = "5";
/// Generated (fuzzing) and schema examples; the coverage phase's exhaustive boundary
/// cases would take far longer than a test should.
const PHASES: &str = "examples,fuzzing";
/// Hang guard for the whole schemathesis run (not a timing assertion).
const RUN_GUARD: Duration = Duration::from_secs(600);

/// `target/` of this build (the parent of the integration tests' temporary directory).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_owned()
}

/// The `st` executable, installing the venv first when it is missing.
fn schemathesis() -> PathBuf {
    let target = target_dir();
    let st = target.join("schemathesis-venv/bin/st");
    if !st.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis-venv.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run scripts/schemathesis-venv.sh");
        assert!(status.success(), "scripts/schemathesis-venv.sh failed");
    }
    assert!(st.exists(), "no {}", st.display());
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let st = schemathesis();
    let rig = ApiRig::start(RigOptions {
        // Invalid inputs are refused 400/404/409, never 401/403: no lockout expected, but
        // a generous limit keeps the run independent of it.
        limits: LimitSettings {
            max_failures: 1_000_000,
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    // /readyz answers 503 until the sources started: wait for it, then every 5xx is a bug.
    let ready = {
        let mut ok = false;
        let deadline = tokio::time::Instant::now() + common_api::HANG;
        while tokio::time::Instant::now() < deadline {
            if rig.get("/readyz", None).await.0 == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ok
    };
    assert!(ready, "the daemon never became ready");

    // Output goes to files under target/ so a failed or hung run can be read afterwards.
    let reports = target_dir().join("schemathesis-report");
    std::fs::create_dir_all(&reports).unwrap();
    let out_path = reports.join("stdout.txt");
    let err_path = reports.join("stderr.txt");
    let mut child = tokio::process::Command::new(&st)
        .arg("run")
        .arg(rig.url("/api/v1/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", PHASES])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "7"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .args(["--suppress-health-check", "all"])
        .arg("--no-shrink")
        .args(["--report", "ndjson"])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", rig.token(Role::Admin)))
        .env("NO_COLOR", "1")
        .current_dir(&reports)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start schemathesis");
    let ran = tokio::time::timeout(RUN_GUARD, child.wait()).await;
    if ran.is_err() {
        let _ = child.kill().await;
    }
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = ran
        .unwrap_or_else(|_| panic!("schemathesis did not finish within its guard:\n{out}\n{err}"))
        .unwrap();
    let _dir = rig.stop().await;
    // The run tested operations and ended without a failure (exit 0 only when every check
    // passed; schemathesis exits 1 on a failed check and on an error).
    assert!(
        out.contains("API Operations") || out.contains("operations"),
        "{out}\n{err}"
    );
    assert!(!out.contains("Server error"), "{out}");
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{out}\n{err}"
    );
}
