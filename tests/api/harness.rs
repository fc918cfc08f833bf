//! The test harness's own promise: with `CI` set, a PostgreSQL that does not answer fails the
//! PostgreSQL tests instead of skipping them; without `CI` they are skipped with a message.

use std::process::Command;

#[test]
fn postgres_tests_fail_under_ci_and_skip_otherwise_when_postgres_is_down() {
    let exe = std::env::current_exe().expect("test binary path");
    let run = |ci: bool| {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                "migrations::indexes_later_features_need_exist::postgres",
                "--nocapture",
            ])
            .env(
                "TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:1/postgres",
            )
            .env_remove("CI");
        if ci {
            command.env("CI", "1");
        }
        let out = command.output().expect("test binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(false);
    assert!(ok, "without CI the test is skipped, not failed: {text}");
    assert!(
        text.contains("SKIPPED: PostgreSQL does not answer"),
        "{text}"
    );
    assert!(
        text.contains("1 passed"),
        "the test itself was selected and ran: {text}"
    );
    let (ok, text) = run(true);
    assert!(!ok, "with CI a missing PostgreSQL must fail: {text}");
    assert!(text.contains("CI is set"), "{text}");
}
