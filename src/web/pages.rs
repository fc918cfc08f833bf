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
    /// This browser's CSRF token, for the form.
    pub csrf: String,
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
    /// This browser's CSRF token, for the forms.
    pub csrf: String,
}

/// A message next to one input of a form.
pub struct FieldError {
    /// The input's name (`name`, `email`, `phone`, `address`, `currency`, `pay_method`).
    pub input: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn from_validation(input: &'static str, error: &crate::domain::ValidationError) -> Self {
        Self {
            input,
            message: error.message.clone(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "checkout.html")]
pub struct CheckoutPage {
    pub layout: Layout,
    pub lines: Vec<CartLineView>,
    pub total: String,
    pub currency: String,
    pub kiccpay_offered: bool,
    pub pay_method: String,
    /// The values as posted (kept on error).
    pub form: crate::web::checkout::CheckoutForm,
    pub errors: Vec<FieldError>,
    /// A message above the form (KICC's refusal, gateway trouble).
    pub banner: Option<String>,
    /// This browser's CSRF token, for the form.
    pub csrf: String,
}

impl CheckoutPage {
    /// The message for one input, if any.
    pub fn error_for(&self, input: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.input == input)
            .map(|e| e.message.as_str())
    }
}

pub struct OrderLineView {
    pub name: String,
    pub quantity: i32,
    pub total: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "order.html")]
pub struct OrderPage {
    pub layout: Layout,
    pub shop_order_no: String,
    pub status: String,
    pub heading: String,
    pub amount: String,
    pub cancelled: Option<String>,
    pub goods_name: String,
    pub pay_method: String,
    pub pg_cno: Option<String>,
    pub approval_no: Option<String>,
    pub approval_date: Option<String>,
    /// Inline SVG of the payment page URL while a native payment waits (empty otherwise).
    pub qr_svg: String,
    /// The page polls for a new status while this is true.
    pub waiting: bool,
    /// Seconds left before the payment expires (the countdown).
    pub expires_in: i64,
    pub expires_at: String,
    pub lines: Vec<OrderLineView>,
    /// Why a payment that arrived late was refunded, in the shopper's words.
    pub late_refund: Option<String>,
}
