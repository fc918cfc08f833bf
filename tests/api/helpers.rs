//! Test fixtures: a fresh database per test on either backend, the app on port 0, sample orders.

use std::sync::OnceLock;

use diesel::{Connection, PgConnection, RunQueryDsl};
use kicc_checkout::config::Config;
use kicc_checkout::db::{DatabaseUrl, Db, PoolOptions, orders};
use kicc_checkout::domain::{
    Currency, Customer, GoodsName, Money, Order, OrderLine, PayMethod, ShopOrderNo, TradeType,
};
use kicc_checkout::startup::Application;

/// Runs the test body once per backend: `mod name { fn sqlite(); fn postgres(); }`.
/// Synchronous bodies get a `TestDb`; `async` bodies run on a multi-threaded tokio runtime.
macro_rules! both_backends {
    ($(#[$meta:meta])* fn $name:ident($db:ident) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($db: $crate::helpers::TestDb) $body
            #[test]
            fn sqlite() {
                body($crate::helpers::TestDb::sqlite())
            }
            #[test]
            fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::postgres() {
                    body(db)
                }
            }
        }
        both_backends!($($rest)*);
    };
    ($(#[$meta:meta])* async fn $name:ident($db:ident) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($db: $crate::helpers::TestDb) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body($crate::helpers::TestDb::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::postgres() {
                    body(db).await
                }
            }
        }
        both_backends!($($rest)*);
    };
    () => {};
}

/// The PostgreSQL server the tests create their databases on (needs CREATEDB).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether PostgreSQL tests run: yes when the server answers; when it does not, they are
/// skipped — unless `CI` is set, where a silent skip would hide a broken backend: then they fail.
pub fn postgres_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| match PgConnection::establish(&postgres_admin_url()) {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "PostgreSQL does not answer at {} and CI is set: {e}",
                postgres_admin_url()
            )
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL does not answer at {} ({e}); set CI=1 to fail instead",
                postgres_admin_url()
            );
            false
        }
    })
}

/// A database of its own for one test: a temporary SQLite file, or a PostgreSQL database created
/// now and dropped when the test ends.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres_name: Option<String>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A folder that does not exist yet: the app must create it.
        let path = dir.path().join("nested").join("shop.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
            postgres_name: None,
        }
    }

    pub fn postgres() -> Option<Self> {
        if !postgres_available() {
            return None;
        }
        let name = format!("kicc_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&postgres_admin_url()).expect("admin connection");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .expect("create database");
        let mut url = url::Url::parse(&postgres_admin_url()).expect("TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        // Loopback needs neither TLS nor GSSAPI. With them, libpq's OpenSSL and Kerberos
        // teardown at process exit crashed test processes whose background threads still held
        // connections (seen: SIGSEGV in OpenSSL, SIGABRT in k5_mutex_lock, after passing tests).
        for (key, value) in [("sslmode", "disable"), ("gssencmode", "disable")] {
            if !url.query_pairs().any(|(k, _)| k == key) {
                url.query_pairs_mut().append_pair(key, value);
            }
        }
        Some(Self {
            url: url.to_string(),
            _dir: None,
            postgres_name: Some(name),
        })
    }

    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url).expect("test URL parses")
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres_name.as_deref()
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres_name.is_some()
    }

    /// A migrated pool of `max_size` connections.
    pub fn connect(&self, max_size: u32) -> Db {
        let db = Db::connect(
            &self.database_url(),
            &PoolOptions {
                max_size,
                ..Default::default()
            },
        )
        .expect("connect");
        db.migrate().expect("migrate");
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.postgres_name
            && let Ok(mut admin) = PgConnection::establish(&postgres_admin_url())
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin);
        }
    }
}

/// The app on port 0 with its own database, served in the background.
#[allow(dead_code)] // `db` is for tests that look behind the HTTP answers.
pub struct TestApp {
    /// `PUBLIC_BASE_URL` (by default the bound address).
    pub address: String,
    /// The bound address, `http://127.0.0.1:PORT`, whatever `PUBLIC_BASE_URL` says.
    pub local_address: String,
    pub db: Db,
    /// The app's shared state (its caches, its checkout).
    pub state: actix_web::web::Data<kicc_checkout::web::AppState>,
    pub client: reqwest::Client,
    /// Its reconciler, for passes on demand.
    pub reconciler: std::sync::Arc<kicc_checkout::checkout::reconciler::Reconciler>,
    _test_db: Option<TestDb>,
}

impl TestApp {
    pub async fn spawn(test_db: TestDb) -> Self {
        Self::spawn_with(test_db, &[]).await
    }

