//! Configuration (DESIGN §2): read once at start from the environment into typed values.
//! A missing or bad value is a `ConfigError` naming the variable and what is wrong, one line.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::db::DatabaseUrl;
use crate::domain::LatePayments;

/// `KICC_MALL_ID` in sandbox mode: the example merchant of KICC's test environment (spec 02/06).
pub const SANDBOX_MALL_ID: &str = "T5102001";
/// `KICC_SECRET_KEY` in sandbox mode. Only the sandbox knows it; live mode must be given a key.
pub const SANDBOX_SECRET_KEY: &str = "sandbox-msgauth-key-T5102001";
pub const SANDBOX_KICCPAY_TID: &str = "T510200101";
pub const SANDBOX_KICCPAY_SVC_ID: &str = "KICCPAYSBX";
pub const SANDBOX_KICCPAY_BIZR_NO: &str = "1208147521";
pub const SANDBOX_KICCPAY_CHANNEL_ID: &str = "SANDBOX-CH-01";
pub const SANDBOX_KICCPAY_SECRET_KEY: &str = "sandbox-kiccpay-hmac-key";
pub const SANDBOX_KICCPAY_AES_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const SANDBOX_KICCPAY_AES_IV: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
/// KICC's webhook source IPs (spec 04/05): production, development.
pub const KICC_WEBHOOK_IPS: &str = "203.233.72.66,61.33.205.151";

/// A variable that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

/// Where the KICC API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayMode {
    /// No `KICC_API_BASE`: the app mounts the sandbox gateway at `/sandbox` and calls it over
    /// real HTTP at `{PUBLIC_BASE_URL}/sandbox`.
    Sandbox,
    /// `KICC_API_BASE` is set (e.g. `https://testpgapi.easypay.co.kr`); the sandbox is never mounted.
    Live { api_base: String },
}

/// KICC Pay simple payment settings (spec 03).
pub struct KiccPayConfig {
    /// `None`: the same base as the WeChat Pay API.
    pub api_base: Option<String>,
    pub tid: String,
    pub svc_id: String,
    pub bizr_no: String,
    pub channel_id: String,
    pub secret_key: SecretString,
    pub aes_key: SecretBox<[u8; 32]>,
    pub aes_iv: SecretBox<[u8; 16]>,
    pub window: KiccPayWindow,
}

impl fmt::Debug for KiccPayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KiccPayConfig")
            .field("api_base", &self.api_base)
            .field("tid", &self.tid)
            .field("svc_id", &self.svc_id)
            .field("bizr_no", &self.bizr_no)
            .field("channel_id", &self.channel_id)
            .field("secret_key", &"[REDACTED]")
            .field("aes_key", &"[REDACTED]")
            .field("aes_iv", &"[REDACTED]")
            .field("window", &self.window)
            .finish()
    }
}

/// Where the shopper authenticates for KICC Pay (`KICCPAY_WINDOW_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KiccPayWindow {
    /// The sandbox's own window (sandbox mode without `KICCPAY_WINDOW_URL`).
    Sandbox,
    Url(String),
    /// Live mode without `KICCPAY_WINDOW_URL`: KICC Pay is not offered.
    NotOffered,
}

/// The sandbox gateway's own settings (DESIGN §8). Read in both modes; used only where a
/// sandbox runs (mounted in sandbox mode, or `kicc-checkout sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxSettings {
    /// `SANDBOX_WEBHOOK_BACKOFF_MS` (default 2000): the first webhook resend delay; it doubles
    /// per attempt, capped at 10 minutes. `0` resends at once (tests of the retry count).
    pub webhook_backoff: Duration,
    /// `SANDBOX_AUTO_APPROVE_MS` (default 10000; `0` = off): a WeChat trade paid on a sandbox page
    /// and not approved by the merchant within this time is approved by the sandbox itself.
    pub auto_approve: Option<Duration>,
}

/// Longest first resend delay: the cap of the doubling backoff (10 minutes).
pub const SANDBOX_MAX_BACKOFF_MS: u64 = 600_000;

impl SandboxSettings {
    fn from_get(
        get: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let webhook_backoff = milliseconds(
            "SANDBOX_WEBHOOK_BACKOFF_MS",
            get("SANDBOX_WEBHOOK_BACKOFF_MS")?,
            2_000,
            0..=SANDBOX_MAX_BACKOFF_MS,
        )?;
        let auto_approve = milliseconds(
            "SANDBOX_AUTO_APPROVE_MS",
            get("SANDBOX_AUTO_APPROVE_MS")?,
            10_000,
            0..=86_400_000,
        )?;
        Ok(Self {
            webhook_backoff: Duration::from_millis(webhook_backoff),
            auto_approve: (auto_approve > 0).then(|| Duration::from_millis(auto_approve)),
        })
    }
}

