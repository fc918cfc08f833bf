//! The database: one connection type over SQLite and PostgreSQL, the r2d2 pool, embedded
//! migrations, and the one helper through which async code runs diesel off the executor.
//!
//! `AnyConnection` is diesel's `MultiConnection`; the backend is chosen by the scheme of
//! `DATABASE_URL`. What the multi-connection cannot express (SQLite's `BEGIN IMMEDIATE`,
//! PostgreSQL's advisory lock) is matched on the variant here and nowhere else.
//!
//! Lookups of one row by a key use `get_result`, never `first`: `first` binds `LIMIT ?`, and
//! the bundled SQLite is built with STAT4, under which rebinding a parameter the planner looked
//! at (the limit) expires the statement. Every `first` was therefore parsed and planned again
//! on each call: 7% of the app's CPU in the checkout load (docs/BENCHMARKS.md).
//!
//! Every `Insertable` row is derived with `treat_none_as_default_value = false` (a `None` is
//! written as NULL; none of those columns has another default). Otherwise diesel treats each
//! field as "maybe DEFAULT", the insert has no fixed SQL, and its text is rendered and hashed
//! on every call to find the cached statement. The hot `UPDATE`s are fixed SQL (`fixed`).

pub mod admin;
pub mod admin_sessions;
pub mod app_keys;
pub mod claims;
pub mod compensations;
mod fixed;
pub mod gateway_calls;
mod group;
pub mod orders;
pub mod products;
pub mod schema;
pub mod webhook_deliveries;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::text::one_line;
pub use group::GroupStats;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// A pooled connection and when it last came back to the pool. Dereferences to
/// [`AnyConnection`], so a pooled one is used like any other.
pub struct PoolConn {
    conn: AnyConnection,
    returned: Option<Instant>,
}

impl std::ops::Deref for PoolConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PoolConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// A PostgreSQL connection back in the pool less than this long ago is handed out without the
/// `SELECT 1` test: under load that test was one round trip in every four of a one-row insert.
/// HikariCP skips its alive-check the same way (`aliveBypassWindowMs`, 500 ms). A connection
/// idle for longer, or new, is tested, and replaced if dead. One that dies within the window
/// fails its next use, and is not reused: libpq then reports the connection's transaction
/// state unknown, diesel marks its transaction manager broken, and [`Manager::has_broken`]
/// drops it (`migrations::a_dead_postgres_connection_is_found_and_replaced`).
const VALIDATION_BYPASS: Duration = Duration::from_millis(500);

pub type Pool = r2d2::Pool<Manager>;

/// A connection out of the pool, for synchronous callers ([`Db::get`]); back in the pool when
/// dropped.
pub struct PooledConnection(r2d2::PooledConnection<Manager>);

impl std::ops::Deref for PooledConnection {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0.conn
    }
}

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("no database connection available: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("not found")]
    NotFound,
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database task did not finish (panicked or cancelled)")]
    Cancelled,
}

impl DbError {
    /// A unique-index violation (a duplicate `shop_order_no`, `shop_transaction_id`, dedupe key…).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }

    /// A unique violation of one index: PostgreSQL names it (`index`), SQLite names its
    /// columns (`UNIQUE constraint failed: table.column, …`, `columns` being what follows the
    /// colon).
    pub fn is_unique_violation_of(&self, index: &str, columns: &str) -> bool {
        match self {
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            )) => {
                info.constraint_name() == Some(index)
                    || info.message().strip_prefix("UNIQUE constraint failed: ") == Some(columns)
            }
            _ => false,
        }
    }
}

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A parsed `DATABASE_URL`: `sqlite://PATH` (relative to the working directory, or
/// `sqlite:///absolute/path`) or `postgres://…` / `postgresql://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("the SQLite path is empty (expected sqlite://PATH)".into());
            }
            if path.starts_with(":memory:") || path.contains("mode=memory") {
                return Err(
                    "an in-memory SQLite database is not supported: each pooled connection \
                     would see its own empty database (use a file path)"
                        .into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("the PostgreSQL URL has no host".into());
            }
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        Err(format!(
            "unsupported scheme `{scheme}` (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)"
        ))
    }

    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Shown with any password masked, so the URL can be logged.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) if u.password().is_some() => {
                    let _ = u.set_password(Some("***"));
                    f.write_str(u.as_str())
                }
                _ => f.write_str(url),
            },
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The r2d2 manager: opens the backend the URL names and reports that backend's own error
/// (diesel's multi-connection `establish` tries each backend in turn and hides why the right one
/// failed), and sets SQLite's per-connection pragmas.
#[derive(Debug)]
pub struct Manager {
    url: DatabaseUrl,
}

