//! HTTP: routes, handlers (thin: extract → call one function → page), pages, errors, metrics.
//! Handlers never touch diesel; they call `Db::run` with a repository function.

mod assets;
pub mod cart;
pub mod error;
mod health;
pub mod metrics;
pub mod pages;
pub mod qr;
mod shop;

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
    /// The one KICC client (to KICC, or to the sandbox over HTTP in sandbox mode).
    pub kicc: Arc<crate::kicc::KiccClient>,
    /// Signs the cart cookie; generated once and kept in `app_keys`, shared by all instances.
    pub cookie_key: actix_web::cookie::Key,
}

/// Every route of the app (DESIGN §3), in one table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(shop::catalog))
        .route("/products/{sku}", web::get().to(shop::product))
        .route("/cart", web::get().to(cart::show))
        .route("/cart/items", web::post().to(cart::add))
        .route("/cart/items/{sku}/remove", web::post().to(cart::remove))
        .route("/healthz", web::get().to(health::healthz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/static/{file}", web::get().to(assets::serve));
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