/// Everything the app reads from its environment.
#[derive(Debug)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub bind_addr: SocketAddr,
    /// `None`: `http://{the bound address}` (known once the listener is bound).
    pub public_base_url: Option<String>,
    pub gateway: GatewayMode,
    pub mall_id: String,
    pub secret_key: SecretString,
    pub kiccpay: KiccPayConfig,
    pub gateway_timeout: Duration,
    pub webhook_allowed_ips: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub admin_user: String,
    pub admin_password: SecretString,
    /// True when the password was generated at start (sandbox mode): it is printed once.
    pub admin_password_generated: bool,
    pub order_expiry: Duration,
    /// `LATE_PAYMENTS` (default `accept`): what an approval for an expired or failed order does.
    pub late_payments: LatePayments,
    pub reconcile_interval: Duration,
    /// `COMPENSATION_MAX_ATTEMPTS` (default 8): failed cancel attempts before an order is left
    /// for a person (`needs_attention`).
    pub compensation_max_attempts: u32,
    /// `COMPENSATION_BACKOFF_MS` (default 30000): the first retry delay of a failed cancel;
    /// doubles per attempt (capped at one hour), with ±20% jitter.
    pub compensation_backoff: Duration,
    pub sandbox: SandboxSettings,
    /// `PAYMENT_PAGE_ORIGINS`: where `POST /checkout` may send the browser besides the KICC API
    /// and the KICC Pay window (the CSP's `form-action`, see `web::security`).
    pub payment_page_origins: PaymentPageOrigins,
    /// `CHECKOUT_RATE_LIMIT` (default 30): checkouts (`POST /checkout`, `POST /api/orders`) one
    /// client address may start per minute, per instance.
    pub checkout_rate_limit: u32,
    /// `METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer` it.
    pub metrics_token: Option<SecretString>,
    /// `REQUEST_BODY_TIMEOUT_SECS` (default 10): the longest a request body may take to arrive,
    /// counted from its head; slower bodies get 408 (`web::slow_body`).
    pub request_body_timeout: Duration,
    /// `ADMIN_SESSION_IDLE_SECS` (default 1800): a dashboard session unused this long ends.
    pub admin_session_idle: Duration,
    /// `WEBHOOK_REFUSED_RETENTION_DAYS` (default 30): refused and rejected webhook deliveries
    /// older than this are deleted (`db::webhook_deliveries::purge_refused`).
    pub webhook_refused_retention: Duration,
}

/// The origins of KICC's payment pages (the mweb `paymentPageUrl`), which KICC chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentPageOrigins {
    /// Unset: none in sandbox mode (its pages are on this origin); any https page in live mode.
    Default,
    /// Exactly these origins (`https://host[:port]`).
    Listed(Vec<String>),
}