/// SQLite settings for every pooled connection: wait for the write lock instead of failing at
/// once, WAL's safe-and-fast sync level, and enforced foreign keys.
const SQLITE_CONNECTION_PRAGMAS: &str = "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// How long a SQLite writer waits for the write lock: SQLite's `busy_timeout` for other
/// processes, and the writer lane's wait in this one (`write_transaction`).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

impl Manager {
    fn open(url: &DatabaseUrl) -> Result<AnyConnection, DbError> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                let path = path
                    .to_str()
                    .ok_or_else(|| DbError::Connect("the SQLite path is not valid UTF-8".into()))?;
                let mut conn = SqliteConnection::establish(path)
                    .map_err(|e| DbError::Connect(format!("{path}: {}", one_line(e))))?;
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; {SQLITE_CONNECTION_PRAGMAS}",
                    SQLITE_BUSY_TIMEOUT.as_millis()
                ))?;
                Ok(AnyConnection::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => PgConnection::establish(url)
                .map(AnyConnection::Postgresql)
                .map_err(|e| DbError::Connect(one_line(e))),
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PoolConn;
    type Error = DbError;

    fn connect(&self) -> Result<PoolConn, DbError> {
        Ok(PoolConn {
            conn: Self::open(&self.url)?,
            returned: None,
        })
    }

    /// Called at check-out (PostgreSQL only): `SELECT 1`, unless the connection came back
    /// within [`VALIDATION_BYPASS`].
    fn is_valid(&self, conn: &mut PoolConn) -> Result<(), DbError> {
        if conn
            .returned
            .is_some_and(|t| t.elapsed() < VALIDATION_BYPASS)
        {
            return Ok(());
        }
        conn.conn.batch_execute("SELECT 1").map_err(DbError::from)
    }

    /// A connection returned while still inside a transaction (a panic mid-transaction) or with
    /// a broken transaction manager (also a dead PostgreSQL connection) is not reused.
    fn has_broken(&self, conn: &mut PoolConn) -> bool {
        conn.returned = Some(Instant::now());
        let status = AnyConnection::transaction_manager_status_mut(&mut conn.conn);
        !matches!(status.transaction_depth(), Ok(None))
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: u32,
    /// How long a request waits for a free connection before failing.
    pub connection_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 8,
            connection_timeout: Duration::from_secs(3),
        }
    }
}

