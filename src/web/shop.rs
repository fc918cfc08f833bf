//! The shop's pages: the catalog and a product.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use actix_web::web::{self, Bytes};
use askama::Template;

use super::AppState;
use super::csrf::ShopCsrf;
use super::error::WebError;
use super::pages::{CatalogPage, Layout, ProductPage, ProductView};
use crate::db::products;

/// `GET /`: every product on sale.
pub async fn catalog(state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let html = match state.catalog_page.fresh() {
        Some(html) => html,
        None => {
            let products = state.db.run(products::list_active).await?;
            let page = CatalogPage {
                layout: Layout::new("Catalog", state.config.is_sandbox()),
                products: products.iter().map(ProductView::from).collect(),
            };
            let html = Bytes::from(page.render().map_err(|e| WebError::Render(e.to_string()))?);
            state.catalog_page.store(html.clone());
            html
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(html))
}

/// The catalog page as last rendered, for a short while: the same for every shopper (no form,
/// no cookie), and the most requested page. Prices shown may lag a change by `ttl`; an order's
/// price is always read from the database when it is placed.
pub struct PageCache {
    ttl: Duration,
    page: Mutex<Option<(Instant, Bytes)>>,
}

impl PageCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            page: Mutex::new(None),
        }
    }

    fn fresh(&self) -> Option<Bytes> {
        let page = self.page.lock().expect("page cache");
        page.as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, html)| html.clone())
    }

    fn store(&self, html: Bytes) {
        *self.page.lock().expect("page cache") = Some((Instant::now(), html));
    }
}

/// `GET /products/{sku}`.
pub async fn product(
    state: web::Data<AppState>,
    sku: web::Path<String>,
    csrf: ShopCsrf,
) -> Result<ProductPage, WebError> {
    let sku = sku.into_inner();
    let product = state
        .db
        .run(move |conn| products::find_active(conn, &sku))
        .await?
        .ok_or_else(|| WebError::NotFound {
            what: "product".into(),
        })?;
    Ok(ProductPage {
        layout: Layout::new(product.name.clone(), state.config.is_sandbox()),
        product: ProductView::from(&product),
        csrf: csrf.token().to_owned(),
    })
}
