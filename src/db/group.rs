//! Group commit for SQLite: one writer thread runs the write transactions waiting for it
//! together, each in a savepoint of one `BEGIN IMMEDIATE … COMMIT`, and answers each of them
//! only after that commit.
//!
//! SQLite writes one transaction at a time, and each commit writes every page it touched to the
//! WAL with its checksum. Under a burst (a flash sale's approval webhooks) the writers queue
//! anyway; taking all of them into one transaction writes each table and index page once per
//! batch instead of once per writer (docs/BENCHMARKS.md, issue 9).
//!
//! What each caller is promised is what a transaction of its own would give:
//! - **Its own outcome.** A body that fails is rolled back to its savepoint; the others go on.
//! - **Nothing answered before it is durable.** Answers go out after the commit.
//! - **No shared fate.** If the batch cannot commit (or a body breaks the transaction: a panic,
//!   an error SQLite answers by rolling back the whole transaction), the batch is rolled back
//!   and every body that did not panic runs again alone, in its own transaction, and gets that
//!   outcome. A body is therefore a write transaction's body: it may run more than once and
//!   must not act outside the database.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use diesel::Connection;
use diesel::connection::TransactionManager;
use prometheus::{Histogram, HistogramOpts};
use tokio::sync::oneshot;

use super::{AnyConnection, DatabaseUrl, DbError, Manager, write_transaction};
use crate::text::one_line;

/// Most bodies in one transaction: bounds how long the last one in a batch waits for its
/// answer, and how much one failed commit has to run again.
const MAX_BATCH: usize = 128;

/// A body waiting for the writer, with where its answer goes.
trait Pending: Send {
    /// Runs the body once inside the current transaction (the batch's savepoint, or a
    /// transaction of its own) and keeps its outcome; `true` when the body succeeded.
    fn attempt(&mut self, conn: &mut AnyConnection) -> bool;
    /// Replaces the kept outcome with `error` (the commit that would have made it durable
    /// failed, or the body never ran).
    fn fail(&mut self, error: DbError);
    /// Sends the kept outcome.
    fn answer(self: Box<Self>);
}

struct Task<T, F> {
    body: F,
    outcome: Option<Result<T, DbError>>,
    reply: oneshot::Sender<Result<T, DbError>>,
}

impl<T, F> Pending for Task<T, F>
where
    T: Send,
    F: FnMut(&mut AnyConnection) -> Result<T, DbError> + Send,
{
    fn attempt(&mut self, conn: &mut AnyConnection) -> bool {
        let outcome = (self.body)(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn fail(&mut self, error: DbError) {
        self.outcome = Some(Err(error));
    }

    fn answer(self: Box<Self>) {
        let outcome = self.outcome.unwrap_or(Err(DbError::Cancelled));
        // The caller may have gone (its request was dropped): nothing to tell.
        let _ = self.reply.send(outcome);
    }
}

/// Counters for `/metrics` and tests: transactions committed by the writer and the bodies
/// they carried, and where the writer's time goes (the profile of the webhook tail,
/// docs/BENCHMARKS.md).
#[derive(Debug)]
pub struct GroupStats {
    queued: AtomicU64,
    commits: AtomicU64,
    writes: AtomicU64,
    /// Bodies per batch.
    batch_size: Histogram,
    /// From `BEGIN IMMEDIATE` to the last body's end: the work.
    bodies_seconds: Histogram,
    /// The `COMMIT` alone: the WAL frames written (no sync under `synchronous = NORMAL`), and
    /// in the commit that crosses 1,000 WAL frames SQLite's automatic checkpoint: the WAL copied
    /// back into the database and both files synced.
    commit_seconds: Histogram,
}

impl Default for GroupStats {
    fn default() -> Self {
        const SECONDS: [f64; 12] = [
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.5,
        ];
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric")
        };
        Self {
            queued: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            batch_size: histogram(
                "sqlite_writer_batch_size",
                "Write transactions carried by one group commit",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ),
            bodies_seconds: histogram(
                "sqlite_writer_bodies_seconds",
                "Time a group commit spends running its bodies",
                &SECONDS,
            ),
            commit_seconds: histogram(
                "sqlite_writer_commit_seconds",
                "Time of a group commit's COMMIT (with SQLite's automatic checkpoint when due)",
                &SECONDS,
            ),
        }
    }
}

impl GroupStats {
    /// Bodies handed to the writer so far.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// (write transactions the writer committed, bodies that ran in them, failed or not).
    pub fn committed(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    /// The histograms, for a Prometheus registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        [&self.batch_size, &self.bodies_seconds, &self.commit_seconds]
            .into_iter()
            .map(|h| Box::new(h.clone()) as Box<dyn prometheus::core::Collector>)
            .collect()
    }
}

/// The handle to the writer thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct GroupWriter {
    queue: mpsc::Sender<Box<dyn Pending>>,
    stats: Arc<GroupStats>,
}

