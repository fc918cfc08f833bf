//! The sandbox served alone (`kicc-checkout sandbox --bind ADDR`): KICC's paths at the root,
//! like a KICC domain, so `KICC_API_BASE=http://ADDR` points an app at it.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};

use super::{SandboxConfig, SandboxState, configure};
use crate::startup::{StartupError, default_base_url};

/// A built, bound, not yet running standalone sandbox.
pub struct SandboxServer {
    server: Server,
    addr: SocketAddr,
    state: web::Data<SandboxState>,
}

impl SandboxServer {
    /// Binds `bind` (port 0 for any) and assembles the server. `public_base` is where phones and
    /// browsers reach it (payment page URLs); `None`: `http://{bound address}`.
    pub fn build(
        config: SandboxConfig,
        bind: SocketAddr,
        public_base: Option<String>,
    ) -> Result<Self, StartupError> {
        let listener =
            TcpListener::bind(bind).map_err(|source| StartupError::Bind { addr: bind, source })?;
        let addr = listener.local_addr().map_err(StartupError::Server)?;
        let public_base = public_base.unwrap_or_else(|| default_base_url(addr));
        log::debug!("sandbox configuration: {config:?}");
        let state = web::Data::new(SandboxState::new(config, public_base));
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(
                    Logger::new("%{request}xi %s %Dms peer=%a")
                        .custom_request_replace("request", |req| {
                            format!("{} {}", req.method(), req.path())
                        }),
                )
                .configure(configure)
        })
        .workers(2)
        .listen(listener)
        .map_err(StartupError::Server)?
        .run();
        Ok(Self {
            server,
            addr,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the sandbox is reached: the base of its payment page URLs.
    pub fn base_url(&self) -> &str {
        self.state.public_base()
    }

    pub fn state(&self) -> &web::Data<SandboxState> {
        &self.state
    }

    /// Stops the server without a signal (the review runner's own sandbox).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
