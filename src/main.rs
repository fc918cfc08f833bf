//! The `kicc-checkout` command: parse the CLI, read the configuration, start what was asked.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kicc_checkout::config::{Config, ConfigError};
use kicc_checkout::db::{DatabaseUrl, PoolOptions};
use kicc_checkout::sandbox::{SandboxConfig, SandboxServer};
use kicc_checkout::startup::{Application, StartupError, open_database};

#[derive(Parser)]
#[command(
    name = "kicc-checkout",
    version,
    about = "Merchant checkout for the KICC (EasyPay) gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run migrations, then serve the shop, webhooks and dashboard (the default).
    Serve,
    /// Run pending migrations and exit.
    Migrate,
    /// The reconciler alone: settle expired orders, unanswered approvals and due cancels.
    Reconcile {
        /// One pass, then exit (prints what it did).
        #[arg(long)]
        once: bool,
    },
    /// Serve the sandbox gateway alone, KICC's paths at the root (point an app at it with
    /// KICC_API_BASE=http://ADDR). Reads KICC_MALL_ID, KICC_SECRET_KEY, KICCPAY_*,
    /// SANDBOX_WEBHOOK_BACKOFF_MS and SANDBOX_AUTO_APPROVE_MS.
    /// The KICC integration review: every critical rule of KICC's spec run end to end on a
    /// throwaway app (a temporary SQLite file unless DATABASE_URL is set) against a sandbox
    /// gateway. Prints one block per scenario; exits 1 if any fails.
    Review {
        /// Also write the report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
        /// Also write the report as one self-contained HTML file (with the evidence) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
        /// A sandbox already running (`kicc-checkout sandbox`), e.g. http://127.0.0.1:8081;
        /// default: the review starts its own on loopback.
        #[arg(long, value_name = "URL")]
        gateway: Option<String>,
    },
    Sandbox {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        bind: SocketAddr,
        /// Where browsers and phones reach it (the base of payment page URLs);
        /// default http://ADDR.
        #[arg(long, value_name = "URL")]
        public_base_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // The review prints its own report; its apps' logs (full of the failures it provokes on
    // purpose) only with RUST_LOG.
    let default_level = if matches!(command, Command::Review { .. }) {
        "off"
    } else {
        "info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    let result = match command {
        Command::Review {
            json,
            html,
            gateway,
        } => review(json, html, gateway),
        Command::Serve => serve().map(|()| true),
        Command::Migrate => migrate().map(|()| true),
        Command::Reconcile { once } => reconcile(once).map(|()| true),
        Command::Sandbox {
            bind,
            public_base_url,
        } => sandbox(bind, public_base_url).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            // One line, naming the variable at fault.
            let line = error
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("kicc-checkout: {line}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), StartupError> {
    let config = Config::from_env()?;
    actix_web::rt::System::new().block_on(async move {
        let admin_user = config.admin_user.clone();
        let generated_password = config.generated_admin_password().map(str::to_owned);
        let sandbox = config.is_sandbox();
        let app = Application::build(config).await?;
        let base = app.base_url().to_owned();
        println!(
            "kicc-checkout listening on http://{} (public base {base})",
            app.local_addr()
        );
        if sandbox {
            println!("Gateway: built-in sandbox (no KICC credentials set; no money moves)");
        }
        if let Some(password) = generated_password {
            // Printed once, to the terminal; never logged.
            println!("Dashboard: {base}/admin  user: {admin_user}  password: {password}");
        }
        app.run_until_stopped().await.map_err(StartupError::Server)
    })
}

fn sandbox(bind: SocketAddr, public_base_url: Option<String>) -> Result<(), StartupError> {
    let config = SandboxConfig::from_env()?;
    if let Some(url) = &public_base_url {
        let parsed = url::Url::parse(url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.query().is_none()
        });
        if parsed.is_none() {
            return Err(ConfigError::new(
                "--public-base-url",
                format!("`{url}` must be an http:// or https:// URL"),
            )
            .into());
        }
    }
    actix_web::rt::System::new().block_on(async move {
        let server = SandboxServer::build(config, bind, public_base_url)?;
        println!(
            "kicc-checkout sandbox listening on http://{} (public base {})",
            server.local_addr(),
            server.base_url()
        );
        println!("Console: {}/", server.base_url());
        server
            .run_until_stopped()
            .await
            .map_err(StartupError::Server)
    })
}

/// Runs the review; `Ok(false)` when a scenario failed (exit 1).
fn review(
    json: Option<std::path::PathBuf>,
    html: Option<std::path::PathBuf>,
    gateway: Option<String>,
) -> Result<bool, StartupError> {
    use std::io::{IsTerminal, Write};

    use kicc_checkout::review::{self, Progress, ReviewOptions, report::scenario_block};

    let database_url = match std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(url) => {
            Some(DatabaseUrl::parse(&url).map_err(|p| ConfigError::new("DATABASE_URL", p))?)
        }
        None => None,
    };
    if let Some(url) = &gateway
        && url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .is_none()
    {
        return Err(
            ConfigError::new("--gateway", format!("`{url}` must be an http:// URL")).into(),
        );
    }
    let options = ReviewOptions {
        gateway,
        database_url,
    };
    let live = std::io::stderr().is_terminal();
    let report = actix_web::rt::System::new().block_on(async move {
        review::run(&options, |event| match event {
            Progress::Started { index, total, info } => {
                if live {
                    eprint!("\r\x1b[2K[{:>2}/{total}] running {} …", index + 1, info.id);
                    let _ = std::io::stderr().flush();
                }
            }
            Progress::Finished {
                index,
                total,
                result,
            } => {
                if live {
                    eprint!("\r\x1b[2K");
                }
                print!("{}", scenario_block(index, total, result));
                let _ = std::io::stdout().flush();
            }
        })
        .await
    });
    let report = report.map_err(|e| StartupError::Server(std::io::Error::other(e.to_string())))?;
    println!();
    print!("{}", report.summary_table());
    for (path, body) in [(&json, report.to_json()), (&html, report.to_html())] {
        if let Some(path) = path {
            std::fs::write(path, body).map_err(|e| {
                StartupError::Server(std::io::Error::other(format!(
                    "cannot write {}: {e}",
                    path.display()
                )))
            })?;
            println!("report written to {}", path.display());
        }
    }
    Ok(report.all_passed())
}

