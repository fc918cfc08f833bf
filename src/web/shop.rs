//! The shop's pages: the catalog and a product.

use actix_web::web;

use super::AppState;
use super::csrf::ShopCsrf;
use super::error::WebError;
use super::pages::{CatalogPage, Layout, ProductPage, ProductView};
use crate::db::products;

/// `GET /`: every product on sale.
pub async fn catalog(state: web::Data<AppState>) -> Result<CatalogPage, WebError> {
    let products = state.db.run(products::list_active).await?;
    Ok(CatalogPage {
        layout: Layout::new("Catalog", state.config.is_sandbox()),
        products: products.iter().map(ProductView::from).collect(),
    })
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
