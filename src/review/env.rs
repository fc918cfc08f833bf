//! The review's world: a sandbox gateway (our own on loopback, or `--gateway URL`), one database
//! (a temporary SQLite file unless one is given) and three instances of the app on it, each
//! configured for what its scenarios isolate; plus the shopper's, KICC's and the merchant's moves
//! over real HTTP, and the faults a scenario injects into the database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::web;
use diesel::RunQueryDsl;
use serde_json::{Value, json};

use super::ReviewError;
use crate::checkout::reconciler::Reconciler;
use crate::config::{self, Config, ConfigError};
use crate::db::{Backend, DatabaseUrl, Db, DbError};
use crate::sandbox::{SandboxConfig, SandboxServer};
use crate::startup::Application;
use crate::web::AppState;

/// KICC's development source IP (spec 04/05): the only address the "quiet" instances accept
/// notifications from, so the sandbox's (loopback) never reach them.
pub const KICC_DEV_IP: &str = "61.33.205.151";
/// An address that is not KICC's (TEST-NET-2, RFC 5737).
pub const STRANGER_IP: &str = "198.51.100.23";
/// How long a scenario waits for an order to reach a state before it says so.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// Which instance of the app a scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instance {
    /// Everything on: notifications from loopback (the sandbox) are accepted; KICC's 30 s timeout.
    Main,
    /// Notifications refused and a 1 s gateway timeout: the returnUrl path proves its rules
    /// alone, and a late reply is a timeout.
    Quiet,
    /// Notifications refused, orders expire after 1 s, late payments refunded: only the
    /// reconciler's status check can settle an order.
    Fallback,
}