/// The database handle shared by the app: the pool and the backend it talks to.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    backend: Backend,
    /// One permit per pooled connection, taken by [`Db::run`] before it hands work to the
    /// blocking pool. Callers beyond the pool's size wait here as suspended tasks, in arrival
    /// order, instead of as blocked threads in r2d2's queue: under a burst of webhooks the
    /// runtime would otherwise start a blocking thread per waiting request (up to 512 per
    /// worker), each with its stack and malloc arena (docs/BENCHMARKS.md: RSS).
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    /// SQLite's group-commit writer ([`Db::write`]); `None` on PostgreSQL.
    writer: Option<group::GroupWriter>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the database (creating the SQLite file and its folder when missing, switching it
    /// to WAL) and builds the pool. Does not run migrations: see [`Db::migrate`].
    pub fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, DbError> {
        if let DatabaseUrl::Sqlite(path) = url {
            prepare_sqlite_file(path)?;
        }
        // One connection first: on PostgreSQL it reports an unreachable server with the
        // server's own words, before r2d2 would wrap it in a timeout.
        let first = Manager::open(url)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.max_size)
            .min_idle(Some(options.max_size.min(2)))
            .connection_timeout(options.connection_timeout)
            // A PostgreSQL connection can die under us (server restart, failover); r2d2 checks
            // it when handed out and replaces a dead one (`Manager::is_valid`: `SELECT 1`
            // unless it came back to the pool moments ago). A SQLite file cannot, so SQLite
            // skips the check.
            .test_on_check_out(url.backend() == Backend::Postgres)
            .error_handler(Box::new(r2d2::LoggingErrorHandler))
            .build(Manager { url: url.clone() })?;
        let writer = match url {
            DatabaseUrl::Sqlite(_) => Some(group::GroupWriter::start(url)?),
            DatabaseUrl::Postgres(_) => None,
        };
        Ok(Self {
            pool,
            backend: url.backend(),
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_size as usize)),
            writer,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for synchronous callers (CLI commands, tests, the worker's blocking side).
    pub fn get(&self) -> Result<PooledConnection, DbError> {
        Ok(PooledConnection(self.pool.get()?))
    }

    /// Pool state for `/metrics`: (open connections, idle connections, max size).
    pub fn pool_state(&self) -> (u32, u32, u32) {
        let state = self.pool.state();
        (
            state.connections,
            state.idle_connections,
            self.pool.max_size(),
        )
    }

    /// Runs pending migrations; returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<String>, DbError> {
        let mut conn = self.get()?;
        run_migrations(&mut conn)
    }

    /// Runs `f` with a pooled connection on tokio's blocking pool, so diesel never blocks the
    /// async executor. The one way async code touches the database.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.gate.clone().acquire_owned().await.ok();
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| {
            // A panic in a repository function is a bug; it becomes a 500, not a dead worker.
            if e.is_panic() {
                log::error!("database task panicked: {e}");
            }
            DbError::Cancelled
        })?
    }

    /// Runs `body` in a write transaction ([`write_transaction`]) and returns its outcome once
    /// committed. On SQLite the transactions waiting at the same moment are committed together
    /// (group commit, `db/group.rs`): `body` then runs in a savepoint of the shared transaction,
    /// and runs again alone, in a transaction of its own, if that one cannot commit. So `body`
    /// is a transaction's body only: it may run more than once and must not act outside the
    /// database. On PostgreSQL, whose connections write concurrently, it is
    /// [`Db::run`] with [`write_transaction`].
    pub async fn write<T, F>(&self, mut body: F) -> Result<T, DbError>
    where
        F: FnMut(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.write(body).await,
            None => {
                self.run(move |conn| write_transaction(conn, &mut body))
                    .await
            }
        }
    }

    /// The SQLite writer's counters (`None` on PostgreSQL).
    pub fn group_stats(&self) -> Option<&GroupStats> {
        self.writer.as_ref().map(group::GroupWriter::stats)
    }

    /// `SELECT 1` through the pool: the readiness check.
    /// Waits at most one second for a connection: a health check must answer quickly, also
    /// (with 503) when the database is gone.
    pub async fn ping(&self) -> Result<(), DbError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get_timeout(Duration::from_secs(1))?;
            conn.batch_execute("SELECT 1").map_err(DbError::from)
        })
        .await
        .map_err(|_| DbError::Cancelled)?
    }
}

/// Creates the folder of the SQLite file and puts the database in WAL mode, once, on a single
/// connection before the pool opens (setting it from the pool races while connections open).
/// WAL is persistent in the file; `journal_size_limit` keeps a checkpointed WAL from staying
/// large after bursts.
fn prepare_sqlite_file(path: &Path) -> Result<(), DbError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            DbError::Connect(format!(
                "cannot create the folder {}: {e}",
                parent.display()
            ))
        })?;
    }
    let mut conn = Manager::open(&DatabaseUrl::Sqlite(path.to_owned()))?;
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA journal_size_limit = 67108864;")
        .map_err(|e| DbError::Connect(format!("{}: {}", path.display(), one_line(e))))?;
    Ok(())
}