impl PaymentPageOrigins {
    /// CSP sources for `form-action`.
    pub fn sources(&self, sandbox: bool) -> Vec<String> {
        match self {
            PaymentPageOrigins::Listed(origins) => origins.clone(),
            PaymentPageOrigins::Default if sandbox => Vec::new(),
            PaymentPageOrigins::Default => vec!["https:".to_owned()],
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ConfigError::new(var, "is not valid UTF-8"))
            }
        })
    }

    /// Reads variables through `lookup` (tests pass a map). An empty value counts as unset.
    pub fn from_lookup(
        lookup: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let get = |var: &'static str| -> Result<Option<String>, ConfigError> {
            Ok(lookup(var)?
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()))
        };

        let database_url = DatabaseUrl::parse(
            get("DATABASE_URL")?
                .as_deref()
                .unwrap_or("sqlite://data/kicc-checkout.db"),
        )
        .map_err(|p| ConfigError::new("DATABASE_URL", p))?;

        let bind_addr = match get("BIND_ADDR")? {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v.parse().map_err(|_| {
                ConfigError::new(
                    "BIND_ADDR",
                    format!("`{v}` is not an address to listen on (expected IP:PORT, e.g. 127.0.0.1:8080)"),
                )
            })?,
        };

        let public_base_url = get("PUBLIC_BASE_URL")?
            .map(|v| http_url("PUBLIC_BASE_URL", &v))
            .transpose()?;

        let gateway = match get("KICC_API_BASE")? {
            None => GatewayMode::Sandbox,
            Some(v) => GatewayMode::Live {
                api_base: http_url("KICC_API_BASE", &v)?,
            },
        };
        let sandbox = gateway == GatewayMode::Sandbox;
        // In sandbox mode a missing credential takes the sandbox's value; live mode refuses.
        let credential = |var: &'static str, sandbox_value: &str| -> Result<String, ConfigError> {
            match get(var)? {
                Some(v) => Ok(v),
                None if sandbox => Ok(sandbox_value.to_owned()),
                None => Err(ConfigError::new(
                    var,
                    "is required when KICC_API_BASE is set (live mode)",
                )),
            }
        };

        let mall_id = credential("KICC_MALL_ID", SANDBOX_MALL_ID)?;
        ascii_field("KICC_MALL_ID", &mall_id, 8)?;
        let secret_key = SecretString::from(credential("KICC_SECRET_KEY", SANDBOX_SECRET_KEY)?);

        let window = match get("KICCPAY_WINDOW_URL")? {
            Some(v) => KiccPayWindow::Url(http_url("KICCPAY_WINDOW_URL", &v)?),
            None if sandbox => KiccPayWindow::Sandbox,
            None => KiccPayWindow::NotOffered,
        };
        // KICC Pay credentials are required in live mode only when KICC Pay is offered.
        let kiccpay_value =
            |var: &'static str, sandbox_value: &str| -> Result<String, ConfigError> {
                match (get(var)?, &window) {
                    (Some(v), _) => Ok(v),
                    (None, _) if sandbox => Ok(sandbox_value.to_owned()),
                    (None, KiccPayWindow::NotOffered) => Ok(String::new()),
                    (None, _) => Err(ConfigError::new(
                        var,
                        "is required when KICCPAY_WINDOW_URL is set in live mode",
                    )),
                }
            };
        let offered = window != KiccPayWindow::NotOffered;
        let tid = kiccpay_value("KICCPAY_TID", SANDBOX_KICCPAY_TID)?;
        let svc_id = kiccpay_value("KICCPAY_SVC_ID", SANDBOX_KICCPAY_SVC_ID)?;
        let bizr_no = kiccpay_value("KICCPAY_BIZR_NO", SANDBOX_KICCPAY_BIZR_NO)?;
        let channel_id = kiccpay_value("KICCPAY_CHANNEL_ID", SANDBOX_KICCPAY_CHANNEL_ID)?;
        let kiccpay_secret = kiccpay_value("KICCPAY_SECRET_KEY", SANDBOX_KICCPAY_SECRET_KEY)?;
        let aes_key_hex = kiccpay_value("KICCPAY_AES_KEY", SANDBOX_KICCPAY_AES_KEY)?;
        let aes_iv_hex = kiccpay_value("KICCPAY_AES_IV", SANDBOX_KICCPAY_AES_IV)?;
        let (aes_key, aes_iv) = if offered {
            // Field limits of spec 03's reqAprv request.
            ascii_field("KICCPAY_TID", &tid, 10)?;
            ascii_field("KICCPAY_SVC_ID", &svc_id, 10)?;
            if bizr_no.len() != 10 || !bizr_no.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::new(
                    "KICCPAY_BIZR_NO",
                    "must be the 10-digit business registration number",
                ));
            }
            ascii_field("KICCPAY_CHANNEL_ID", &channel_id, 64)?;
            (
                hex_bytes::<32>("KICCPAY_AES_KEY", &aes_key_hex)?,
                hex_bytes::<16>("KICCPAY_AES_IV", &aes_iv_hex)?,
            )
        } else {
            ([0; 32], [0; 16])
        };
        let kiccpay = KiccPayConfig {
            api_base: get("KICCPAY_API_BASE")?
                .map(|v| http_url("KICCPAY_API_BASE", &v))
                .transpose()?,
            tid,
            svc_id,
            bizr_no,
            channel_id,
            secret_key: SecretString::from(kiccpay_secret),
            aes_key: SecretBox::new(Box::new(aes_key)),
            aes_iv: SecretBox::new(Box::new(aes_iv)),
            window,
        };

        let gateway_timeout =
            Duration::from_secs(seconds("KICC_TIMEOUT_SECS", get("KICC_TIMEOUT_SECS")?, 30)?);

        let webhook_allowed_ips = match get("WEBHOOK_ALLOWED_IPS")? {
            Some(v) => ip_list("WEBHOOK_ALLOWED_IPS", &v)?,
            None if sandbox => ip_list(
                "WEBHOOK_ALLOWED_IPS",
                &format!("{KICC_WEBHOOK_IPS},127.0.0.0/8,::1"),
            )?,
            None => ip_list("WEBHOOK_ALLOWED_IPS", KICC_WEBHOOK_IPS)?,
        };
        let trusted_proxies = match get("TRUSTED_PROXIES")? {
            Some(v) => ip_list("TRUSTED_PROXIES", &v)?,
            None => Vec::new(),
        };

        let admin_user = get("ADMIN_USER")?.unwrap_or_else(|| "admin".to_owned());
        let (admin_password, admin_password_generated) = match get("ADMIN_PASSWORD")? {
            Some(p) if p.len() < 8 => {
                return Err(ConfigError::new(
                    "ADMIN_PASSWORD",
                    "must be at least 8 characters",
                ));
            }
            Some(p) if !sandbox => (SecretString::from(live_admin_password(p)?), false),
            Some(p) => (SecretString::from(p), false),
            None if sandbox => (SecretString::from(generate_password()), true),
            None => {
                return Err(ConfigError::new(
                    "ADMIN_PASSWORD",
                    "is required when KICC_API_BASE is set (live mode)",
                ));
            }
        };

        let order_expiry = Duration::from_secs(seconds(
            "ORDER_EXPIRY_SECS",
            get("ORDER_EXPIRY_SECS")?,
            600,
        )?);
        let late_payments = match get("LATE_PAYMENTS")? {
            None => LatePayments::default(),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e: crate::domain::ValidationError| {
                    ConfigError::new("LATE_PAYMENTS", e.message)
                })?,
        };
        let reconcile_interval = Duration::from_secs(seconds(
            "RECONCILE_INTERVAL_SECS",
            get("RECONCILE_INTERVAL_SECS")?,
            5,
        )?);
        let compensation_max_attempts = match get("COMPENSATION_MAX_ATTEMPTS")? {
            None => 8,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "COMPENSATION_MAX_ATTEMPTS",
                        format!("`{v}` is not a number from 1 to 100"),
                    )
                })?,
        };
        let compensation_backoff = Duration::from_millis(milliseconds(
            "COMPENSATION_BACKOFF_MS",
            get("COMPENSATION_BACKOFF_MS")?,
            30_000,
            1..=3_600_000,
        )?);
        let payment_page_origins = match get("PAYMENT_PAGE_ORIGINS")? {
            None => PaymentPageOrigins::Default,
            Some(v) => PaymentPageOrigins::Listed(origin_list("PAYMENT_PAGE_ORIGINS", &v)?),
        };
        let checkout_rate_limit = match get("CHECKOUT_RATE_LIMIT")? {
            None => 30,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "CHECKOUT_RATE_LIMIT",
                        format!("`{v}` is not a number of checkouts a minute from 1 to 1000000"),
                    )
                })?,
        };
        let admin_session_idle = Duration::from_secs(seconds(
            "ADMIN_SESSION_IDLE_SECS",
            get("ADMIN_SESSION_IDLE_SECS")?,
            1800,
        )?);
        let webhook_refused_retention = Duration::from_secs(
            whole(
                "WEBHOOK_REFUSED_RETENTION_DAYS",
                get("WEBHOOK_REFUSED_RETENTION_DAYS")?,
                30,
                1..=36_500,
                "days",
            )? * 86_400,
        );
        let sandbox_settings = SandboxSettings::from_get(get)?;
        if !sandbox {
            live_base_url(public_base_url.as_deref(), bind_addr)?;
        }
        let metrics_token = get("METRICS_TOKEN")?.map(SecretString::from);
        let request_body_timeout = Duration::from_secs(seconds(
            "REQUEST_BODY_TIMEOUT_SECS",
            get("REQUEST_BODY_TIMEOUT_SECS")?,
            10,
        )?);

        Ok(Config {
            database_url,
            bind_addr,
            public_base_url,
            gateway,
            mall_id,
            secret_key,
            kiccpay,
            gateway_timeout,
            webhook_allowed_ips,
            trusted_proxies,
            admin_user,
            admin_password,
            admin_password_generated,
            order_expiry,
            late_payments,
            reconcile_interval,
            compensation_max_attempts,
            compensation_backoff,
            sandbox: sandbox_settings,
            payment_page_origins,
            checkout_rate_limit,
            metrics_token,
            request_body_timeout,
            admin_session_idle,
            webhook_refused_retention,
        })
    }

    pub fn is_sandbox(&self) -> bool {
        self.gateway == GatewayMode::Sandbox
    }

    /// The effective configuration in one line for the startup log, each secret shown as `***`
    /// (`KICC_SECRET_KEY`, `KICCPAY_SECRET_KEY`, `KICCPAY_AES_KEY`, `KICCPAY_AES_IV`,
    /// `ADMIN_PASSWORD`, `METRICS_TOKEN`, and the password in `DATABASE_URL`). `base_url`: the effective
    /// `PUBLIC_BASE_URL` (known once the listener is bound).
    pub fn summary(&self, base_url: &str) -> String {
        const MASKED: &str = "***";
        let list = |nets: &[IpNet]| {
            let items: Vec<String> = nets.iter().map(ToString::to_string).collect();
            if items.is_empty() {
                "(none)".to_owned()
            } else {
                items.join(",")
            }
        };
        let (mode, api_base) = match &self.gateway {
            GatewayMode::Sandbox => ("sandbox", format!("{base_url}/sandbox")),
            GatewayMode::Live { api_base } => ("live", api_base.clone()),
        };
        let window = match &self.kiccpay.window {
            KiccPayWindow::Sandbox => format!("{base_url}/sandbox/kiccpay/window"),
            KiccPayWindow::Url(url) => url.clone(),
            KiccPayWindow::NotOffered => "(not offered)".to_owned(),
        };
        let kiccpay_api = self
            .kiccpay
            .api_base
            .clone()
            .unwrap_or_else(|| api_base.clone());
        let payment_pages = self
            .payment_page_origins
            .sources(self.is_sandbox())
            .join(",");
        [
            format!("mode={mode}"),
            format!("DATABASE_URL={}", self.database_url),
            format!("BIND_ADDR={}", self.bind_addr),
            format!("PUBLIC_BASE_URL={base_url}"),
            format!("KICC_API_BASE={api_base}"),
            format!("KICC_MALL_ID={}", self.mall_id),
            format!("KICC_SECRET_KEY={MASKED}"),
            format!("KICCPAY_API_BASE={kiccpay_api}"),
            format!("KICCPAY_TID={}", self.kiccpay.tid),
            format!("KICCPAY_SVC_ID={}", self.kiccpay.svc_id),
            format!("KICCPAY_BIZR_NO={}", self.kiccpay.bizr_no),
            format!("KICCPAY_CHANNEL_ID={}", self.kiccpay.channel_id),
            format!("KICCPAY_SECRET_KEY={MASKED}"),
            format!("KICCPAY_AES_KEY={MASKED}"),
            format!("KICCPAY_AES_IV={MASKED}"),
            format!("KICCPAY_WINDOW_URL={window}"),
            format!("KICC_TIMEOUT_SECS={}", self.gateway_timeout.as_secs()),
            format!("WEBHOOK_ALLOWED_IPS={}", list(&self.webhook_allowed_ips)),
            format!("TRUSTED_PROXIES={}", list(&self.trusted_proxies)),
            format!("ADMIN_USER={}", self.admin_user),
            format!(
                "ADMIN_PASSWORD={MASKED}{}",
                if self.admin_password_generated {
                    " (generated)"
                } else {
                    ""
                }
            ),
            format!("ORDER_EXPIRY_SECS={}", self.order_expiry.as_secs()),
            format!("LATE_PAYMENTS={}", self.late_payments.as_str()),
            format!(
                "RECONCILE_INTERVAL_SECS={}",
                self.reconcile_interval.as_secs()
            ),
            format!(
                "COMPENSATION_MAX_ATTEMPTS={}",
                self.compensation_max_attempts
            ),
            format!(
                "COMPENSATION_BACKOFF_MS={}",
                self.compensation_backoff.as_millis()
            ),
            format!("CHECKOUT_RATE_LIMIT={}/min", self.checkout_rate_limit),
            format!(
                "METRICS_TOKEN={}",
                if self.metrics_token.is_some() {
                    MASKED
                } else {
                    "(unset)"
                }
            ),
            format!(
                "REQUEST_BODY_TIMEOUT_SECS={}",
                self.request_body_timeout.as_secs()
            ),
            format!(
                "ADMIN_SESSION_IDLE_SECS={}",
                self.admin_session_idle.as_secs()
            ),
            format!(
                "WEBHOOK_REFUSED_RETENTION_DAYS={}",
                self.webhook_refused_retention.as_secs() / 86_400
            ),
            format!(
                "PAYMENT_PAGE_ORIGINS={}",
                if payment_pages.is_empty() {
                    "(none)"
                } else {
                    &payment_pages
                }
            ),
            format!(
                "SANDBOX_WEBHOOK_BACKOFF_MS={}",
                self.sandbox.webhook_backoff.as_millis()
            ),
            format!(
                "SANDBOX_AUTO_APPROVE_MS={}",
                self.sandbox.auto_approve.map_or(0, |d| d.as_millis())
            ),
        ]
        .join(" ")
    }

    /// The generated admin password, to print once at start (sandbox mode only).
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.admin_password_generated
            .then(|| self.admin_password.expose_secret())
    }
}

