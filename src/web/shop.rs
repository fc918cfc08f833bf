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
    let html = match state.catalog_page.lookup() {
        Lookup::Serve(html) => html,
        Lookup::Render(refresh) => {
            let products = state.db.run(products::list_active).await?;
            let page = CatalogPage {
                layout: Layout::new("Catalog", state.config.is_sandbox()),
                products: products.iter().map(ProductView::from).collect(),
            };
            let html = Bytes::from(page.render().map_err(|e| WebError::Render(e.to_string()))?);
            refresh.store(html.clone());
            html
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(html))
}

/// The catalog page as last rendered, for a short while: the same for every shopper (no form,
/// no cookie), and the most requested page. Prices shown may lag a change by `ttl` and one
/// refresh; an order's price is always read from the database when it is placed.
///
/// Once stale, the page is refreshed by one request while every other keeps getting the stale
/// page (stale-while-revalidate): before, every request arriving during a refresh read the
/// database too, and on PostgreSQL one slow read then held them all (docs/BENCHMARKS.md:
/// catalog p99).
pub struct PageCache {
    ttl: Duration,
    page: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    page: Option<(Instant, Bytes)>,
    refreshing: bool,
}

/// What a request does for the page.
pub enum Lookup<'a> {
    Serve(Bytes),
    /// Render it, and store it through the [`Refresh`].
    Render(Refresh<'a>),
}

/// The right to store the next page. Dropped without storing (the render failed), it lets the
/// next request try.
pub struct Refresh<'a>(&'a PageCache);

impl Refresh<'_> {
    pub fn store(self, html: Bytes) {
        self.0.cached().page = Some((Instant::now(), html));
    }
}

impl Drop for Refresh<'_> {
    fn drop(&mut self) {
        self.0.cached().refreshing = false;
    }
}

impl PageCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            page: Mutex::new(Cached::default()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.page
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The page, fresh or (while another request refreshes it) stale; or the turn to render
    /// it. With no page yet, every request renders.
    pub fn lookup(&self) -> Lookup<'_> {
        let mut cached = self.cached();
        match &cached.page {
            Some((at, html)) if at.elapsed() < self.ttl || cached.refreshing => {
                Lookup::Serve(html.clone())
            }
            _ => {
                cached.refreshing = true;
                Lookup::Render(Refresh(self))
            }
        }
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

#[cfg(test)]
mod page_cache {
    use std::time::Duration;

    use actix_web::web::Bytes;

    use super::{Lookup, PageCache};

    fn served(lookup: Lookup<'_>) -> Option<Bytes> {
        match lookup {
            Lookup::Serve(html) => Some(html),
            Lookup::Render(_) => None,
        }
    }

    #[test]
    fn a_stale_page_is_refreshed_by_one_request_while_the_others_get_it() {
        let cache = PageCache::new(Duration::from_millis(20));
        let Lookup::Render(first) = cache.lookup() else {
            panic!("nothing to serve yet");
        };
        first.store(Bytes::from_static(b"v1"));
        assert_eq!(served(cache.lookup()), Some(Bytes::from_static(b"v1")));

        std::thread::sleep(Duration::from_millis(30));
        let Lookup::Render(refresh) = cache.lookup() else {
            panic!("a stale page is refreshed");
        };
        // While it renders, the others get the stale page instead of reading the database.
        assert_eq!(served(cache.lookup()), Some(Bytes::from_static(b"v1")));
        refresh.store(Bytes::from_static(b"v2"));
        assert_eq!(served(cache.lookup()), Some(Bytes::from_static(b"v2")));
    }

    #[test]
    fn a_failed_refresh_lets_the_next_request_try() {
        let cache = PageCache::new(Duration::ZERO);
        let Lookup::Render(first) = cache.lookup() else {
            panic!("nothing to serve yet");
        };
        first.store(Bytes::from_static(b"v1"));
        let Lookup::Render(failed) = cache.lookup() else {
            panic!("stale at once");
        };
        drop(failed);
        assert!(
            served(cache.lookup()).is_none(),
            "the next request refreshes"
        );
    }
}
