//! The integration review (issue 8): the command on a fresh temporary database prints every
//! scenario PASS and writes its reports; it passes on PostgreSQL too; against a standalone
//! sandbox (`--gateway`); and a build that breaks one KICC rule on purpose turns that row FAIL.

use std::process::Command;

use kicc_checkout::review::{self, Progress, Report, ReviewOptions};
use kicc_checkout::sandbox::{SandboxConfig, SandboxServer};

const BIN: &str = env!("CARGO_BIN_EXE_kicc-checkout");

fn assert_all_pass(report: &Report) {
    let failed: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| !s.pass)
        .map(|s| format!("{}: {}", s.info.id, s.happened))
        .collect();
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
    assert!(report.all_passed());
    assert_eq!(report.scenarios.len(), review::SCENARIOS.len());
}

/// `kicc-checkout review --json --html` from a fresh folder: exit 0, a block per scenario, the
/// measured ack maximum, and both reports.
#[test]
fn the_command_passes_every_scenario_and_writes_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (
        dir.path().join("review.json"),
        dir.path().join("review.html"),
    );
    let output = Command::new(BIN)
        .args(["review", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        output.status
    );
    let total = review::SCENARIOS.len();
    assert!(
        stdout.contains(&format!("{total} of {total} scenarios passed, 0 failed")),
        "{stdout}"
    );
    assert!(stdout.contains("slowest webhook ack"), "{stdout}");
    for s in review::SCENARIOS {
        let row = stdout
            .lines()
            .any(|l| l.starts_with("PASS") && l.contains(&format!(" {} ", s.id)));
        assert!(row, "no PASS row for {}:\n{stdout}", s.id);
        assert!(stdout.contains(s.spec));
    }
    assert!(
        stdout.contains("          rule      \"Amount Mismatch: If the payment amount"),
        "{stdout}"
    );

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["passed"], total);
    assert_eq!(report["failed"], 0);
    assert!(report["maxAckMs"].as_u64().unwrap() < 10_000);
    let first = &report["scenarios"][0];
    for key in [
        "id", "title", "spec", "rule", "done", "expected", "happened", "pass", "millis", "checks",
        "evidence",
    ] {
        assert!(!first[key].is_null(), "report field {key}");
    }
    assert!(!first["evidence"][0]["calls"].as_array().unwrap().is_empty());

    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.contains(&format!("All {total} scenarios PASS")));
    assert!(html.contains("Evidence: order"));
    // Self-contained: no script, no stylesheet or image fetched from anywhere.
    for outside in ["<script", "<link", "src=\"http", "@import"] {
        assert!(!html.contains(outside), "the report has {outside}");
    }
    // The temporary database went with the run.
    assert!(!dir.path().join("data").exists());
}

both_backends! {
    /// The same scenarios on the given database (`DATABASE_URL`), in-process.
    async fn every_scenario_passes_on_the_given_database(test_db) {
        let options = ReviewOptions { gateway: None, database_url: Some(test_db.database_url()) };
        let mut seen = Vec::new();
        let report = review::run(&options, |event| {
            if let Progress::Finished { result, .. } = event {
                seen.push(result.info.id);
            }
        })
        .await
        .expect("the review runs");
        assert_all_pass(&report);
        let ids: Vec<&str> = review::SCENARIOS.iter().map(|s| s.id).collect();
        assert_eq!(seen, ids, "progress reported every scenario in order");
        assert!(report.database.contains(if test_db.is_postgres() { "postgres" } else { "sqlite" }));
    }
}

/// `--gateway URL`: the scenarios against a sandbox running on its own (as `kicc-checkout
/// sandbox` serves it), with its own default resend delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_a_standalone_sandbox() {
    let config = SandboxConfig::from_lookup(|var| {
        Ok(match var {
            "SANDBOX_WEBHOOK_BACKOFF_MS" => Some("500".into()),
            _ => None,
        })
    })
    .unwrap();
    let sandbox = SandboxServer::build(config, "127.0.0.1:0".parse().unwrap(), None).unwrap();
    let gateway = sandbox.base_url().to_owned();
    tokio::spawn(sandbox.run_until_stopped());
    let options = ReviewOptions {
        gateway: Some(gateway.clone()),
        database_url: None,
    };
    let report = review::run(&options, |_| {})
        .await
        .expect("the review runs");
    assert_all_pass(&report);
    assert_eq!(report.gateway, gateway);
    assert!(!report.gateway_started_by_review);
}

/// A gateway that is not a sandbox is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_is_not_a_sandbox_is_refused() {
    let options = ReviewOptions {
        gateway: Some("http://127.0.0.1:9".into()),
        database_url: None,
    };
    let error = review::run(&options, |_| {}).await.expect_err("refused");
    assert!(error.to_string().contains("http://127.0.0.1:9"), "{error}");
}

/// The runner can fail: with the approval amount check skipped (a fault only the test build
/// has), the amount-mismatch row is FAIL and the command would exit 1. Process-wide switch:
/// nextest runs each test in a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_the_amount_check_turns_its_row_fail() {
    kicc_checkout::faults::skip_amount_check(true);
    let report = review::run(&ReviewOptions::default(), |_| {})
        .await
        .expect("the review runs");
    kicc_checkout::faults::skip_amount_check(false);
    let row = report
        .scenarios
        .iter()
        .find(|s| s.info.id == "approval_amount_mismatch")
        .unwrap();
    assert!(!row.pass, "{}", row.happened);
    assert_eq!(row.verdict(), "FAIL");
    assert!(
        row.happened
            .contains("order status: paid (expected cancelled)"),
        "{}",
        row.happened
    );
    assert!(!report.all_passed());
    assert_eq!(
        report.failed,
        1,
        "only the broken rule fails: {}",
        report.summary_table()
    );
    assert!(report.to_html().contains("1 FAIL"));
}