/// Applies the embedded migrations of the connection's backend. On PostgreSQL an advisory lock
/// serialises instances that start at the same moment against one database.
pub fn run_migrations(conn: &mut AnyConnection) -> Result<Vec<String>, DbError> {
    const MIGRATION_LOCK: i64 = 0x006b_6963_636d_6967; // "kiccmig"
    let applied = match conn {
        AnyConnection::Sqlite(c) => c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|v| v.iter().map(ToString::to_string).collect()),
        AnyConnection::Postgresql(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.iter().map(ToString::to_string).collect());
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
            result
        }
    };
    applied.map_err(|e| DbError::Migration(one_line(e)))
}

/// Runs a diesel query on the backend's own connection instead of through `AnyConnection`:
/// `on_backend!(conn, c => query.get_result(c))`. The body is compiled once per backend.
///
/// The multi-connection renders a query's whole SQL text again on every pass over it (the
/// statement-cache check, the binds, the text), even when its prepared statement is cached;
/// for a 25-column order row that is 50 escaped identifiers, three times, per call. On the hot
/// paths (placing an order, a webhook, a gateway call's record) queries go to the concrete
/// connection, where a cached statement costs only its binds (docs/BENCHMARKS.md).
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::AnyConnection::Sqlite($c) => $body,
            $crate::db::AnyConnection::Postgresql($c) => $body,
        }
    };
}
pub(crate) use on_backend;

/// SQLite takes one writer at a time. This process's writers queue here before `BEGIN
/// IMMEDIATE`, and each is woken the moment the one before it finishes; waiting inside SQLite's
/// busy handler instead sleeps in steps of 1, 2, 5 … 100 ms and polls, which under a burst of
/// webhooks left the CPU idle while writers slept (docs/BENCHMARKS.md). Other processes on the
/// same file (a second instance, the CLI) still meet SQLite's own lock and its busy timeout.
/// One lane for the whole process: two SQLite files in one process (tests, `/review` beside
/// the shop) share it, which costs them only some concurrency.
static SQLITE_WRITER: Mutex<()> = Mutex::new(());

/// Runs `f` in a write transaction. On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken
/// up front, so concurrent read-then-write transactions wait (busy_timeout) instead of failing
/// with "database is locked" when they upgrade. On PostgreSQL it is a plain transaction; the
/// statements inside are compare-and-set updates. Called inside another write transaction it
/// becomes a savepoint, so repository functions compose (a transition and a compensation row
/// in one commit).
pub fn write_transaction<T, E, F>(conn: &mut AnyConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    // Inside an outer transaction this is a savepoint of it (the outer one holds the lock).
    let nested = !matches!(
        AnyConnection::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(None)
    );
    let AnyConnection::Sqlite(sqlite) = conn else {
        return conn.transaction(f);
    };
    if nested {
        return conn.transaction(f);
    }
    // Held until this function returns, i.e. past the commit or rollback. If the lane is not
    // free within the busy timeout (a writer stuck, or a caller nesting writes on two
    // connections), go on without it: SQLite's own lock still decides, as before the lane.
    let _lane = SQLITE_WRITER.try_lock_for(SQLITE_BUSY_TIMEOUT);
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    match f(conn) {
        Ok(value) => {
            AnyConnection::commit_transaction(conn)?;
            Ok(value)
        }
        Err(error) => {
            // The caller's error is the one worth reporting; a failed rollback marks the
            // connection broken and the pool discards it (`Manager::has_broken`).
            let _ = AnyConnection::rollback_transaction(conn);
            Err(error)
        }
    }
}

/// The current time as stored: naive UTC truncated to microseconds (PostgreSQL keeps µs;
/// truncating here makes both backends return what was written).
pub fn now() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}
