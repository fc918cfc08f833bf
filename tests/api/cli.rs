//! The binary itself: fresh start on SQLite, restart reusing the file, PostgreSQL migrate + serve,
//! and one-line errors for bad configuration.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kicc-checkout");

/// A running `kicc-checkout` child, killed when dropped.
pub(crate) struct Running {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary in `cwd` on an ephemeral port and waits for its "listening on" line.
pub(crate) fn start(cwd: &Path, vars: &[(&str, &str)]) -> Running {
    let mut command = Command::new(BIN);
    command
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("kicc-checkout listening on ") {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the app said where it listens");
    Running { child, base }
}

fn get(url: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::blocking::get(url) {
            Ok(r) => return (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(e) if Instant::now() > deadline => panic!("GET {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs the binary to completion with `vars`; returns (success, stdout, stderr).
fn run(args: &[&str], vars: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in vars {
        command.env(k, v);
    }
    let out = command.output().expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fresh_start_creates_the_sqlite_file_and_a_second_start_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("data/kicc-checkout.db");
    assert!(!db_file.exists());
    {
        let app = start(dir.path(), &[]);
        let (status, body) = get(&format!("{}/healthz", app.base));
        assert_eq!(status, 200, "{body}");
        let (status, html) = get(&format!("{}/", app.base));
        assert_eq!(status, 200);
        assert!(html.contains("Ceramic Coffee Mug"));
        assert!(
            db_file.exists(),
            "data/kicc-checkout.db created in the working directory"
        );
    }
    let size_before = std::fs::metadata(&db_file).unwrap().len();
    let app = start(dir.path(), &[]);
    let (status, _) = get(&format!("{}/healthz", app.base));
    assert_eq!(status, 200);
    let (_, html) = get(&format!("{}/", app.base));
    assert_eq!(
        html.matches("class=\"product-card\"").count(),
        7,
        "the catalog is not seeded twice"
    );
    assert!(std::fs::metadata(&db_file).unwrap().len() >= size_before);
    // `migrate` against the reused file has nothing left to do.
    let out = Command::new(BIN)
        .arg("migrate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

#[test]
fn postgres_migrate_then_serve() {
    let Some(test_db) = crate::helpers::TestDb::postgres() else {
        return;
    };
    let (ok, stdout, stderr) = run(&["migrate"], &[("DATABASE_URL", &test_db.url)]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "applied 20261121000001, 20261121000002, 20261121000003, 20261121000004, 20261121000005, \
             20261122000006, 20261122000007"
        ),
        "{stdout}"
    );
    let (ok, stdout, _) = run(&["migrate"], &[("DATABASE_URL", &test_db.url)]);
    assert!(ok && stdout.contains("up to date"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), &[("DATABASE_URL", &test_db.url)]);
    let (status, body) = get(&format!("{}/healthz", app.base));
    assert_eq!(status, 200);
    assert!(body.contains("\"backend\":\"postgres\""), "{body}");
    let (_, html) = get(&format!("{}/", app.base));
    assert!(html.contains("Ceramic Coffee Mug"));
    assert!(
        !dir.path().join("data").exists(),
        "no SQLite file on PostgreSQL"
    );
}

/// A bad value stops the program with exactly one line that names the variable.
fn assert_one_line_error(args: &[&str], vars: &[(&str, &str)], variable: &str) {
    let (ok, _, stderr) = run(args, vars);
    assert!(!ok, "{args:?} {vars:?} should fail");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(
        lines[0].starts_with(&format!("kicc-checkout: {variable}: ")),
        "{}",
        lines[0]
    );
}

#[test]
fn bad_database_url_gives_one_line() {
    assert_one_line_error(
        &[],
        &[("DATABASE_URL", "mysql://root@localhost/shop")],
        "DATABASE_URL",
    );
    assert_one_line_error(
        &["migrate"],
        &[("DATABASE_URL", "redis://localhost")],
        "DATABASE_URL",
    );
    // A server that does not answer: PostgreSQL's own message, folded into the one line.
    assert_one_line_error(
        &[],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/shop")],
        "DATABASE_URL",
    );
    assert_one_line_error(
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/shop")],
        "DATABASE_URL",
    );
    // A folder that cannot be created.
    assert_one_line_error(
        &[],
        &[("DATABASE_URL", "sqlite:///proc/no-such-dir/shop.db")],
        "DATABASE_URL",
    );
}

#[test]
fn bad_bind_addr_gives_one_line() {
    assert_one_line_error(&[], &[("BIND_ADDR", "localhost")], "BIND_ADDR");
    assert_one_line_error(&["serve"], &[("BIND_ADDR", "127.0.0.1:70000")], "BIND_ADDR");
    // An address already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_one_line_error(&[], &[("BIND_ADDR", &addr)], "BIND_ADDR");
}

#[test]
fn other_bad_values_give_one_line() {
    assert_one_line_error(
        &[],
        &[("KICC_API_BASE", "https://testpgapi.easypay.co.kr")],
        "KICC_MALL_ID",
    );
    assert_one_line_error(&[], &[("KICC_TIMEOUT_SECS", "soon")], "KICC_TIMEOUT_SECS");
    assert_one_line_error(
        &[],
        &[("WEBHOOK_ALLOWED_IPS", "not-an-ip")],
        "WEBHOOK_ALLOWED_IPS",
    );
}

#[test]
fn sigterm_stops_the_app_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = start(dir.path(), &[("RECONCILE_INTERVAL_SECS", "1")]);
    let (status, _) = get(&format!("{}/healthz", app.base));
    assert_eq!(status, 200);
    let pid = app.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(exit) = app.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 40 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn reconcile_once_runs_one_pass_and_exits() {
    let (ok, stdout, stderr) = run(
        &["reconcile", "--once"],
        &[("DATABASE_URL", "sqlite://data/shop.db")],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "reconciled: 0 claimed, 0 cancel attempts, 0 approvals resolved, 0 orders settled"
        ),
        "{stdout}"
    );
}
