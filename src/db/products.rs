//! The catalog's rows and queries.

use diesel::prelude::*;

use super::schema::products;
use super::{AnyConnection, DbError, on_backend};
use crate::domain::{Currency, Money, Product};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = products)]
struct ProductRow {
    sku: String,
    name: String,
    description: String,
    price_krw: i64,
    price_usd: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = DbError;

    fn try_from(row: ProductRow) -> Result<Self, DbError> {
        let corrupt = |e: crate::domain::ValidationError| {
            DbError::Corrupt(format!("product {}: {e}", row.sku))
        };
        Ok(Product {
            price_krw: Money::from_minor(row.price_krw, Currency::Krw).map_err(corrupt)?,
            price_usd: Money::from_minor(row.price_usd, Currency::Usd).map_err(corrupt)?,
            sku: row.sku,
            name: row.name,
            description: row.description,
        })
    }
}

/// Products on sale, in catalog order.
pub fn list_active(conn: &mut AnyConnection) -> Result<Vec<Product>, DbError> {
    on_backend!(conn, c => products::table
        .filter(products::active.eq(true))
        .order((products::position.asc(), products::sku.asc()))
        .select(ProductRow::as_select())
        .load(c))?
    .into_iter()
    .map(Product::try_from)
    .collect()
}

/// One product on sale by its SKU.
pub fn find_active(conn: &mut AnyConnection, sku: &str) -> Result<Option<Product>, DbError> {
    products::table
        .filter(products::sku.eq(sku))
        .filter(products::active.eq(true))
        .select(ProductRow::as_select())
        .get_result(conn)
        .optional()?
        .map(Product::try_from)
        .transpose()
}