/// The runner can fail on the late-payment rule too: with late payments only noted (the app
/// before the rule), the two late-payment rows are FAIL and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignoring_late_payments_turns_their_rows_fail() {
    kicc_checkout::faults::ignore_late_payments(true);
    let report = review::run(&ReviewOptions::default(), |_| {})
        .await
        .expect("the review runs");
    kicc_checkout::faults::ignore_late_payments(false);
    let failed: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| !s.pass)
        .map(|s| s.info.id)
        .collect();
    assert_eq!(
        failed,
        ["late_payment_accepted", "late_payment_refunded"],
        "{}",
        report.summary_table()
    );
    let accepted = report
        .scenarios
        .iter()
        .find(|s| s.info.id == "late_payment_accepted")
        .unwrap();
    assert!(
        accepted
            .happened
            .contains("order status: expired (expected paid)"),
        "{}",
        accepted.happened
    );
}

/// `/review` exists in sandbox mode only: a live shop has no review page, report or run button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_page_is_sandbox_only() {
    let live = crate::helpers::TestApp::spawn_with(
        crate::helpers::TestDb::sqlite(),
        &[
            ("KICC_API_BASE", "http://127.0.0.1:9"),
            ("KICC_MALL_ID", kicc_checkout::config::SANDBOX_MALL_ID),
            ("KICC_SECRET_KEY", kicc_checkout::config::SANDBOX_SECRET_KEY),
            ("ADMIN_PASSWORD", "correct horse"),
        ],
    )
    .await;
    for path in [
        "/review",
        "/review/run.json",
        "/review/report.html",
        "/review/report.json",
    ] {
        let r = live.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.text().await.unwrap().contains("<html"),
            "{path}: an HTML page"
        );
    }
    assert_eq!(live.post_form("/review", &[]).await.status(), 404);
    let home = live.get("/").await.text().await.unwrap();
    assert!(!home.contains("href=\"/review\""), "no link to it either");

    // In sandbox mode, before any run: the page lists every scenario, and there is no report yet.
    let sandbox = crate::helpers::TestApp::spawn(crate::helpers::TestDb::sqlite()).await;
    let page = sandbox.get("/review").await.text().await.unwrap();
    for s in review::SCENARIOS {
        assert!(page.contains(&format!("id=\"row-{}\"", s.id)), "{}", s.id);
    }
    assert_eq!(sandbox.get("/review/report.html").await.status(), 404);
    let run: serde_json::Value = sandbox.get("/review/run.json").await.json().await.unwrap();
    assert_eq!(run["state"], "idle");
}

/// Issue 10: after every flow of the app — the whole review: WeChat and KICC Pay payments,
/// approvals, timeouts, net-cancels, cancels, notifications, the reconciler — a grep of the log
/// (captured at trace level) and of the database files finds no secret key, no tokenKey and no
/// authorizationId KICC issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_flow_no_secret_is_in_the_log_or_the_database() {
    use kicc_checkout::config::{self, Config};
    let capture = crate::helpers::capture_logs();
    let sandbox = SandboxServer::build(
        SandboxConfig::from_lookup(|_| Ok(None)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        None,
    )
    .unwrap();
    let state = sandbox.state().clone();
    let gateway = sandbox.base_url().to_owned();
    tokio::spawn(sandbox.run_until_stopped());
    let test_db = crate::helpers::TestDb::sqlite();
    let options = ReviewOptions {
        gateway: Some(gateway),
        database_url: Some(test_db.database_url()),
    };
    let report = review::run(&options, |_| {})
        .await
        .expect("the review runs");
    assert_all_pass(&report);

    // What must not be found: the secrets, and every authorizationId the gateway issued with
    // the tokenKey that encrypts it.
    let defaults = Config::from_lookup(|_| Ok(None)).unwrap();
    let (key, iv) = (
        secrecy::ExposeSecret::expose_secret(&defaults.kiccpay.aes_key),
        secrecy::ExposeSecret::expose_secret(&defaults.kiccpay.aes_iv),
    );
    let mut needles: Vec<String> = [
        config::SANDBOX_SECRET_KEY,
        config::SANDBOX_KICCPAY_SECRET_KEY,
        config::SANDBOX_KICCPAY_AES_KEY,
        config::SANDBOX_KICCPAY_AES_IV,
    ]
    .map(str::to_owned)
    .to_vec();
    let issued: Vec<String> = state
        .ledger()
        .trades_newest_first()
        .filter_map(|t| t.authorization_id.clone())
        .collect();
    assert!(
        issued.len() > 20,
        "the review's payments got authorizationIds: {}",
        issued.len()
    );
    for id in &issued {
        needles.push(kicc_checkout::kicc::crypto::encrypt_token_key(key, iv, id));
        needles.push(id.clone());
    }

    let path = test_db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let mut files = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
            files.push((format!("review.db{suffix}"), bytes));
        }
    }
    assert!(
        files[0].1.len() > 100_000,
        "the database holds the review's records"
    );
    let logged = capture.text();
    assert!(logged.contains("kicc approval_v2"), "the log was captured");
    for needle in &needles {
        assert!(
            !logged.contains(needle.as_str()),
            "`{needle}` is in the log"
        );
        for (name, bytes) in &files {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "`{needle}` is in {name}");
        }
    }
}
