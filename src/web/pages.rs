//! Page structs: what each template gets, already formatted for display.

use askama::Template;
use askama_web::WebTemplate;

use crate::domain::Product;

/// The base layout's data, part of every page.
pub struct Layout {
    pub title: String,
    /// Shows the SANDBOX badge.
    pub sandbox: bool,
}

impl Layout {
    pub fn new(title: impl Into<String>, sandbox: bool) -> Self {
        Self {
            title: title.into(),
            sandbox,
        }
    }
}

/// A product as shown in the catalog: prices formatted per currency (₩12,000; $12.03).
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_krw: String,
    pub price_usd: String,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        Self {
            sku: p.sku.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            price_krw: p.price_krw.to_string(),
            price_usd: p.price_usd.to_string(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "index.html")]
pub struct CatalogPage {
    pub layout: Layout,
    pub products: Vec<ProductView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "product.html")]
pub struct ProductPage {
    pub layout: Layout,
    pub product: ProductView,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub layout: Layout,
    pub status: u16,
    pub heading: &'a str,
    pub message: &'a str,
}

pub struct CartLineView {
    pub sku: String,
    pub name: String,
    pub unit_price: String,
    pub quantity: u32,
    pub total: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "cart.html")]
pub struct CartPage {
    pub layout: Layout,
    /// The currency the cart is priced in (`KRW` or `USD`), and the other one to switch to.
    pub currency: String,
    pub other_currency: String,
    pub lines: Vec<CartLineView>,
    pub total: String,
}
