//! Building the app: open and migrate the database, bind the listener, assemble the server.
//! `Application::build` binds before it returns, so tests can use port 0 and ask `.port()`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{Logger, from_fn};
use actix_web::{App, HttpServer, web};

use crate::checkout::reconciler::Reconciler;
use crate::checkout::{Checkout, RetryPolicy};
use crate::config::{Config, ConfigError, GatewayMode, KiccPayWindow};
use crate::db::{DatabaseUrl, Db, DbError, PoolOptions};
use crate::kicc::{ClientSettings, KiccClient};
use crate::sandbox::{SandboxConfig, SandboxState};
use crate::web::{AppState, Metrics};

/// Why the program could not start: one line, naming the variable at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("DATABASE_URL: {0}")]
    Database(DbError),
    #[error("BIND_ADDR: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Server(std::io::Error),
}

/// Opens the database named by the URL and applies pending migrations, off the async executor.
/// Returns the handle and the migrations applied now.
pub async fn open_database(
    url: &DatabaseUrl,
    options: PoolOptions,
) -> Result<(Db, Vec<String>), StartupError> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || {
        let db = Db::connect(&url, &options)?;
        let applied = db.migrate()?;
        Ok((db, applied))
    })
    .await
    .map_err(|_| StartupError::Database(DbError::Cancelled))?
    .map_err(StartupError::Database)
}

/// The cookie signing key: 64 random bytes made at first start and kept in the database, so
/// carts survive restarts and every instance on one database accepts the others' cookies.
async fn load_cookie_key(db: &Db) -> Result<actix_web::cookie::Key, StartupError> {
    let hex_key = db
        .run(|conn| {
            crate::db::app_keys::get_or_create(conn, "cookie", || {
                let random: Vec<u8> = (0..4)
                    .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
                    .collect();
                hex::encode(random)
            })
        })
        .await
        .map_err(StartupError::Database)?;
    let bytes = hex::decode(&hex_key)
        .ok()
        .filter(|b| b.len() >= 64)
        .ok_or_else(|| {
            StartupError::Database(DbError::Corrupt(
                "app_keys.cookie is not 64 hex bytes".into(),
            ))
        })?;
    Ok(actix_web::cookie::Key::from(&bytes))
}

/// A built, bound, not yet running app.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    state: web::Data<AppState>,
    sandbox: Option<web::Data<SandboxState>>,
    reconciler: Arc<Reconciler>,
    worker: tokio::task::JoinHandle<()>,
    /// Deletes refused webhook deliveries past their retention ([`spawn_refused_purge`]).
    purge: tokio::task::JoinHandle<()>,
}

/// How often refused webhook deliveries past `WEBHOOK_REFUSED_RETENTION_DAYS` are deleted.
pub const REFUSED_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Rows deleted per write transaction by the purge (each commit holds the write lock briefly).
const PURGE_BATCH: i64 = 1000;

/// Deletes the refused and rejected webhook deliveries received more than `retention` ago
/// (`db::webhook_deliveries::purge_refused`), a batch per write transaction, and returns how
/// many. Every instance on a database may run it: a row deleted twice is deleted once.
pub async fn purge_refused_deliveries(
    db: &Db,
    retention: std::time::Duration,
) -> Result<usize, DbError> {
    let retention = chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
    let before = crate::db::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::NaiveDateTime::MIN);
    let mut deleted = 0;
    loop {
        let batch = db
            .write(move |conn| {
                crate::db::webhook_deliveries::purge_refused(conn, before, PURGE_BATCH)
            })
            .await?;
        deleted += batch;
        if batch < usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX) {
            return Ok(deleted);
        }
    }
}

/// Runs [`purge_refused_deliveries`] at start and then every [`REFUSED_PURGE_INTERVAL`].
fn spawn_refused_purge(db: Db, retention: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(REFUSED_PURGE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match purge_refused_deliveries(&db, retention).await {
                Ok(0) => {}
                Ok(n) => log::info!("deleted {n} refused webhook deliveries past their retention"),
                Err(e) => log::warn!("refused webhook deliveries not purged: {e}"),
            }
        }
    })
}

