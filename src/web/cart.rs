//! The cart: SKUs and quantities in a signed cookie (no prices: those come from the database
//! whenever the cart is shown or ordered). Add, change quantity, remove.

use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::csrf::ShopCsrf;
use super::error::WebError;
use super::pages::{CartLineView, CartPage, Layout};
use crate::db::products;
use crate::domain::{Currency, Money, Product};

pub const COOKIE: &str = "cart";
pub const MAX_LINES: usize = 20;
pub const MAX_QUANTITY: u32 = 99;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    #[serde(rename = "l")]
    lines: Vec<CartLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    #[serde(rename = "s")]
    pub sku: String,
    #[serde(rename = "q")]
    pub quantity: u32,
}

impl Cart {
    /// The cart of this request; empty when there is none or its signature does not verify.
    pub fn from_request(req: &HttpRequest, key: &Key) -> Self {
        let Some(cookie) = req.cookie(COOKIE) else {
            return Cart::default();
        };
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        jar.signed(key)
            .get(COOKIE)
            .and_then(|c| serde_json::from_str::<Cart>(c.value()).ok())
            .map(Cart::sanitized)
            .unwrap_or_default()
    }

    /// Drops lines a (validly signed but old) cookie might carry beyond today's limits.
    fn sanitized(mut self) -> Self {
        self.lines
            .retain(|l| (1..=MAX_QUANTITY).contains(&l.quantity));
        self.lines.truncate(MAX_LINES);
        self
    }

    pub fn lines(&self) -> &[CartLine] {
        &self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds `quantity` of `sku` (capped at the maximum per line).
    pub fn add(&mut self, sku: &str, quantity: u32) -> Result<(), String> {
        if let Some(line) = self.lines.iter_mut().find(|l| l.sku == sku) {
            line.quantity = (line.quantity + quantity).min(MAX_QUANTITY);
            return Ok(());
        }
        if self.lines.len() >= MAX_LINES {
            return Err(format!(
                "A cart holds at most {MAX_LINES} different products."
            ));
        }
        self.lines.push(CartLine {
            sku: sku.to_owned(),
            quantity: quantity.min(MAX_QUANTITY),
        });
        Ok(())
    }

    /// Sets the quantity of a line; 0 removes it.
    pub fn set(&mut self, sku: &str, quantity: u32) -> Result<(), String> {
        if quantity == 0 {
            self.remove(sku);
            return Ok(());
        }
        match self.lines.iter_mut().find(|l| l.sku == sku) {
            Some(line) => {
                line.quantity = quantity.min(MAX_QUANTITY);
                Ok(())
            }
            None => self.add(sku, quantity),
        }
    }

    pub fn remove(&mut self, sku: &str) {
        self.lines.retain(|l| l.sku != sku);
    }

    /// The signed cookie holding this cart (HttpOnly; Secure when the shop is served over https).
    pub fn cookie(&self, key: &Key, secure: bool) -> Cookie<'static> {
        let value = serde_json::to_string(self).expect("cart serializes");
        let mut cookie = Cookie::new(COOKIE, value);
        cookie.set_path("/");
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_secure(secure);
        super::admin_auth::sign(key, cookie)
    }
}

/// A cart line priced from the catalog.
pub struct PricedLine {
    pub product: Product,
    pub quantity: u32,
    pub total: Money,
}

/// Prices the cart's lines in `currency` from the database; lines whose product is gone are
/// dropped. Returns the lines and their sum.
pub async fn price(
    state: &AppState,
    cart: &Cart,
    currency: Currency,
) -> Result<(Vec<PricedLine>, Money), WebError> {
    let catalog = state.db.run(products::list_active).await?;
    let mut lines = Vec::new();
    let mut sum = Money::zero(currency);
    for line in cart.lines() {
        let Some(product) = catalog.iter().find(|p| p.sku == line.sku) else {
            continue;
        };
        let total = product
            .price(currency)
            .checked_mul(i64::from(line.quantity))
            .ok_or_else(|| WebError::BadRequest("That cart is too large to price.".into()))?;
        sum = sum
            .checked_add(total)
            .ok_or_else(|| WebError::BadRequest("That cart is too large to price.".into()))?;
        lines.push(PricedLine {
            product: product.clone(),
            quantity: line.quantity,
            total,
        });
    }
    Ok((lines, sum))
}

/// `?currency=KRW|USD` (KRW when absent).
#[derive(Debug, Deserialize)]
pub struct CurrencyQuery {
    pub currency: Option<String>,
}

impl CurrencyQuery {
    pub fn currency(&self) -> Currency {
        self.currency
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(Currency::Krw)
    }
}