impl GroupWriter {
    /// Starts the writer thread for the SQLite file `url` names.
    pub fn start(url: &DatabaseUrl) -> Result<Self, DbError> {
        let (queue, waiting) = mpsc::channel();
        let stats = Arc::new(GroupStats::default());
        let (url, thread_stats) = (url.clone(), stats.clone());
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || Writer::new(url, thread_stats).run(&waiting))
            .map_err(|e| DbError::Connect(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { queue, stats })
    }

    /// Queues `body` and waits for its outcome, answered after its commit.
    pub async fn write<T, F>(&self, body: F) -> Result<T, DbError>
    where
        F: FnMut(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task = Box::new(Task {
            body,
            outcome: None,
            reply,
        });
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.queue
            .send(task)
            .map_err(|_| DbError::Connect("the SQLite writer has stopped".into()))?;
        // Dropped unanswered only if the writer thread died.
        answer.await.map_err(|_| DbError::Cancelled)?
    }

    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }
}

/// The writer thread's state: its own connection (outside the pool, so it never waits for
/// one), opened again after anything leaves it in doubt. It keeps SQLite's automatic checkpoint
/// (the commit that crosses 1,000 WAL pages copies them back). Two other places for it were
/// measured and dropped (docs/BENCHMARKS.md, "Tried and dropped"): a checkpointer thread beside
/// the writer, and the writer itself checkpointing after it has answered a batch.
struct Writer {
    url: DatabaseUrl,
    conn: Option<AnyConnection>,
    stats: Arc<GroupStats>,
}

impl Writer {
    fn new(url: DatabaseUrl, stats: Arc<GroupStats>) -> Self {
        Self {
            url,
            conn: None,
            stats,
        }
    }

    fn run(mut self, waiting: &mpsc::Receiver<Box<dyn Pending>>) {
        while let Ok(first) = waiting.recv() {
            let mut batch = vec![first];
            batch.extend(waiting.try_iter().take(MAX_BATCH - 1));
            self.stats.batch_size.observe(batch.len() as f64);
            self.commit(&mut batch);
            for task in batch {
                task.answer();
            }
        }
    }