/// The checkout service (with its KICC client) over an open database. `base_url` is the app's
/// public base: returnUrl and notifyUrl are built on it, and in sandbox mode the API is
/// `{base_url}/sandbox` (reached over HTTP like KICC).
pub fn payment_services(
    config: &Config,
    db: &Db,
    base_url: &str,
) -> Result<Arc<Checkout>, StartupError> {
    let api_base = match &config.gateway {
        GatewayMode::Live { api_base } => api_base.clone(),
        GatewayMode::Sandbox => format!("{base_url}/sandbox"),
    };
    let kicc = KiccClient::new(ClientSettings::from_config(config, &api_base), db.clone())
        .map_err(|e| StartupError::Server(std::io::Error::other(e.to_string())))?;
    let kicc = Arc::new(kicc);
    let checkout = Arc::new(
        Checkout::new(
            db.clone(),
            kicc.clone(),
            base_url.to_owned(),
            config.order_expiry,
            match &config.kiccpay.window {
                KiccPayWindow::Url(url) => Some(url.clone()),
                KiccPayWindow::Sandbox => Some(format!("{base_url}/sandbox/kiccpay/window")),
                KiccPayWindow::NotOffered => None,
            },
            RetryPolicy {
                backoff: config.compensation_backoff,
                max_attempts: i32::try_from(config.compensation_max_attempts).unwrap_or(8),
            },
        )
        .with_late_payments(config.late_payments),
    );
    Ok(checkout)
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        // Bind first: an address that is taken stops the start before the database is touched.
        let listener =
            TcpListener::bind(config.bind_addr).map_err(|source| StartupError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        let (db, applied) = open_database(&config.database_url, PoolOptions::default()).await?;
        for version in &applied {
            log::info!("applied migration {version}");
        }
        let addr = listener.local_addr().map_err(StartupError::Server)?;
        let base_url = config
            .public_base_url
            .clone()
            .unwrap_or_else(|| default_base_url(addr));
        log::info!(
            "database: {} ({})",
            config.database_url,
            db.backend().as_str()
        );
        // Secrets as `***`: see `Config::summary`.
        log::info!("configuration: {}", config.summary(&base_url));

        let cookie_key = load_cookie_key(&db).await?;
        // Before anything is spawned: a database that fails here stops the start cleanly.
        let admin = crate::web::admin_auth::AdminAuth::load(
            &db,
            &config.admin_user,
            secrecy::ExposeSecret::expose_secret(&config.admin_password),
            config.admin_session_idle,
        )
        .await
        .map_err(StartupError::Database)?;
        // Sandbox mode: the sandbox gateway is mounted at /sandbox and reached, like KICC, over
        // HTTP at {base}/sandbox. Live mode never mounts it.
        let sandbox = config.is_sandbox().then(|| {
            web::Data::new(SandboxState::new(
                SandboxConfig::from_app_config(&config),
                format!("{base_url}/sandbox"),
            ))
        });
        let checkout = payment_services(&config, &db, &base_url)?;
        checkout.spawn_recorder(std::time::Duration::from_secs(2));
        let reconciler = Arc::new(Reconciler::new(checkout.clone(), config.gateway_timeout));
        let worker = reconciler.spawn(config.reconcile_interval);
        let checkout_limit = crate::web::rate_limit::RateLimiter::new(
            config.checkout_rate_limit,
            std::time::Duration::from_secs(60),
        );
        let metrics = Arc::new(Metrics::new(db.group_stats()));
        let purge = spawn_refused_purge(db.clone(), config.webhook_refused_retention);
        let state = web::Data::new(AppState {
            admin,
            checkout_limit,
            reconciler: reconciler.clone(),
            checkout,
            cookie_key,
            review: Default::default(),
            catalog_page: crate::web::shop::PageCache::new(std::time::Duration::from_secs(2)),
            qr: Default::default(),
            refused_webhooks: Default::default(),
            db,
            config: Arc::new(config),
            metrics,
            base_url,
        });
        let app_state = state.clone();
        let app_sandbox = sandbox.clone();
        let security_headers =
            crate::web::security::SecurityHeaders::new(&state.config, &state.base_url);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                // Innermost: a body slower than REQUEST_BODY_TIMEOUT_SECS becomes a 408 that
                // the middlewares outside still see; private pages are never cached.
                .wrap(from_fn(crate::web::slow_body::deadline))
                .wrap(from_fn(crate::web::security::no_store))
                .wrap(from_fn(crate::web::csrf::issue_cookie))
                .wrap(from_fn(crate::web::metrics::track))
                // Method, path (never the query string: a returnUrl GET carries authorizationId),
                // status, time, peer.
                .wrap(
                    Logger::new("%{request}xi %s %Dms peer=%a")
                        .custom_request_replace("request", |req| {
                            format!("{} {}", req.method(), req.path())
                        }),
                )
                // Outermost: every response, the 404 page and extractor errors too.
                .wrap(security_headers.middleware())
                .configure(crate::web::error::body_limits)
                .configure(crate::web::routes)
                .configure(|cfg| {
                    if let Some(sandbox) = &app_sandbox {
                        crate::sandbox::mount(cfg, sandbox.clone());
                    }
                })
                .default_service(web::to(crate::web::not_found))
        })
        .listen(listener)
        .map_err(StartupError::Server)?
        .run();
        Ok(Self {
            server,
            addr,
            state,
            sandbox,
            reconciler,
            worker,
            purge,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `PUBLIC_BASE_URL`, or `http://{bound address}`.
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }

    /// The mounted sandbox gateway (sandbox mode only).
    pub fn sandbox(&self) -> Option<&web::Data<SandboxState>> {
        self.sandbox.as_ref()
    }

    /// Serves until SIGINT/SIGTERM (actix-web stops accepting, then drains in-flight requests).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        // SIGTERM/SIGINT: the server has drained its requests; the reconciler takes no new work
        // and finishes the item in hand (bounded).
        self.reconciler.stop();
        self.purge.abort();
        if tokio::time::timeout(std::time::Duration::from_secs(30), self.worker)
            .await
            .is_err()
        {
            log::warn!("reconciler did not finish within 30 s of shutdown");
        }
        served
    }

    /// Stops the server (and, through `run_until_stopped`, the reconciler) without a signal:
    /// for apps started inside another process, like the review's.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// The reconciler (tests run passes on demand).
    pub fn reconciler(&self) -> &Arc<Reconciler> {
        &self.reconciler
    }
}

/// `http://{addr}`, with an unspecified address (0.0.0.0, ::) replaced by loopback so the URL
/// can be called back.
pub fn default_base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}