/// `GET /cart`.
pub async fn show(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CurrencyQuery>,
    csrf: ShopCsrf,
) -> Result<CartPage, WebError> {
    let cart = Cart::from_request(&req, &state.cookie_key);
    let currency = query.currency();
    let (lines, total) = price(&state, &cart, currency).await?;
    Ok(CartPage {
        layout: Layout::new("Cart", state.config.is_sandbox()),
        currency: currency.code().to_owned(),
        other_currency: match currency {
            Currency::Krw => "USD",
            Currency::Usd => "KRW",
        }
        .to_owned(),
        lines: lines
            .iter()
            .map(|l| CartLineView {
                sku: l.product.sku.clone(),
                name: l.product.name.clone(),
                unit_price: l.product.price(currency).to_string(),
                quantity: l.quantity,
                total: l.total.to_string(),
            })
            .collect(),
        total: total.to_string(),
        csrf: csrf.token().to_owned(),
    })
}

#[derive(Debug, Deserialize)]
pub struct CartItemForm {
    pub sku: String,
    pub quantity: Option<String>,
    /// `set` replaces the line's quantity; anything else adds to it.
    pub mode: Option<String>,
    #[serde(default)]
    pub csrf: String,
}

/// A form that carries nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfOnlyForm {
    #[serde(default)]
    pub csrf: String,
}

fn parse_quantity(text: Option<&str>, allow_zero: bool) -> Result<u32, WebError> {
    let text = text.map(str::trim).filter(|t| !t.is_empty()).unwrap_or("1");
    match text.parse::<u32>() {
        Ok(n) if n <= MAX_QUANTITY && (n > 0 || allow_zero) => Ok(n),
        _ => Err(WebError::BadRequest(format!(
            "`{text}` is not a quantity: use a whole number from {} to {MAX_QUANTITY}.",
            if allow_zero { 0 } else { 1 }
        ))),
    }
}

fn back_to_cart(state: &AppState, cart: &Cart) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/cart"))
        .cookie(cart.cookie(&state.cookie_key, state.https()))
        .finish()
}

/// `POST /cart/items`: add a product, or set its quantity (`mode=set`).
pub async fn add(
    state: web::Data<AppState>,
    req: HttpRequest,
    csrf: ShopCsrf,
    form: web::Form<CartItemForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    csrf.verify(&form.csrf)?;
    let setting = form.mode.as_deref() == Some("set");
    let quantity = parse_quantity(form.quantity.as_deref(), setting)?;
    let sku = form.sku.trim().to_owned();
    let lookup = sku.clone();
    state
        .db
        .run(move |conn| products::find_active(conn, &lookup))
        .await?
        .ok_or_else(|| WebError::NotFound {
            what: "product".into(),
        })?;
    let mut cart = Cart::from_request(&req, &state.cookie_key);
    let changed = if setting {
        cart.set(&sku, quantity)
    } else {
        cart.add(&sku, quantity)
    };
    changed.map_err(WebError::BadRequest)?;
    Ok(back_to_cart(&state, &cart))
}

/// `POST /cart/items/{sku}/remove`.
pub async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    sku: web::Path<String>,
    csrf: ShopCsrf,
    form: web::Form<CsrfOnlyForm>,
) -> Result<HttpResponse, WebError> {
    csrf.verify(&form.csrf)?;
    let mut cart = Cart::from_request(&req, &state.cookie_key);
    cart.remove(&sku);
    Ok(back_to_cart(&state, &cart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_set_remove_and_limits() {
        let mut cart = Cart::default();
        cart.add("MUG", 2).unwrap();
        cart.add("MUG", 3).unwrap();
        cart.add("TEE", 1).unwrap();
        assert_eq!(
            cart.lines()[0],
            CartLine {
                sku: "MUG".into(),
                quantity: 5
            }
        );
        cart.add("MUG", 99).unwrap();
        assert_eq!(cart.lines()[0].quantity, MAX_QUANTITY);
        cart.set("MUG", 4).unwrap();
        assert_eq!(cart.lines()[0].quantity, 4);
        cart.set("MUG", 0).unwrap();
        assert_eq!(cart.lines().len(), 1);
        cart.remove("TEE");
        assert!(cart.is_empty());
        for i in 0..MAX_LINES {
            cart.add(&format!("SKU{i}"), 1).unwrap();
        }
        assert!(cart.add("ONE-MORE", 1).is_err());
    }

    #[test]
    fn a_tampered_cookie_is_an_empty_cart() {
        let key = Key::generate();
        let mut cart = Cart::default();
        cart.add("MUG", 2).unwrap();
        let cookie = cart.cookie(&key, false);
        let good = actix_web::test::TestRequest::default()
            .cookie(cookie.clone())
            .to_http_request();
        assert_eq!(Cart::from_request(&good, &key), cart);
        let forged_value = cookie.value().replace("\"q\":2", "\"q\":9");
        let forged = actix_web::test::TestRequest::default()
            .cookie(Cookie::new(COOKIE, forged_value))
            .to_http_request();
        assert!(Cart::from_request(&forged, &key).is_empty());
        let other_key = actix_web::test::TestRequest::default()
            .cookie(cookie)
            .to_http_request();
        assert!(Cart::from_request(&other_key, &Key::generate()).is_empty());
    }
}