    /// `vars` override the environment the app would read (everything else at its default).
    pub async fn spawn_with(test_db: TestDb, vars: &[(&'static str, &str)]) -> Self {
        let url = test_db.url.clone();
        Self::spawn_on(&url, vars, Some(test_db)).await
    }

    /// Another instance on the same database as `first` (it does not own the database).
    pub async fn spawn_beside(first: &TestApp, vars: &[(&'static str, &str)]) -> Self {
        let url = first
            ._test_db
            .as_ref()
            .expect("the first instance owns the database")
            .url
            .clone();
        Self::spawn_on(&url, vars, None).await
    }

    async fn spawn_on(url: &str, vars: &[(&'static str, &str)], test_db: Option<TestDb>) -> Self {
        let url = url.to_owned();
        let vars: Vec<(&'static str, String)> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let config = Config::from_lookup(|var| {
            if let Some((_, v)) = vars.iter().find(|(k, _)| *k == var) {
                return Ok(Some(v.clone()));
            }
            Ok(match var {
                "DATABASE_URL" => Some(url.clone()),
                "BIND_ADDR" => Some("127.0.0.1:0".to_owned()),
                // Tests start many checkouts from 127.0.0.1; the limit's own test sets it low.
                "CHECKOUT_RATE_LIMIT" => Some("1000000".to_owned()),
                _ => None,
            })
        })
        .expect("test configuration");
        let app = Application::build(config).await.expect("app builds");
        let address = app.base_url().to_owned();
        let local_address = format!("http://{}", app.local_addr());
        let db = app.state().db.clone();
        let state = app.state().clone();
        let reconciler = app.reconciler().clone();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .expect("client");
        Self {
            address,
            local_address,
            db,
            state,
            client,
            reconciler,
            _test_db: test_db,
        }
    }

    /// One reconciler pass now.
    pub async fn reconcile(&self) -> kicc_checkout::checkout::reconciler::PassReport {
        self.reconciler.pass().await.expect("reconciler pass")
    }

    /// The shopper presses Pay on the mounted sandbox's WeChat page of `pg_cno`; the page it
    /// answers (the return form, with its authorizationId, unless the scenario keeps it).
    pub async fn press_pay(&self, pg_cno: &str) -> String {
        self.client
            .post(format!("{}/sandbox/wechat/pay/{pg_cno}", self.address))
            .form(&[("action", "pay")])
            .send()
            .await
            .expect("the payment page answers")
            .text()
            .await
            .expect("the payment page's body")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// This browser's shop CSRF token, read from a product page's form (its cookie lands in the
    /// client's cookie store, as in a browser).
    pub async fn csrf_token(&self) -> String {
        let html = self
            .get("/products/STICKER-PACK")
            .await
            .text()
            .await
            .unwrap();
        hidden_field(&html, "csrf").expect("the product form carries a CSRF token")
    }

    /// A shop form (cart, checkout) posted as its page would: with this browser's CSRF token.
    pub async fn post_shop_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf_token().await;
        let mut fields = form.to_vec();
        fields.push(("csrf", &token));
        self.post_form(path, &fields).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .form(form)
            .send()
            .await
            .expect("request sent")
    }
}

impl TestApp {
    /// A ₩24,000 WeChat order (one canvas tote) placed through the JSON API and registered at
    /// KICC: (shopOrderNo, pgCno).
    pub async fn tote_order(&self) -> (String, String) {
        let created: serde_json::Value = self
            .client
            .post(format!("{}/api/orders", self.address))
            .json(&serde_json::json!({"items": [{"sku": "CANVAS-TOTE", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                          "customer": {"name": "Ann", "email": "ann@example.com", "phone": "01012345678", "address": "Seoul"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = |key: &str| {
            created[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key}: {created}"))
                .to_owned()
        };
        (text("shopOrderNo"), text("pgCno"))
    }
}

/// Spec 04's approval notification body (its field table; spec 04 prints no example) with the
/// given values.
pub fn approval_notification(
    no: &str,
    pg_cno: &str,
    amount: i64,
    currency: &str,
) -> serde_json::Value {
    let mut body: serde_json::Value = serde_json::from_str(include_str!(
        "../fixtures/spec/04-notification-from-table.json"
    ))
    .unwrap();
    body["shopOrderNo"] = serde_json::json!(no);
    body["pgCno"] = serde_json::json!(pg_cno);
    body["amountInfo"] = serde_json::json!({"currency": currency, "amount": amount});
    body
}

/// Spec 05's cancellation notification body with the given values (the amount as a string, as
/// KICC's examples write it).
pub fn cancel_notification(
    no: &str,
    pg_cno: &str,
    cancel_pg_cno: &str,
    amount: i64,
    currency: &str,
) -> serde_json::Value {
    let mut body: serde_json::Value = serde_json::from_str(include_str!(
        "../fixtures/spec/05-notification-from-table.json"
    ))
    .unwrap();
    body["shopOrderNo"] = serde_json::json!(no);
    body["pgCno"] = serde_json::json!(pg_cno);
    body["cancelPgCno"] = serde_json::json!(cancel_pg_cno);
    body["amountInfo"] = serde_json::json!({"currency": currency, "amount": amount.to_string()});
    body
}

/// An order of one sticker pack (₩1,000) in status `created`.
pub fn sample_order(conn: &mut kicc_checkout::db::AnyConnection) -> Order {
    let unit = Money::from_minor(1000, Currency::Krw).unwrap();
    let new = orders::NewOrder {
        shop_order_no: ShopOrderNo::generate(chrono::Utc::now()),
        pay_method: PayMethod::Wechat,
        trade_type: Some(TradeType::Native),
        goods_name: GoodsName::parse("Sticker Pack").unwrap(),
        customer: Customer::parse(
            "User123",
            "John Doe",
            "test@email.com",
            "01012345678",
            "Seoul, Korea",
        )
        .unwrap(),
        lines: vec![OrderLine {
            sku: "STICKER-PACK".into(),
            name: "Sticker Pack".into(),
            unit_price: unit,
            quantity: 1,
            line_total: unit,
        }],
        idempotency_key: None,
        expires_at: None,
    };
    orders::insert(conn, &new, "test").expect("order inserted")
}

/// What a [`RawServer`] answers.
pub enum RawReply {
    Json(serde_json::Value),
    Status(u16, String),
    Text(String),
    /// Waits this long, then answers the JSON.
    Late(std::time::Duration, serde_json::Value),
}

/// A request a [`RawServer`] received.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

type RawHandler = dyn Fn(&RawRequest) -> RawReply + Send + Sync;

/// A plain HTTP server on port 0 that answers what the test says — a gateway that misbehaves on
/// purpose (timeouts, HTTP 500, non-JSON) over real HTTP. Every request is kept.
pub struct RawServer {
    pub base: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<RawRequest>>>,
}

impl RawServer {
    pub fn start(handler: impl Fn(&RawRequest) -> RawReply + Send + Sync + 'static) -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let handler: std::sync::Arc<RawHandler> = std::sync::Arc::new(handler);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = received.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            let handler = handler.clone();
            let seen = seen.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let handler = handler.clone();
                let seen = seen.clone();
                async move {
                    let request = RawRequest {
                        path: req.path().to_owned(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_owned())
                            })
                            .collect(),
                        body: body.to_vec(),
                    };
                    let reply = {
                        let request = request.clone();
                        tokio::task::spawn_blocking(move || handler(&request))
                            .await
                            .unwrap()
                    };
                    seen.lock().unwrap().push(request);
                    match reply {
                        RawReply::Json(v) => HttpResponse::Ok().json(v),
                        RawReply::Status(code, body) => HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(code).unwrap(),
                        )
                        .body(body),
                        RawReply::Text(t) => HttpResponse::Ok().content_type("text/html").body(t),
                        RawReply::Late(wait, v) => {
                            tokio::time::sleep(wait).await;
                            HttpResponse::Ok().json(v)
                        }
                    }
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { base, received }
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.received.lock().unwrap().clone()
    }
}

/// A client for `api_base` with the sandbox credentials and a short timeout.
pub fn kicc_client(
    db: &Db,
    api_base: &str,
    timeout: std::time::Duration,
) -> kicc_checkout::kicc::KiccClient {
    let config = Config::from_lookup(|_| Ok(None)).expect("default config");
    let mut settings = kicc_checkout::kicc::ClientSettings::from_config(&config, api_base);
    settings.timeout = timeout;
    kicc_checkout::kicc::KiccClient::new(settings, db.clone()).expect("client")
}

/// The value of the input called `name` in an HTML page (forms of the app and the sandbox).
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.to_owned())
}

/// A logger that keeps every record (all levels, all crates) of this test process.
pub struct LogCapture(std::sync::Mutex<Vec<String>>);

impl LogCapture {
    /// Everything logged so far, one record a line.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push(format!(
            "{} {} {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

/// Installs the capturing logger at trace level, once per process (tests that read logs share
/// it when they run in one process, as under `cargo test`).
pub fn capture_logs() -> &'static LogCapture {
    static CAPTURE: LogCapture = LogCapture(std::sync::Mutex::new(Vec::new()));
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in the test process");
        log::set_max_level(log::LevelFilter::Trace);
    });
    &CAPTURE
}