/// The most common passwords (the most frequent entries of a public-domain list of leaked
/// passwords, and common ones of 12 characters or more), one a line, lower case.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// Live mode's dashboard password: at least 12 characters and not a common password (compared
/// without regard to case or surrounding spaces).
fn live_admin_password(password: String) -> Result<String, ConfigError> {
    const MIN: usize = 12;
    if password.chars().count() < MIN {
        return Err(ConfigError::new(
            "ADMIN_PASSWORD",
            format!("must be at least {MIN} characters in live mode (KICC_API_BASE set)"),
        ));
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|common| common == lower)
    {
        return Err(ConfigError::new(
            "ADMIN_PASSWORD",
            "is one of the most common passwords; choose another for live mode",
        ));
    }
    Ok(password)
}

/// Live mode sends `returnUrl` and `notifyUrl` on `PUBLIC_BASE_URL` (or `http://BIND_ADDR`) and
/// sets its cookies there: it must be https, except on a loopback host (a proxy on the same
/// machine, tests).
fn live_base_url(public_base_url: Option<&str>, bind_addr: SocketAddr) -> Result<(), ConfigError> {
    let base = public_base_url.map_or_else(|| format!("http://{bind_addr}"), str::to_owned);
    let Ok(url) = url::Url::parse(&base) else {
        return Ok(()); // checked by `http_url` already
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "https" || loopback {
        return Ok(());
    }
    Err(ConfigError::new(
        "PUBLIC_BASE_URL",
        match public_base_url {
            Some(v) => format!(
                "`{v}` must be an https:// URL in live mode (KICC_API_BASE set); http:// is \
                 allowed only on a loopback host"
            ),
            None => format!(
                "is required in live mode (KICC_API_BASE set) when BIND_ADDR `{bind_addr}` is \
                 not a loopback address: the https:// address shoppers and KICC reach"
            ),
        },
    ))
}

/// An absolute http(s) URL, without a trailing slash.
fn http_url(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(var, format!("`{value}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            var,
            format!("`{value}` must be an http:// or https:// URL"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(var, "must not have a query or fragment"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// A comma list of origins (`https://host[:port]`, no path, query or fragment).
fn origin_list(var: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let url = http_url(var, item)?;
            let parsed = url::Url::parse(&url).map_err(|e| ConfigError::new(var, e.to_string()))?;
            if parsed.path() != "/" {
                return Err(ConfigError::new(
                    var,
                    format!("`{item}` is not an origin (scheme://host[:port], no path)"),
                ));
            }
            Ok(parsed.origin().ascii_serialization())
        })
        .collect()
}

fn ascii_field(var: &'static str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            var,
            format!("must be 1 to {max} ASCII characters without spaces"),
        ));
    }
    Ok(())
}

fn hex_bytes<const N: usize>(var: &'static str, value: &str) -> Result<[u8; N], ConfigError> {
    let bad = || {
        ConfigError::new(
            var,
            format!("must be {} hexadecimal characters ({N} bytes)", N * 2),
        )
    };
    if value.len() != N * 2 || !value.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&value[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn seconds(var: &'static str, value: Option<String>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                var,
                format!("`{v}` is not a number of seconds from 1 to 86400"),
            )),
        },
    }
}

