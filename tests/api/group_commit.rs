//! `Db::write`: on SQLite the writes waiting at one moment commit together (group commit); each
//! caller still gets what a transaction of its own would give. On PostgreSQL the same promises
//! hold with one transaction per write.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use kicc_checkout::db::{AnyConnection, Db, DbError};

/// Two tables of the test's own: rows with a unique key, and children whose parent must exist
/// (the constraint can be deferred to the commit).
fn tables(db: &Db) {
    db.get()
        .expect("connection")
        .batch_execute(
            "CREATE TABLE gc_rows (k BIGINT PRIMARY KEY);
             CREATE TABLE gc_children (k BIGINT PRIMARY KEY,
                 parent BIGINT NOT NULL REFERENCES gc_rows (k) DEFERRABLE INITIALLY IMMEDIATE);",
        )
        .expect("test tables");
}

fn insert(conn: &mut AnyConnection, k: i64) -> Result<i64, DbError> {
    conn.batch_execute(&format!("INSERT INTO gc_rows (k) VALUES ({k})"))?;
    Ok(k)
}

fn keys(db: &Db) -> Vec<i64> {
    let mut conn = db.get().expect("connection");
    diesel::sql_query("SELECT k FROM gc_rows ORDER BY k")
        .load::<Key>(&mut *conn)
        .expect("keys")
        .into_iter()
        .map(|r| r.k)
        .collect()
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = BigInt)]
    k: i64,
}

/// Occupies the writer with a body that waits for `release`, queues `bodies` behind it, waits
/// until the writer holds them all (SQLite), lets the first go, and returns every outcome in
/// order, the first one's included.
async fn behind_a_busy_writer<F>(db: &Db, bodies: Vec<F>) -> Vec<Result<i64, DbError>>
where
    F: FnMut(&mut AnyConnection) -> Result<i64, DbError> + Send + 'static,
{
    let (release, wait) = mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let (started, running) = mpsc::channel::<()>();
    let queued_before = db.group_stats().map(|s| s.queued());
    let first = tokio::spawn({
        let db = db.clone();
        async move {
            db.write(move |conn| {
                let _ = started.send(());
                let _ = wait
                    .lock()
                    .expect("lock")
                    .recv_timeout(Duration::from_secs(10));
                insert(conn, 1)
            })
            .await
        }
    });
    // The others are queued only once the first is running, so they wait behind it.
    tokio::task::spawn_blocking(move || running.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("task")
        .expect("the first write never started");
    let count = bodies.len() as u64;
    let mut rest = Vec::new();
    for body in bodies {
        let db = db.clone();
        rest.push(tokio::spawn(async move { db.write(body).await }));
    }
    if let (Some(stats), Some(before)) = (db.group_stats(), queued_before) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.queued() < before + 1 + count {
            assert!(
                Instant::now() < deadline,
                "the writes never reached the writer"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    release.send(()).expect("first body waits");
    let mut outcomes = vec![first.await.expect("task")];
    for task in rest {
        outcomes.push(task.await.expect("task"));
    }
    outcomes
}

type Body = Box<dyn FnMut(&mut AnyConnection) -> Result<i64, DbError> + Send>;

fn ok(k: i64) -> Body {
    Box::new(move |conn| insert(conn, k))
}

both_backends! {
    async fn queued_writes_commit_together_each_with_its_own_outcome(test_db) {
        let db = test_db.connect(4);
        tables(&db);
        let before = db.group_stats().map(|s| s.committed());
        let mut bodies: Vec<Body> = (2..=19).map(ok).collect();
        // Writes a row, then fails: its row must not stay.
        bodies.push(Box::new(|conn| {
            insert(conn, 100)?;
            Err(DbError::Corrupt("this body refuses".into()))
        }));
        // The same key as another write of the batch: whichever of the two the writer (or, on
        // PostgreSQL, the server) takes first wins; the other gets the unique violation.
        bodies.push(Box::new(|conn| insert(conn, 5)));
        let outcomes = behind_a_busy_writer(&db, bodies).await;

        for (i, outcome) in outcomes.iter().take(19).enumerate() {
            if i != 4 {
                assert_eq!(outcome.as_ref().ok(), Some(&(i as i64 + 1)), "write {i}");
            }
        }
        assert!(
            matches!(&outcomes[19], Err(DbError::Corrupt(m)) if m == "this body refuses"),
            "{:?}", outcomes[19]
        );
        let fives = [&outcomes[4], &outcomes[20]];
        assert_eq!(
            fives.iter().filter(|o| o.as_ref().ok() == Some(&5)).count(),
            1,
            "{fives:?}"
        );
        assert_eq!(
            fives.iter().filter(|o| o.as_ref().is_err_and(DbError::is_unique_violation)).count(),
            1,
            "{fives:?}"
        );
        assert_eq!(keys(&db), (1..=19).collect::<Vec<_>>());

        if let (Some(stats), Some((commits, writes))) = (db.group_stats(), before) {
            // The first alone, then the twenty queued behind it in one transaction.
            assert_eq!(stats.committed(), (commits + 2, writes + 21));
        }
    }

    async fn a_batch_that_cannot_commit_runs_each_write_alone(test_db) {
        let db = test_db.connect(4);
        tables(&db);
        let mut bodies: Vec<Body> = (2..=6).map(ok).collect();
        // Defers its foreign key to the commit and breaks it: the commit of whatever
        // transaction it is in fails.
        let defer = if test_db.is_postgres() {
            "SET CONSTRAINTS ALL DEFERRED"
        } else {
            "PRAGMA defer_foreign_keys = ON"
        };
        bodies.insert(2, Box::new(move |conn| {
            conn.batch_execute(&format!(
                "{defer}; INSERT INTO gc_children (k, parent) VALUES (1, 999)"
            ))?;
            Ok(-1)
        }));
        let outcomes = behind_a_busy_writer(&db, bodies).await;

        let ks: Vec<_> = outcomes.iter().map(|o| o.as_ref().ok().copied()).collect();
        assert_eq!(ks, [Some(1), Some(2), Some(3), None, Some(4), Some(5), Some(6)]);
        assert!(
            matches!(&outcomes[3], Err(DbError::Query(_))),
            "the breaking write gets its commit's error: {:?}",
            outcomes[3]
        );
        assert_eq!(keys(&db), (1..=6).collect::<Vec<_>>());
        let children: i64 = diesel::select(diesel::dsl::sql::<BigInt>(
            "(SELECT COUNT(*) FROM gc_children)",
        ))
        .get_result(&mut *db.get().expect("connection"))
        .expect("count");
        assert_eq!(children, 0);

        // The writer goes on.
        assert_eq!(db.write(|conn| insert(conn, 7)).await.expect("later write"), 7);
    }

    async fn a_write_that_panics_leaves_the_others_and_the_writer(test_db) {
        let db = test_db.connect(4);
        tables(&db);
        let mut bodies: Vec<Body> = (2..=5).map(ok).collect();
        bodies.insert(1, Box::new(|conn| {
            insert(conn, 50)?;
            panic!("a bug in a write");
        }));
        let outcomes = behind_a_busy_writer(&db, bodies).await;

        assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
        assert!(outcomes[2].is_err(), "the panicking write fails: {:?}", outcomes[2]);
        assert!(outcomes[3..].iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(keys(&db), (1..=5).collect::<Vec<_>>());
        assert_eq!(db.write(|conn| insert(conn, 6)).await.expect("later write"), 6);
    }
}