    fn connection(&mut self) -> Result<&mut AnyConnection, DbError> {
        if self.conn.is_none() {
            self.conn = Some(Manager::open(&self.url)?);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// Runs the batch in one transaction, or each body alone when that is not possible.
    fn commit(&mut self, batch: &mut [Box<dyn Pending>]) {
        let count = batch.len() as u64;
        if batch.len() > 1 {
            match self.together(batch) {
                Ok(()) => {
                    self.count(1, count);
                    return;
                }
                Err((error, panicked)) => {
                    log::warn!(
                        "SQLite group commit of {count} writes failed ({error}); running each alone"
                    );
                    // Whatever state the failure left, a fresh connection has none of it.
                    self.conn = None;
                    for (index, task) in batch.iter_mut().enumerate() {
                        if panicked.contains(&index) {
                            task.fail(DbError::Cancelled);
                        } else {
                            self.alone(task.as_mut());
                        }
                    }
                    return;
                }
            }
        }
        self.alone(batch[0].as_mut());
    }

    /// One transaction with a savepoint per body. `Err` when it did not commit, with the
    /// bodies that panicked.
    fn together(&mut self, batch: &mut [Box<dyn Pending>]) -> Result<(), (DbError, Vec<usize>)> {
        let conn = self.connection().map_err(|e| (e, Vec::new()))?;
        let start = Instant::now();
        let mut panicked = Vec::new();
        let committed = write_transaction(conn, |conn| {
            for (index, task) in batch.iter_mut().enumerate() {
                // A body that fails is rolled back to its savepoint and keeps its error.
                let ran = catch_unwind(AssertUnwindSafe(|| {
                    conn.transaction(|conn| {
                        if task.attempt(conn) {
                            Ok(())
                        } else {
                            Err(Rollback::Body)
                        }
                    })
                }));
                match ran {
                    Ok(Ok(()) | Err(Rollback::Body)) => {}
                    Ok(Err(Rollback::Db(e))) => return Err(e.into()),
                    Err(_) => {
                        panicked.push(index);
                        return Err(DbError::Corrupt("a write panicked mid-batch".into()));
                    }
                }
                // The batch's transaction must still be open, one level deep, for the next
                // body. SQLite rolls the whole transaction back on some errors (a full disk,
                // an I/O error); the savepoint's `RELEASE` or `ROLLBACK TO` then fails, and
                // diesel reports it above or marks its bookkeeping broken here.
                let depth = transaction_depth(conn).map_err(DbError::from)?;
                if depth.map(u32::from) != Some(1) {
                    return Err(DbError::Corrupt(
                        "the batch's transaction ended inside a write".into(),
                    ));
                }
            }
            Ok(Instant::now())
        });
        committed
            .map(|bodies_done| self.timed(start, bodies_done))
            .map_err(|e| (e, panicked))
    }

    /// One body in a transaction of its own.
    fn alone(&mut self, task: &mut dyn Pending) {
        let conn = match self.connection() {
            Ok(conn) => conn,
            Err(e) => {
                task.fail(e);
                return;
            }
        };
        let start = Instant::now();
        let ran = catch_unwind(AssertUnwindSafe(|| {
            write_transaction(conn, |conn| {
                if task.attempt(conn) {
                    Ok(Instant::now())
                } else {
                    Err(Rollback::Body)
                }
            })
        }));
        match ran {
            Ok(Ok(bodies_done)) => {
                self.timed(start, bodies_done);
                self.count(1, 1);
            }
            // The body's own error is already kept.
            Ok(Err(Rollback::Body)) => {}
            Ok(Err(Rollback::Db(e))) => {
                log::error!("SQLite write did not commit: {}", one_line(&e));
                task.fail(e.into());
                self.conn = None;
            }
            Err(_) => {
                log::error!("a SQLite write panicked; its transaction is rolled back");
                task.fail(DbError::Cancelled);
                self.conn = None;
            }
        }
        if self
            .conn
            .as_mut()
            .is_some_and(|c| !matches!(transaction_depth(c), Ok(None)))
        {
            self.conn = None;
        }
    }

    /// Records a committed transaction's times: its bodies, from `start`, and its `COMMIT`,
    /// from `bodies_done` to now.
    fn timed(&self, start: Instant, bodies_done: Instant) {
        let stats = &self.stats;
        stats
            .bodies_seconds
            .observe((bodies_done - start).as_secs_f64());
        stats
            .commit_seconds
            .observe(bodies_done.elapsed().as_secs_f64());
    }

    fn count(&self, commits: u64, writes: u64) {
        self.stats.commits.fetch_add(commits, Ordering::Relaxed);
        self.stats.writes.fetch_add(writes, Ordering::Relaxed);
    }
}

fn transaction_depth(
    conn: &mut AnyConnection,
) -> Result<Option<std::num::NonZeroU32>, diesel::result::Error> {
    AnyConnection::transaction_manager_status_mut(conn).transaction_depth()
}

/// Why a savepoint or transaction of one body was rolled back.
enum Rollback {
    /// The body returned an error (kept in its task).
    Body,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Rollback {
    fn from(e: diesel::result::Error) -> Self {
        Rollback::Db(e)
    }
}