fn migrate() -> Result<(), StartupError> {
    // Only the database matters here; like `serve`, an empty value counts as unset.
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "sqlite://data/kicc-checkout.db".into());
    let url = DatabaseUrl::parse(&url).map_err(|p| ConfigError::new("DATABASE_URL", p))?;
    actix_web::rt::System::new().block_on(async move {
        let (_db, applied) = open_database(
            &url,
            PoolOptions {
                max_size: 1,
                ..Default::default()
            },
        )
        .await?;
        if applied.is_empty() {
            println!("{url}: up to date");
        } else {
            println!("{url}: applied {}", applied.join(", "));
        }
        Ok(())
    })
}

fn reconcile(once: bool) -> Result<(), StartupError> {
    use std::sync::Arc;

    use kicc_checkout::checkout::reconciler::Reconciler;
    use kicc_checkout::startup::{default_base_url, payment_services};

    let config = Config::from_env()?;
    actix_web::rt::System::new().block_on(async move {
        let (db, _) = open_database(&config.database_url, PoolOptions::default()).await?;
        // The same public base as the serving instance: in sandbox mode the API is its /sandbox.
        let base = config.public_base_url.clone().unwrap_or_else(|| default_base_url(config.bind_addr));
        let checkout = payment_services(&config, &db, &base)?;
        let reconciler = Arc::new(Reconciler::new(checkout, config.gateway_timeout));
        if once {
            let report = reconciler.pass().await.map_err(StartupError::Database)?;
            println!(
                "reconciled: {} claimed, {} cancel attempts, {} approvals resolved, {} orders settled",
                report.claimed, report.compensation_attempts, report.approvals_resolved, report.orders_settled
            );
            return Ok(());
        }
        let _ = reconciler.spawn(config.reconcile_interval).await;
        Ok(())
    })
}