/// One instance of the app, served in the background.
pub struct App {
    pub base: String,
    pub state: web::Data<AppState>,
    pub reconciler: Arc<Reconciler>,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The sandbox gateway, ours or someone else's.
struct Gateway {
    base: String,
    own: Option<(ServerHandle, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

pub struct Env {
    pub gateway_base: String,
    gateway: Gateway,
    pub db: Db,
    pub database: String,
    main: App,
    quiet: App,
    fallback: App,
    /// No cookies, no redirects: each move says what it sends.
    pub http: reqwest::Client,
    pub admin_user: String,
    pub admin_password: String,
    /// Every trade the run touched (for the run-wide checks).
    pub trades: Mutex<Vec<String>>,
    _temp: Option<tempfile::TempDir>,
}

/// A form to submit: its absolute action URL and its fields.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// An order as `POST /api/orders` created it.
#[derive(Debug, Clone)]
pub struct Created {
    pub no: String,
    pub pg_cno: String,
    pub amount: i64,
    pub currency: String,
    pub payment_page_url: String,
}

/// What the review needs to know about a failed move: said in one line in the report.
pub type Step<T> = Result<T, String>;

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Sends a request and reads its body as text; a failure says what was being done.
pub async fn text_of(request: reqwest::RequestBuilder, what: &str) -> Step<String> {
    request
        .send()
        .await
        .map_err(fail(what))?
        .text()
        .await
        .map_err(fail(what))
}

/// Sends a request to the sandbox's control API; any answer but 2xx is an error.
async fn control(request: reqwest::RequestBuilder, what: &str) -> Step<reqwest::Response> {
    let r = request.send().await.map_err(fail(what))?;
    if r.status().is_success() {
        Ok(r)
    } else {
        Err(format!("{what}: the sandbox answered HTTP {}", r.status()))
    }
}

impl Env {
    pub async fn start(
        gateway: Option<&str>,
        database_url: Option<&DatabaseUrl>,
    ) -> Result<Self, ReviewError> {
        let (temp, database_url) = match database_url {
            Some(url) => (None, url.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("kicc-review-")
                    .tempdir()
                    .map_err(ReviewError::TempDir)?;
                let url = DatabaseUrl::parse(&format!(
                    "sqlite://{}",
                    dir.path().join("review.db").display()
                ))
                .map_err(|p| ReviewError::Config(ConfigError::new("DATABASE_URL", p)))?;
                (Some(dir), url)
            }
        };
        let gateway = match gateway {
            Some(url) => Gateway {
                base: url.trim_end_matches('/').to_owned(),
                own: None,
            },
            None => {
                let config = SandboxConfig::from_lookup(|var| {
                    Ok(match var {
                        // First resend soon, so a refused notification comes back within the
                        // scenario; no approval by the sandbox itself (the scenarios decide).
                        "SANDBOX_WEBHOOK_BACKOFF_MS" => Some("200".into()),
                        "SANDBOX_AUTO_APPROVE_MS" => Some("0".into()),
                        _ => merchant_var(var),
                    })
                })?;
                let server =
                    SandboxServer::build(config, "127.0.0.1:0".parse().expect("address"), None)?;
                let base = server.base_url().to_owned();
                let handle = server.handle();
                let task = tokio::spawn(server.run_until_stopped());
                Gateway {
                    base,
                    own: Some((handle, task)),
                }
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(40))
            .build()
            .map_err(|e| ReviewError::Gateway {
                url: gateway.base.clone(),
                why: e.to_string(),
            })?;
        // The gateway must answer as a sandbox: the review drives its scenarios.
        let console = http
            .get(format!("{}/control/trades/none-such", gateway.base))
            .send()
            .await;
        match console {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) => {
                return Err(ReviewError::Gateway {
                    url: gateway.base.clone(),
                    why: format!(
                        "its control API answered HTTP {} (a kicc-checkout sandbox answers 404 for an unknown trade)",
                        r.status()
                    ),
                });
            }
            Err(e) => {
                return Err(ReviewError::Gateway {
                    url: gateway.base.clone(),
                    why: crate::text::one_line(&e),
                });
            }
        }
        let admin_password = uuid::Uuid::new_v4().simple().to_string();
        let admin_user = "reviewer".to_owned();
        let common = |instance: Instance| -> Vec<(&'static str, String)> {
            let mut vars = vec![
                ("DATABASE_URL", database_url.to_string()),
                ("BIND_ADDR", "127.0.0.1:0".to_owned()),
                ("KICC_API_BASE", gateway.base.clone()),
                (
                    "KICCPAY_WINDOW_URL",
                    format!("{}/kiccpay/window", gateway.base),
                ),
                ("ADMIN_USER", admin_user.clone()),
                ("ADMIN_PASSWORD", admin_password.clone()),
                // Passes run when a scenario asks (the same code the timer runs).
                ("RECONCILE_INTERVAL_SECS", "86400".to_owned()),
                ("COMPENSATION_BACKOFF_MS", "20".to_owned()),
                ("TRUSTED_PROXIES", "127.0.0.1".to_owned()),
                // Every order of the review comes from loopback, far more than a shopper's.
                ("CHECKOUT_RATE_LIMIT", "1000000".to_owned()),
            ];
            match instance {
                Instance::Main => vars.push((
                    "WEBHOOK_ALLOWED_IPS",
                    format!("127.0.0.1,::1,{}", config::KICC_WEBHOOK_IPS),
                )),
                Instance::Quiet => {
                    vars.push(("WEBHOOK_ALLOWED_IPS", KICC_DEV_IP.to_owned()));
                    vars.push(("KICC_TIMEOUT_SECS", "1".to_owned()));
                }
                Instance::Fallback => {
                    vars.push(("WEBHOOK_ALLOWED_IPS", KICC_DEV_IP.to_owned()));
                    vars.push(("ORDER_EXPIRY_SECS", "1".to_owned()));
                    // A payment after expiry is refunded here (kept on main, the default).
                    vars.push(("LATE_PAYMENTS", "refund".to_owned()));
                }
            }
            vars
        };
        let main = App::start(common(Instance::Main)).await?;
        let quiet = App::start(common(Instance::Quiet)).await?;
        let fallback = App::start(common(Instance::Fallback)).await?;
        let db = main.state.db.clone();
        let database = match (db.backend(), &temp) {
            (Backend::Sqlite, Some(_)) => {
                "SQLite (a temporary file, removed afterwards)".to_owned()
            }
            (backend, _) => format!("{} ({database_url})", backend.as_str()),
        };
        Ok(Self {
            gateway_base: gateway.base.clone(),
            gateway,
            db,
            database,
            main,
            quiet,
            fallback,
            http,
            admin_user,
            admin_password,
            trades: Mutex::new(Vec::new()),
            _temp: temp,
        })
    }

    /// Stops the apps and our sandbox; the temporary database goes with `self`.
    pub async fn stop(self) {
        for app in [self.main, self.quiet, self.fallback] {
            app.handle.stop(true).await;
            let _ = app.task.await;
        }
        if let Some((handle, task)) = self.gateway.own {
            handle.stop(true).await;
            let _ = task.await;
        }
    }

    pub fn app(&self, instance: Instance) -> &App {
        match instance {
            Instance::Main => &self.main,
            Instance::Quiet => &self.quiet,
            Instance::Fallback => &self.fallback,
        }
    }

    pub fn is_own_gateway(&self) -> bool {
        self.gateway.own.is_some()
    }

    // ---- the gateway --------------------------------------------------------------------

    /// Sets a sandbox scenario for an order (DESIGN §8).
    pub async fn scenario(&self, no: &str, name: &str, count: Option<u64>) -> Step<()> {
        let request = self
            .http
            .post(format!("{}/control/scenario", self.gateway_base))
            .json(&json!({"shopOrderNo": no, "scenario": name, "count": count}));
        control(request, &format!("setting scenario {name}")).await?;
        Ok(())
    }

    /// The sandbox's view of a trade (by pgCno or shopOrderNo).
    pub async fn trade(&self, id: &str) -> Step<Value> {
        let request = self
            .http
            .get(format!("{}/control/trades/{id}", self.gateway_base));
        let what = format!("reading the sandbox trade {id}");
        control(request, &what)
            .await?
            .json()
            .await
            .map_err(fail(&what))
    }

    /// Asks the sandbox to send a webhook delivery again (KICC's resend).
    pub async fn resend(&self, delivery: u64) -> Step<()> {
        let request = self
            .http
            .post(format!(
                "{}/control/webhooks/{delivery}/resend",
                self.gateway_base
            ))
            .json(&json!({}));
        control(request, &format!("resending webhook {delivery}")).await?;
        Ok(())
    }

    /// The shopper presses Pay (or Cancel) on the WeChat page of `pg_cno`; the form that sends
    /// the browser back to the returnUrl, if the page has one.
    pub async fn wechat_press(&self, pg_cno: &str, action: &str) -> Step<Option<Form>> {
        let url = format!("{}/wechat/pay/{pg_cno}", self.gateway_base);
        let html = text_of(
            self.http.post(&url).form(&[("action", action)]),
            "the WeChat payment page",
        )
        .await?;
        Ok(first_form(&url, &html))
    }

    /// The shopper opens the KICC Pay window and presses `action`; the return form.
    pub async fn kiccpay_press(&self, window_url: &str, action: &str) -> Step<Form> {
        let html = text_of(self.http.get(window_url), "the KICC Pay window").await?;
        let pay = first_form(window_url, &html).ok_or("the KICC Pay window has no form")?;
        let html = text_of(
            self.http.post(&pay.action).form(&[("action", action)]),
            "the KICC Pay window",
        )
        .await?;
        first_form(&pay.action, &html).ok_or_else(|| "the KICC Pay window did not return".into())
    }

    /// The browser submits a form (the returnUrl's, the shop's): (HTTP status, Location, body).
    pub async fn submit(
        &self,
        client: &reqwest::Client,
        form: &Form,
    ) -> Step<(u16, String, String)> {
        let r = client
            .post(&form.action)
            .form(&form.fields)
            .send()
            .await
            .map_err(fail("submitting the form"))?;
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = r.text().await.unwrap_or_default();
        Ok((status, location, body))
    }

    // ---- the shop -----------------------------------------------------------------------

    /// `POST /api/orders`: 2 mugs and a sticker pack, like a headless front end would.
    pub async fn create(
        &self,
        instance: Instance,
        pay_method: &str,
        device: &str,
        currency: &str,
    ) -> Step<Created> {
        let app = self.app(instance);
        let r = self
            .http
            .post(format!("{}/api/orders", app.base))
            .json(&json!({
                "items": [{"sku": "CERAMIC-MUG", "quantity": 2}, {"sku": "STICKER-PACK", "quantity": 1}],
                "currency": currency, "payMethod": pay_method, "device": device,
                "customer": {"name": "Review Shopper", "email": "review@example.com", "phone": "010-1234-5678", "address": "Seoul, Korea"}
            }))
            .send()
            .await
            .map_err(fail("POST /api/orders"))?;
        let status = r.status();
        let body: Value = r.json().await.map_err(fail("POST /api/orders"))?;
        if status != reqwest::StatusCode::CREATED {
            return Err(format!("POST /api/orders answered {status}: {body}"));
        }
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        let created = Created {
            no: text("shopOrderNo"),
            pg_cno: text("pgCno"),
            amount: body["amount"].as_i64().unwrap_or_default(),
            currency: text("currency"),
            payment_page_url: text("paymentPageUrl"),
        };
        if !created.pg_cno.is_empty() {
            self.trades
                .lock()
                .expect("trades")
                .push(created.pg_cno.clone());
        } else {
            // KICC Pay: the trade is known by the order number until approved.
            self.trades.lock().expect("trades").push(created.no.clone());
        }
        Ok(created)
    }

    /// A WeChat order paid the ordinary way: QR scanned, Pay, back at the returnUrl.
    pub async fn paid_wechat(&self, instance: Instance) -> Step<Created> {
        let created = self.create(instance, "wechat", "pc", "KRW").await?;
        let form = self
            .wechat_press(&created.pg_cno, "pay")
            .await?
            .ok_or("the payment page did not send the shopper back")?;
        self.submit(&self.http, &form).await?;
        self.until(instance, &created.no, &["paid"]).await?;
        Ok(created)
    }

    /// `GET /api/orders/{no}`.
    pub async fn order(&self, instance: Instance, no: &str) -> Step<Value> {
        self.http
            .get(format!("{}/api/orders/{no}", self.app(instance).base))
            .send()
            .await
            .map_err(fail("GET /api/orders"))?
            .json()
            .await
            .map_err(fail("GET /api/orders"))
    }

    /// Waits until the order's status is one of `statuses`; its last JSON either way.
    pub async fn until(&self, instance: Instance, no: &str, statuses: &[&str]) -> Step<Value> {
        let start = Instant::now();
        loop {
            let order = self.order(instance, no).await?;
            let status = order["status"].as_str().unwrap_or_default();
            if statuses.contains(&status) || start.elapsed() > SETTLE_LIMIT {
                return Ok(order);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `probe` holds for the trade (the sandbox's view), up to the settle limit.
    pub async fn until_trade(&self, id: &str, probe: impl Fn(&Value) -> bool) -> Step<Value> {
        let start = Instant::now();
        loop {
            let trade = self.trade(id).await?;
            if probe(&trade) || start.elapsed() > SETTLE_LIMIT {
                return Ok(trade);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Posts a notification body to a webhook route as if from `source` (through the trusted
    /// proxy): (HTTP status, ack JSON).
    pub async fn notify(
        &self,
        instance: Instance,
        route: &str,
        body: &Value,
        source: &str,
    ) -> Step<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{route}", self.app(instance).base))
            .header("X-Forwarded-For", source)
            .json(body)
            .send()
            .await
            .map_err(fail("posting the notification"))?;
        let status = r.status().as_u16();
        let ack = r.json().await.unwrap_or(Value::Null);
        Ok((status, ack))
    }

    /// The merchant signs in to the dashboard: a client holding the session, and its CSRF token.
    pub async fn merchant(&self, instance: Instance) -> Step<(reqwest::Client, String)> {
        let app = self.app(instance);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .map_err(fail("the merchant's browser"))?;
        let login_url = format!("{}/admin/login", app.base);
        let page = text_of(client.get(&login_url), "GET /admin/login").await?;
        let mut form = first_form(&login_url, &page).ok_or("the login page has no form")?;
        form.set("user", &self.admin_user);
        form.set("password", &self.admin_password);
        let (status, _, _) = self.submit(&client, &form).await?;
        if status != 303 {
            return Err(format!("signing in answered HTTP {status}"));
        }
        let home = text_of(client.get(format!("{}/admin", app.base)), "GET /admin").await?;
        let csrf = hidden_value(&home, "csrf").ok_or("the dashboard has no CSRF token")?;
        Ok((client, csrf))
    }

    /// The merchant presses Cancel on the order's dashboard page (`amount` empty: all of it).
    pub async fn merchant_cancel(&self, instance: Instance, no: &str, amount: &str) -> Step<u16> {
        let (client, csrf) = self.merchant(instance).await?;
        let form = Form {
            action: format!("{}/admin/orders/{no}/cancel", self.app(instance).base),
            fields: vec![("csrf".into(), csrf), ("amount".into(), amount.into())],
        };
        Ok(self.submit(&client, &form).await?.0)
    }

    // ---- the database -------------------------------------------------------------------

    /// Makes the database itself refuse a write (a real failure, not a flag in the app).
    pub async fn inject(&self, fault: DbFault) -> Step<()> {
        self.execute(fault.create(self.db.backend()))
            .await
            .map_err(fail("injecting the database fault"))
    }

    /// Removes an injected fault (and is harmless when there is none).
    pub async fn heal(&self, fault: DbFault) -> Step<()> {
        self.execute(fault.drop(self.db.backend()))
            .await
            .map_err(fail("removing the database fault"))
    }

    async fn execute(&self, statements: Vec<String>) -> Result<(), DbError> {
        self.db
            .run(move |conn| {
                for statement in statements {
                    diesel::sql_query(statement).execute(conn)?;
                }
                Ok::<_, DbError>(())
            })
            .await
    }
}

impl App {
    async fn start(vars: Vec<(&'static str, String)>) -> Result<Self, ReviewError> {
        let config = Config::from_lookup(|var| {
            Ok(vars
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.clone())
                .or_else(|| merchant_var(var)))
        })?;
        let app = Application::build(config).await?;
        let base = app.base_url().to_owned();
        let state = app.state().clone();
        let reconciler = app.reconciler().clone();
        let handle = app.handle();
        let task = tokio::spawn(app.run_until_stopped());
        Ok(Self {
            base,
            state,
            reconciler,
            handle,
            task,
        })
    }

    /// One reconciler pass, the work the timer would do.
    pub async fn reconcile(&self) -> Step<crate::checkout::reconciler::PassReport> {
        self.reconciler
            .pass()
            .await
            .map_err(fail("the reconciler pass"))
    }
}

/// The merchant's credentials: from the environment when set (a sandbox started with its own
/// merchant), else the sandbox's defaults — the same values the sandbox reads.
fn merchant_var(var: &'static str) -> Option<String> {
    let from_env = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let default = match var {
        "KICC_MALL_ID" => config::SANDBOX_MALL_ID,
        "KICC_SECRET_KEY" => config::SANDBOX_SECRET_KEY,
        "KICCPAY_TID" => config::SANDBOX_KICCPAY_TID,
        "KICCPAY_SVC_ID" => config::SANDBOX_KICCPAY_SVC_ID,
        "KICCPAY_BIZR_NO" => config::SANDBOX_KICCPAY_BIZR_NO,
        "KICCPAY_CHANNEL_ID" => config::SANDBOX_KICCPAY_CHANNEL_ID,
        "KICCPAY_SECRET_KEY" => config::SANDBOX_KICCPAY_SECRET_KEY,
        "KICCPAY_AES_KEY" => config::SANDBOX_KICCPAY_AES_KEY,
        "KICCPAY_AES_IV" => config::SANDBOX_KICCPAY_AES_IV,
        _ => return None,
    };
    Some(from_env.unwrap_or_else(|| default.to_owned()))
}

/// A write the database refuses, by a trigger (spec 02/03/04's "DB failure", for real).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFault {
    /// No order may become `paid`.
    PaidWrite,
    /// No webhook delivery may be stored.
    DeliveryInsert,
    /// An approval notification's note on the order's timeline cannot be written.
    WebhookNote,
}

impl DbFault {
    pub const ALL: [DbFault; 3] = [
        DbFault::PaidWrite,
        DbFault::DeliveryInsert,
        DbFault::WebhookNote,
    ];

    fn name(self) -> &'static str {
        match self {
            DbFault::PaidWrite => "review_fail_paid",
            DbFault::DeliveryInsert => "review_fail_deliveries",
            DbFault::WebhookNote => "review_fail_webhook_note",
        }
    }

    fn table(self) -> &'static str {
        match self {
            DbFault::PaidWrite => "orders",
            DbFault::DeliveryInsert => "webhook_deliveries",
            DbFault::WebhookNote => "order_events",
        }
    }

    /// The trigger's timing and condition (the same words on both backends).
    fn when(self, postgres: bool) -> String {
        let (event, condition) = match self {
            DbFault::PaidWrite => ("UPDATE OF status", Some("NEW.status = 'paid'")),
            DbFault::DeliveryInsert => ("INSERT", None),
            DbFault::WebhookNote => ("INSERT", Some("NEW.event = 'webhook_approval'")),
        };
        let table = self.table();
        match (postgres, condition) {
            (true, Some(c)) => format!("BEFORE {event} ON {table} FOR EACH ROW WHEN ({c})"),
            (true, None) => format!("BEFORE {event} ON {table} FOR EACH ROW"),
            (false, Some(c)) => format!("BEFORE {event} ON {table} WHEN {c}"),
            (false, None) => format!("BEFORE {event} ON {table}"),
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            DbFault::PaidWrite | DbFault::DeliveryInsert => "injected: disk full",
            DbFault::WebhookNote => "injected: lock timeout",
        }
    }

    fn create(self, backend: Backend) -> Vec<String> {
        let (name, message) = (self.name(), self.message());
        let mut statements = self.drop(backend);
        match backend {
            Backend::Postgres => {
                statements.push(format!(
                    "CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql"
                ));
                statements.push(format!(
                    "CREATE TRIGGER {name} {} EXECUTE FUNCTION {name}()",
                    self.when(true)
                ));
            }
            Backend::Sqlite => statements.push(format!(
                "CREATE TRIGGER {name} {} BEGIN SELECT RAISE(ABORT, '{message}'); END",
                self.when(false)
            )),
        }
        statements
    }

    fn drop(self, backend: Backend) -> Vec<String> {
        let name = self.name();
        match backend {
            Backend::Postgres => vec![
                format!("DROP TRIGGER IF EXISTS {name} ON {}", self.table()),
                format!("DROP FUNCTION IF EXISTS {name}()"),
            ],
            Backend::Sqlite => vec![format!("DROP TRIGGER IF EXISTS {name}")],
        }
    }
}

/// The first `<form>` of a page: its action (absolute, resolved against `page_url`) and its
/// named inputs with a value.
pub fn first_form(page_url: &str, html: &str) -> Option<Form> {
    let form = html.split("<form").nth(1)?;
    let form = form.split("</form>").next().unwrap_or(form);
    let action = attribute(form.split('>').next()?, "action").unwrap_or_default();
    let action = url::Url::parse(page_url)
        .and_then(|base| base.join(&action))
        .map(String::from)
        .ok()?;
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = input.split('>').next()?;
            // A radio button or checkbox counts only when checked, as a browser sends it.
            let choice = matches!(
                attribute(tag, "type").as_deref(),
                Some("radio" | "checkbox")
            );
            if choice && !tag.contains(" checked") {
                return None;
            }
            Some((attribute(tag, "name")?, attribute(tag, "value")?))
        })
        .collect();
    Some(Form { action, fields })
}

/// The value of the hidden input `name` anywhere in a page.
pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    html.split("<input").skip(1).find_map(|input| {
        let tag = input.split('>').next()?;
        (attribute(tag, "name")? == name)
            .then(|| attribute(tag, "value"))
            .flatten()
    })
}

/// An attribute of a tag, its HTML entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let value = tag
        .split(&format!(" {name}=\""))
        .nth(1)?
        .split('"')
        .next()?;
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Reads a QR code back from a PNG, as a phone camera would. Greyscale of any depth (ours is one
/// bit per pixel) is expanded to 8 bits first.
pub fn decode_qr_png(png_bytes: &[u8]) -> Step<String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(fail("the PNG"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("the PNG is too large to read")?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(fail("the PNG"))?;
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "the PNG is {:?} {:?}, not 8-bit greyscale",
            info.color_type, info.bit_depth
        ));
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = image.detect_grids();
    let grid = grids.first().ok_or("no QR code found in the image")?;
    grid.decode()
        .map(|(_, text)| text)
        .map_err(fail("the QR code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_with_absolute_actions_and_decoded_values() {
        let html = r#"<p>x</p><form method="post" action="/checkout/return?a=1&amp;b=2">
            <input type="hidden" name="resCd" value="0000">
            <input type="hidden" name="resMsg" value="&quot;ok&quot; &amp; done">
            <input type="submit" value="Go">
            <input type="radio" name="pay" value="a"><input type="radio" name="pay" value="b" checked>
            <button>Go</button></form><form action="/other"></form>"#;
        let form = first_form("http://127.0.0.1:9/sandbox/wechat/pay/X", html).unwrap();
        assert_eq!(form.action, "http://127.0.0.1:9/checkout/return?a=1&b=2");
        assert_eq!(form.field("resCd"), Some("0000"));
        assert_eq!(form.field("resMsg"), Some("\"ok\" & done"));
        assert_eq!(
            form.field("pay"),
            Some("b"),
            "only the checked radio button"
        );
        assert_eq!(
            form.fields.len(),
            3,
            "an input without a name is not a field"
        );
        assert_eq!(hidden_value(html, "resCd").as_deref(), Some("0000"));
        assert!(first_form("http://h/", "<p>no form</p>").is_none());
    }

    #[test]
    fn a_fault_is_one_trigger_and_its_removal_is_idempotent() {
        let sqlite = DbFault::PaidWrite.create(Backend::Sqlite);
        assert_eq!(sqlite[0], "DROP TRIGGER IF EXISTS review_fail_paid");
        assert!(sqlite[1].contains("BEFORE UPDATE OF status ON orders WHEN NEW.status = 'paid'"));
        let postgres = DbFault::WebhookNote.create(Backend::Postgres);
        assert!(postgres[3].contains(
            "BEFORE INSERT ON order_events FOR EACH ROW WHEN (NEW.event = 'webhook_approval')"
        ));
    }
}