fn milliseconds(
    var: &'static str,
    value: Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    whole(var, value, default, range, "milliseconds")
}

/// A whole number of `unit`s in `range`, or `default` when unset.
fn whole(
    var: &'static str,
    value: Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                var,
                format!(
                    "`{v}` is not a number of {unit} from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// A comma list of IP addresses and CIDR blocks; a bare address is a /32 (or /128).
fn ip_list(var: &'static str, value: &str) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(var, format!("`{item}` is not an IP address or CIDR block"))
                })
        })
        .collect()
}

/// 20 characters from a v4 UUID's 122 random bits, readable: no 0/O, 1/l.
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    a.as_bytes()
        .iter()
        .chain(b.as_bytes())
        .take(20)
        .map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::from_lookup(|var| Ok(map.get(var).cloned()))
    }

    #[test]
    fn defaults_are_the_sandbox() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.database_url,
            DatabaseUrl::parse("sqlite://data/kicc-checkout.db").unwrap()
        );
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
        assert!(c.is_sandbox());
        assert_eq!(c.mall_id, "T5102001");
        assert_eq!(c.gateway_timeout, Duration::from_secs(30));
        assert_eq!(c.order_expiry, Duration::from_secs(600));
        assert_eq!(c.reconcile_interval, Duration::from_secs(5));
        assert_eq!(c.sandbox.webhook_backoff, Duration::from_millis(2000));
        assert_eq!(c.sandbox.auto_approve, Some(Duration::from_millis(10_000)));
        assert_eq!(c.admin_user, "admin");
        assert_eq!(c.checkout_rate_limit, 30);
        assert_eq!(
            c.webhook_refused_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(c.generated_admin_password().map(str::len), Some(20));
        assert_eq!(c.kiccpay.window, KiccPayWindow::Sandbox);
        let allowed: Vec<String> = c
            .webhook_allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            allowed,
            [
                "203.233.72.66/32",
                "61.33.205.151/32",
                "127.0.0.0/8",
                "::1/128"
            ]
        );
    }

    #[test]
    fn late_payments_are_accepted_unless_told_to_refund() {
        assert_eq!(config(&[]).unwrap().late_payments, LatePayments::Accept);
        let refund = config(&[("LATE_PAYMENTS", "refund")]).unwrap();
        assert_eq!(refund.late_payments, LatePayments::Refund);
        assert!(
            refund
                .summary("http://127.0.0.1:8080")
                .contains("LATE_PAYMENTS=refund")
        );
        let err = config(&[("LATE_PAYMENTS", "keep")]).unwrap_err();
        assert_eq!(err.var, "LATE_PAYMENTS");
        assert!(err.problem.contains("`keep`"), "{}", err.problem);
    }

    #[test]
    fn live_mode_requires_credentials() {
        let err = config(&[("KICC_API_BASE", "https://testpgapi.easypay.co.kr")]).unwrap_err();
        assert_eq!(err.var, "KICC_MALL_ID");
        let err = config(&[
            ("KICC_API_BASE", "https://testpgapi.easypay.co.kr"),
            ("KICC_MALL_ID", "T5102001"),
            ("KICC_SECRET_KEY", "k"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "ADMIN_PASSWORD");
        let c = config(&[
            ("KICC_API_BASE", "https://testpgapi.easypay.co.kr/"),
            ("KICC_MALL_ID", "T5102001"),
            ("KICC_SECRET_KEY", "k"),
            ("ADMIN_PASSWORD", "correct horse"),
        ])
        .unwrap();
        assert_eq!(
            c.gateway,
            GatewayMode::Live {
                api_base: "https://testpgapi.easypay.co.kr".into()
            }
        );
        assert_eq!(c.kiccpay.window, KiccPayWindow::NotOffered);
        assert_eq!(c.generated_admin_password(), None);
        let allowed: Vec<String> = c
            .webhook_allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["203.233.72.66/32", "61.33.205.151/32"]);
        // Offering KICC Pay in live mode needs its credentials.
        let err = config(&[
            ("KICC_API_BASE", "https://testpgapi.easypay.co.kr"),
            ("KICC_MALL_ID", "T5102001"),
            ("KICC_SECRET_KEY", "k"),
            ("ADMIN_PASSWORD", "correct horse"),
            ("KICCPAY_WINDOW_URL", "https://pay.example.com/window"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "KICCPAY_TID");
    }

    /// A live configuration with everything required but `extra`.
    fn live(extra: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = vec![
            ("KICC_API_BASE", "https://testpgapi.easypay.co.kr"),
            ("KICC_MALL_ID", "T5102001"),
            ("KICC_SECRET_KEY", "k"),
            ("ADMIN_PASSWORD", "correct horse"),
        ];
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend_from_slice(extra);
        config(&vars)
    }

    #[test]
    fn live_mode_refuses_a_plain_http_public_base_url_except_on_loopback() {
        for bad in ["http://shop.example.com", "http://203.0.113.5:8080"] {
            let err = live(&[("PUBLIC_BASE_URL", bad)]).unwrap_err();
            assert_eq!(err.var, "PUBLIC_BASE_URL", "{bad}");
            assert!(err.to_string().contains("https://"), "{err}");
        }
        for good in [
            "https://shop.example.com",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://[::1]:8080",
            "http://localhost:8080",
            "http://LOCALHOST",
        ] {
            live(&[("PUBLIC_BASE_URL", good)]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // Unset: the base is http://BIND_ADDR, fine on loopback only.
        live(&[("BIND_ADDR", "127.0.0.1:8080")]).unwrap();
        let err = live(&[("BIND_ADDR", "0.0.0.0:8080")]).unwrap_err();
        assert_eq!(err.var, "PUBLIC_BASE_URL");
        live(&[
            ("BIND_ADDR", "0.0.0.0:8080"),
            ("PUBLIC_BASE_URL", "https://shop.example.com"),
        ])
        .unwrap();
        // Sandbox mode keeps plain http anywhere.
        config(&[("PUBLIC_BASE_URL", "http://192.168.1.20:8080")]).unwrap();
    }

    #[test]
    fn live_mode_refuses_short_or_common_admin_passwords() {
        for bad in [
            "hunter2hunt",
            "password",
            "PASSWORD1234",
            "qwerty123456",
            " Administrator ",
            "1q2w3e4r5t6y",
            "winniethepooh",
        ] {
            let err = live(&[("ADMIN_PASSWORD", bad)]).unwrap_err();
            assert_eq!(err.var, "ADMIN_PASSWORD", "{bad}");
        }
        let err = live(&[("ADMIN_PASSWORD", "abcdefghijk")]).unwrap_err();
        assert!(err.to_string().contains("at least 12 characters"), "{err}");
        let err = live(&[("ADMIN_PASSWORD", "Password1234")]).unwrap_err();
        assert!(err.to_string().contains("common"), "{err}");
        // Twelve characters counted as characters, not bytes.
        live(&[("ADMIN_PASSWORD", "비밀번호는열두글자입니다")]).unwrap();
        live(&[("ADMIN_PASSWORD", "correct horse")]).unwrap();
        // Sandbox mode keeps its 8-character floor.
        config(&[("ADMIN_PASSWORD", "password")]).unwrap();
        // The list is lower case and has no blank line (a blank password is unset anyway).
        for line in COMMON_PASSWORDS.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.is_empty() && line == line.to_lowercase(), "{line:?}");
        }
    }

    #[test]
    fn the_metrics_token_and_the_body_timeout_are_read_and_the_token_never_prints() {
        let c = config(&[]).unwrap();
        assert!(c.metrics_token.is_none());
        assert_eq!(c.request_body_timeout, Duration::from_secs(10));
        assert!(
            c.summary("http://127.0.0.1:8080")
                .contains("METRICS_TOKEN=(unset)")
        );
        let c = config(&[
            ("METRICS_TOKEN", "scrape-3f9a1c77e2"),
            ("REQUEST_BODY_TIMEOUT_SECS", "2"),
        ])
        .unwrap();
        assert_eq!(
            c.metrics_token.as_ref().map(|t| t.expose_secret()),
            Some("scrape-3f9a1c77e2")
        );
        assert_eq!(c.request_body_timeout, Duration::from_secs(2));
        let summary = c.summary("http://127.0.0.1:8080");
        assert!(summary.contains("METRICS_TOKEN=***"), "{summary}");
        assert!(
            !summary.contains("scrape-3f9a1c77e2")
                && !format!("{c:?}").contains("scrape-3f9a1c77e2")
        );
        let err = config(&[("REQUEST_BODY_TIMEOUT_SECS", "0")]).unwrap_err();
        assert_eq!(err.var, "REQUEST_BODY_TIMEOUT_SECS");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&'static str, &str)] = &[
            ("DATABASE_URL", "mysql://root@localhost/db"),
            ("DATABASE_URL", "sqlite://"),
            ("DATABASE_URL", "sqlite://:memory:"),
            ("BIND_ADDR", "localhost"),
            ("BIND_ADDR", "127.0.0.1:99999"),
            ("PUBLIC_BASE_URL", "ftp://example.com"),
            ("KICC_API_BASE", "not a url"),
            ("KICC_MALL_ID", "TOO-LONG-ID"),
            ("KICCPAY_AES_KEY", "00ff"),
            ("KICCPAY_AES_IV", "zz0102030405060708090a0b0c0d0e0f"),
            ("KICCPAY_BIZR_NO", "12345"),
            ("KICC_TIMEOUT_SECS", "0"),
            ("KICC_TIMEOUT_SECS", "thirty"),
            ("ORDER_EXPIRY_SECS", "-5"),
            ("RECONCILE_INTERVAL_SECS", "1.5"),
            ("WEBHOOK_ALLOWED_IPS", "203.233.72.66,example.com"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("ADMIN_PASSWORD", "short"),
            ("COMPENSATION_MAX_ATTEMPTS", "0"),
            ("COMPENSATION_BACKOFF_MS", "soon"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "600001"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "2s"),
            ("SANDBOX_AUTO_APPROVE_MS", "-1"),
            ("SANDBOX_AUTO_APPROVE_MS", "ten"),
            ("PAYMENT_PAGE_ORIGINS", "https://pay.example.com/path"),
            ("PAYMENT_PAGE_ORIGINS", "javascript:alert(1)"),
            ("CHECKOUT_RATE_LIMIT", "0"),
            ("CHECKOUT_RATE_LIMIT", "many"),
            ("WEBHOOK_REFUSED_RETENTION_DAYS", "0"),
            ("WEBHOOK_REFUSED_RETENTION_DAYS", "a month"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(&err.var, var, "{var}={value}: {err}");
            let line = err.to_string();
            assert!(
                line.starts_with(&format!("{var}: ")) && !line.contains('\n'),
                "{line}"
            );
        }
    }

    #[test]
    fn sandbox_timings_are_milliseconds_and_zero_turns_auto_approve_off() {
        let c = config(&[
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ])
        .unwrap();
        assert_eq!(c.sandbox.webhook_backoff, Duration::from_millis(1));
        assert_eq!(c.sandbox.auto_approve, None);
        let c = config(&[("SANDBOX_AUTO_APPROVE_MS", "250")]).unwrap();
        assert_eq!(c.sandbox.auto_approve, Some(Duration::from_millis(250)));
    }

    #[test]
    fn lists_accept_cidr_and_set_values_are_used_exactly() {
        let c = config(&[
            ("WEBHOOK_ALLOWED_IPS", " 10.1.0.0/16 , 192.168.1.5"),
            ("TRUSTED_PROXIES", "10.0.0.1"),
        ])
        .unwrap();
        let allowed: Vec<String> = c
            .webhook_allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["10.1.0.0/16", "192.168.1.5/32"]);
        assert_eq!(c.trusted_proxies.len(), 1);
    }

    #[test]
    fn secrets_never_print() {
        let c = config(&[
            ("ADMIN_PASSWORD", "hunter2hunter2"),
            ("KICC_SECRET_KEY", "topsecretkey"),
            (
                "DATABASE_URL",
                "postgres://app:pa55word@db.example.com/shop",
            ),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        for secret in [
            "hunter2hunter2",
            "topsecretkey",
            "pa55word",
            SANDBOX_KICCPAY_SECRET_KEY,
            SANDBOX_KICCPAY_AES_KEY,
        ] {
            assert!(!printed.contains(secret), "{secret} printed in {printed}");
        }
        assert!(
            printed.contains("postgres://app:***@db.example.com/shop"),
            "{printed}"
        );
        let summary = c.summary("http://127.0.0.1:8080");
        for secret in [
            "hunter2hunter2",
            "topsecretkey",
            "pa55word",
            SANDBOX_KICCPAY_SECRET_KEY,
            SANDBOX_KICCPAY_AES_KEY,
            SANDBOX_KICCPAY_AES_IV,
        ] {
            assert!(!summary.contains(secret), "{secret} in {summary}");
        }
        for masked in [
            "KICC_SECRET_KEY=***",
            "KICCPAY_SECRET_KEY=***",
            "KICCPAY_AES_KEY=***",
            "KICCPAY_AES_IV=***",
            "ADMIN_PASSWORD=***",
            "DATABASE_URL=postgres://app:***@db.example.com/shop",
        ] {
            assert!(summary.contains(masked), "{masked} not in {summary}");
        }
        assert!(!summary.contains('\n'));
    }
}
