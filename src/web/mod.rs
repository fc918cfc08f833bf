//! HTTP: routes, handlers (thin: extract → call one function → page), pages, errors, metrics.
//! Handlers never touch diesel; they call `Db::run` with a repository function.

pub mod admin;
pub mod admin_auth;
pub mod api;
mod assets;
pub mod cart;
pub mod checkout;
pub mod client_ip;
pub mod csrf;
pub mod error;
mod health;
pub mod metrics;
pub mod pages;
pub mod qr;
pub mod rate_limit;
mod review;
pub mod security;
pub mod shop;
pub mod slow_body;
mod webhooks;

use std::sync::Arc;

use actix_web::web;

use crate::config::Config;
use crate::db::Db;
pub use error::WebError;
pub use metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// `PUBLIC_BASE_URL`, or `http://{bound address}`: the base of returnUrl and notifyUrl.
    pub base_url: String,
    /// Dashboard sign-in (argon2 hash of `ADMIN_PASSWORD`, failure limits).
    pub admin: admin_auth::AdminAuth,
    /// The background reconciler (its counters go to `/metrics`).
    pub reconciler: Arc<crate::checkout::reconciler::Reconciler>,
    /// Orders and payments: placing, returnUrl, approval saga, compensations.
    pub checkout: Arc<crate::checkout::Checkout>,
    /// Signs the cart cookie; generated once and kept in `app_keys`, shared by all instances.
    pub cookie_key: actix_web::cookie::Key,
    /// The catalog page as last rendered (a second or two).
    pub catalog_page: shop::PageCache,
    /// The integration review started from `/review` (sandbox mode).
    pub review: Arc<review::ReviewBoard>,
    /// Checkouts started per client address (`CHECKOUT_RATE_LIMIT` a minute).
    pub checkout_limit: rate_limit::RateLimiter,
    /// QR images of the payment page URLs of recent native orders (encoded once per URL).
    pub qr: qr::QrCache,
    /// How many refused webhook deliveries are stored (per source, per minute).
    pub refused_webhooks: webhooks::RefusedStore,
}

impl AppState {
    /// Served over https (`PUBLIC_BASE_URL`): cookies are `Secure`.
    pub fn https(&self) -> bool {
        security::is_https(&self.base_url)
    }

    /// Counts a checkout (`POST /checkout`, `POST /api/orders`) against the client's address
    /// (behind `TRUSTED_PROXIES`, the address they forwarded); `Err(seconds to wait)` when over.
    pub fn limit_checkout(&self, req: &actix_web::HttpRequest) -> Result<(), u64> {
        let ip = client_ip::of_request(req, &self.config.trusted_proxies);
        self.checkout_limit.take(ip).map_err(|wait| {
            log::warn!("checkout from {ip}: over CHECKOUT_RATE_LIMIT");
            // Whole seconds, rounded up: a client that waits that long gets through.
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Every route of the app (DESIGN §3), in one table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // KICC's webhooks first: the router tries routes in this order (a regex per dynamic
    // pattern), and a burst of notifications is the load that must be answered fastest.
    cfg.route("/webhooks/kicc/payment", web::post().to(webhooks::receive))
        .route("/webhooks/kicc/cancel", web::post().to(webhooks::receive))
        .route("/", web::get().to(shop::catalog))
        .route("/products/{sku}", web::get().to(shop::product))
        .route("/cart", web::get().to(cart::show))
        .route("/cart/items", web::post().to(cart::add))
        .route("/cart/items/{sku}/remove", web::post().to(cart::remove))
        .route("/checkout", web::get().to(checkout::form))
        .route("/checkout", web::post().to(checkout::submit))
        .route("/checkout/return", web::get().to(checkout::payment_return))
        .route("/checkout/return", web::post().to(checkout::payment_return))
        .route("/orders/{no}", web::get().to(checkout::order_page))
        .route("/orders/{no}/qr.svg", web::get().to(checkout::qr_svg))
        .route("/orders/{no}/qr.png", web::get().to(checkout::qr_png))
        .route("/admin/login", web::get().to(admin::login_form))
        .route("/admin/login", web::post().to(admin::login))
        .route("/admin/logout", web::post().to(admin::logout))
        .route("/admin", web::get().to(admin::home))
        .route("/admin/orders", web::get().to(admin::orders))
        .route("/admin/orders.csv", web::get().to(admin::orders_csv))
        .route("/admin/orders/{no}", web::get().to(admin::order))
        .route("/admin/orders/{no}/cancel", web::post().to(admin::cancel))
        .route("/admin/orders/{no}/sync", web::post().to(admin::sync))
        .route("/admin/webhooks/unmatched", web::get().to(admin::unmatched))
        .route("/api/products", web::get().to(api::list_products))
        .route("/api/orders", web::post().to(api::create_order))
        .route("/api/orders/{no}", web::get().to(api::get_order))
        .route("/review", web::get().to(review::page))
        .route("/review", web::post().to(review::start))
        .route("/review/run.json", web::get().to(review::status))
        .route("/review/report.html", web::get().to(review::report_html))
        .route("/review/report.json", web::get().to(review::report_json))
        .route("/healthz", web::get().to(health::healthz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/static/{file}", web::get().to(assets::serve));
}

/// A page with a status other than 200 (a form shown again with its errors, …).
pub fn render(
    page: &impl askama::Template,
    status: actix_web::http::StatusCode,
) -> actix_web::HttpResponse {
    match page.render() {
        Ok(html) => actix_web::HttpResponse::build(status)
            .content_type(actix_web::http::header::ContentType::html())
            .body(html),
        Err(e) => actix_web::ResponseError::error_response(&WebError::Render(e.to_string())),
    }
}

/// The response for every path no route matches: an HTML 404 page.
pub async fn not_found(state: web::Data<AppState>) -> actix_web::HttpResponse {
    error::render_error_page(
        &state,
        actix_web::http::StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address. The catalog has everything we sell.",
    )
}
