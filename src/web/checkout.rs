//! The shopper's checkout pages: the form, placing the order, the returnUrl, the order page with
//! its QR (native) or result, and the QR images. Handlers stay thin: parse, call `Checkout`, page.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::cart::{Cart, CurrencyQuery, price};
use super::csrf::ShopCsrf;
use super::error::WebError;
use super::pages::{CartLineView, CheckoutPage, FieldError, Layout, OrderLineView, OrderPage};
use super::qr;
use crate::checkout::{
    CheckoutError, Device, IdempotencyKey, NextStep, OrderRequest, ReturnOutcome, ReturnParams,
};
use crate::db::orders;
use crate::domain::{Currency, Customer, Order, OrderStatus, PayMethod, ShopOrderNo, TradeType};

/// The checkout form as posted. Prices are not in it: they come from the catalog.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub pay_method: String,
    /// One key per rendered form: a second submit finds the order of the first.
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub device: String,
    /// This browser's CSRF token (`web::csrf`).
    #[serde(default)]
    pub csrf: String,
}

#[derive(Debug, Deserialize)]
pub struct DeviceQuery {
    pub device: Option<String>,
}

fn new_form_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Customer-facing names of KICC's field names, for messages next to the inputs.
fn input_for(field: &str) -> &'static str {
    match field {
        "customerName" => "name",
        "customerMail" => "email",
        "customerContactNo" => "phone",
        "customerAddr" => "address",
        "currency" => "currency",
        "payMethod" => "pay_method",
        _ => "form",
    }
}

async fn checkout_page(
    state: &AppState,
    csrf: &ShopCsrf,
    cart: &Cart,
    form: CheckoutForm,
    errors: Vec<FieldError>,
    banner: Option<String>,
) -> Result<CheckoutPage, WebError> {
    let currency = form.currency.parse().unwrap_or(Currency::Krw);
    let (lines, total) = price(state, cart, currency).await?;
    let key = if form.key.is_empty() {
        new_form_key()
    } else {
        form.key.clone()
    };
    Ok(CheckoutPage {
        layout: Layout::new("Checkout", state.config.is_sandbox()),
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
        currency: currency.code().to_owned(),
        kiccpay_offered: state.checkout.kiccpay_window.is_some(),
        pay_method: if form.pay_method.is_empty() {
            "wechat".into()
        } else {
            form.pay_method.clone()
        },
        form: CheckoutForm { key, ..form },
        errors,
        banner,
        csrf: csrf.token().to_owned(),
    })
}

/// `GET /checkout`.
pub async fn form(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CurrencyQuery>,
    csrf: ShopCsrf,
) -> Result<HttpResponse, WebError> {
    let cart = Cart::from_request(&req, &state.cookie_key);
    if cart.is_empty() {
        return Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/cart"))
            .finish());
    }
    let form = CheckoutForm {
        currency: query.currency().code().to_owned(),
        ..Default::default()
    };
    let page = checkout_page(&state, &csrf, &cart, form, Vec::new(), None).await?;
    Ok(super::render(&page, actix_web::http::StatusCode::OK))
}

/// Encodes a native order's QR on the blocking pool while the browser follows the 303 to its
/// order page, which then finds it in the cache: the encode (~150 µs, the mask search;
/// docs/BENCHMARKS.md "Hot paths") runs on no request's path and off the async workers. Only
/// for the shop's form, whose next request is that page; an API client may never ask for the
/// image, and a burst of API orders would evict each other's codes.
fn encode_qr_ahead(state: &web::Data<AppState>, order: &Order) {
    let Some(url) = qr_to_scan(order).map(str::to_owned) else {
        return;
    };
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = state.qr.get(&url) {
            log::warn!("QR of {url} not encoded: {e}");
        }
    });
}

/// The URL whose QR the order page shows: a pending native order's payment page.
fn qr_to_scan(order: &Order) -> Option<&str> {
    (order.status == OrderStatus::Pending && order.trade_type == Some(TradeType::Native))
        .then_some(order.payment_page_url.as_deref())
        .flatten()
}

/// `POST /checkout`: validate, place the order, then the QR page (desktop), a 303 to WeChat's
/// page (phone) or to the KICC Pay window.
pub async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<DeviceQuery>,
    csrf: ShopCsrf,
    form: web::Form<CheckoutForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    csrf.verify(&form.csrf)?;
    state
        .limit_checkout(&req)
        .map_err(|retry_after| WebError::TooManyRequests { retry_after })?;
    let cart = Cart::from_request(&req, &state.cookie_key);
    if cart.is_empty() {
        return Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/cart"))
            .finish());
    }
    let mut errors = Vec::new();
    let currency = form
        .currency
        .parse::<Currency>()
        .map_err(|e| errors.push(FieldError::from_validation("currency", &e)))
        .ok();
    let pay_method = form
        .pay_method
        .parse::<PayMethod>()
        .map_err(|e| errors.push(FieldError::from_validation("pay_method", &e)))
        .ok();
    let customer_id = crate::checkout::guest_customer_id(&form.email);
    let customer = Customer::parse(
        &customer_id,
        &form.name,
        &form.email,
        &form.phone,
        &form.address,
    )
    .map_err(|problems| {
        errors.extend(
            problems
                .iter()
                .map(|p| FieldError::from_validation(input_for(p.field), p)),
        );
    })
    .ok();
    let (Some(currency), Some(pay_method), Some(customer)) = (currency, pay_method, customer)
    else {
        let page = checkout_page(&state, &csrf, &cart, form, errors, None).await?;
        return Ok(super::render(
            &page,
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
        ));
    };
    let device = query
        .device
        .as_deref()
        .or(Some(form.device.as_str()).filter(|d| !d.is_empty()))
        .and_then(Device::parse)
        .unwrap_or_else(|| {
            Device::from_user_agent(
                req.headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        });
    let request = OrderRequest {
        items: cart
            .lines()
            .iter()
            .map(|l| (l.sku.clone(), l.quantity))
            .collect(),
        currency,
        pay_method,
        device,
        customer,
        // The form's key is this browser's: scoped to its CSRF cookie, so a key copied from
        // another browser's form finds nothing.
        idempotency_key: Some(form.key.clone())
            .filter(|k| !k.is_empty() && k.len() <= 64)
            .map(|k| IdempotencyKey::of_browser(csrf.token(), k)),
    };
    match state.checkout.place_order(request).await {
        Ok(placed) => Ok(match placed.next {
            NextStep::Redirect(url) => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, url))
                .finish(),
            NextStep::OrderPage => {
                encode_qr_ahead(&state, &placed.order);
                HttpResponse::SeeOther()
                    .insert_header((
                        header::LOCATION,
                        format!("/orders/{}", placed.order.shop_order_no),
                    ))
                    .finish()
            }
        }),
        Err(CheckoutError::IdempotencyKeyReused) => {
            // This form was submitted before with other values (the Back button, then an
            // edit): the first order stands; a fresh key lets the shopper place this one.
            let form = CheckoutForm {
                key: String::new(),
                ..form
            };
            let banner = "This form was already sent with other details. Check them and submit \
                          again to place a new order."
                .to_owned();
            let page = checkout_page(&state, &csrf, &cart, form, Vec::new(), Some(banner)).await?;
            Ok(super::render(&page, actix_web::http::StatusCode::CONFLICT))
        }
        Err(e @ (CheckoutError::Declined { .. } | CheckoutError::GatewayUnavailable { .. })) => {
            let banner = match e {
                // KICC's own words (with WeChat's decoded detail).
                CheckoutError::Declined { message, .. } => {
                    format!("The payment could not be started: {message}. You can try again.")
                }
                _ => "The payment service did not answer. Nothing was charged; please try again."
                    .to_owned(),
            };
            // The values kept, and a fresh form key so trying again makes a new order.
            let form = CheckoutForm {
                key: String::new(),
                ..form
            };
            let page = checkout_page(&state, &csrf, &cart, form, Vec::new(), Some(banner)).await?;
            Ok(super::render(
                &page,
                actix_web::http::StatusCode::BAD_GATEWAY,
            ))
        }
        Err(e) => Err(WebError::from(e)),
    }
}

/// `GET|POST /checkout/return`: what the payment window sends back (form POST, or query).
pub async fn payment_return(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, WebError> {
    let body = body.map_err(|e| WebError::from_payload(&e))?;
    let params = ReturnParams::parse(req.query_string(), &body);
    match state.checkout.handle_return(params).await? {
        ReturnOutcome::UnknownOrder => Err(WebError::NotFound {
            what: "order".into(),
        }),
        ReturnOutcome::Order(order) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/orders/{}", order.shop_order_no)))
            .finish()),
    }
}

/// An order by its number from a URL: 404 for anything that is not one.
pub(super) async fn load_order(state: &AppState, no: &str) -> Result<Order, WebError> {
    let no = ShopOrderNo::parse(no).map_err(|_| WebError::NotFound {
        what: "order".into(),
    })?;
    state
        .db
        .run(move |conn| orders::find_by_shop_order_no(conn, &no))
        .await?
        .ok_or_else(|| WebError::NotFound {
            what: "order".into(),
        })
}

/// `GET /orders/{shopOrderNo}`: the QR while a native payment waits, else the result.
pub async fn order_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    no: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let order = load_order(&state, &no).await?;
    let lines = {
        let order = order.clone();
        state
            .db
            .run(move |conn| orders::lines(conn, &order))
            .await?
    };
    let late_refund = if matches!(
        order.status,
        OrderStatus::Compensating | OrderStatus::Cancelled
    ) {
        let id = order.id;
        state
            .db
            .run(move |conn| orders::late_refund_from(conn, id))
            .await?
            .map(late_refund_text)
    } else {
        None
    };
    let qr_svg = qr_to_scan(&order)
        .and_then(|url| state.qr.get(url).ok())
        .map(|images| images.svg().to_owned());
    let now = crate::db::now();
    let expires_in = order
        .expires_at
        .map(|at| (at - now).num_seconds().max(0))
        .unwrap_or(0);
    let page = OrderPage {
        layout: Layout::new(
            format!("Order {}", order.shop_order_no),
            state.config.is_sandbox(),
        ),
        shop_order_no: order.shop_order_no.to_string(),
        status: order.status.as_str().to_owned(),
        heading: heading(&order).to_owned(),
        amount: order.amount.to_string(),
        cancelled: (!order.cancelled.is_zero()).then(|| order.cancelled.to_string()),
        goods_name: order.goods_name.clone(),
        pay_method: order.pay_method.label().to_owned(),
        pg_cno: order.pg_cno.clone(),
        approval_no: order.approval_no.clone(),
        approval_date: order.approval_date.as_deref().map(format_kicc_time),
        qr_svg: qr_svg.unwrap_or_default(),
        waiting: matches!(
            order.status,
            OrderStatus::Pending
                | OrderStatus::Authorized
                | OrderStatus::Approving
                | OrderStatus::Compensating
        ),
        expires_in,
        expires_at: order
            .expires_at
            .map(|t| format!("{} UTC", t.format("%H:%M")))
            .unwrap_or_default(),
        lines: lines
            .iter()
            .map(|l| OrderLineView {
                name: l.name.clone(),
                quantity: l.quantity,
                total: l.line_total.to_string(),
            })
            .collect(),
        late_refund,
    };
    let mut response = super::render(&page, actix_web::http::StatusCode::OK);
    // Bought: the cart that led here is done with.
    if order.status == OrderStatus::Paid && !Cart::from_request(&req, &state.cookie_key).is_empty()
    {
        let mut gone = actix_web::cookie::Cookie::new(super::cart::COOKIE, "");
        gone.set_path("/");
        gone.make_removal();
        let _ = response.add_cookie(&gone);
    }
    Ok(response)
}

/// Why a late payment was refunded, by the status the order had when it arrived.
fn late_refund_text(was: OrderStatus) -> String {
    let why = match was {
        OrderStatus::Expired => "after this order had expired",
        OrderStatus::Failed => "after this order had been closed as failed",
        _ => "after this order had been cancelled",
    };
    format!(
        "Your payment arrived {why}, so it was not taken: it has been (or is being) refunded in full to where it came from."
    )
}

/// What the shopper reads first.
fn heading(order: &Order) -> &'static str {
    match order.status {
        OrderStatus::Created => "Starting your payment",
        OrderStatus::Pending => match (order.pay_method, order.trade_type) {
            (PayMethod::Wechat, Some(TradeType::Native)) => "Scan to pay with WeChat Pay",
            _ => "Waiting for your payment",
        },
        OrderStatus::Authorized | OrderStatus::Approving => "Confirming your payment",
        OrderStatus::Paid => "Thank you — your payment is complete",
        OrderStatus::CancelRequested => "Your refund is being processed",
        OrderStatus::PartiallyCancelled => "Part of your payment was refunded",
        OrderStatus::Cancelled => "Your payment was reversed",
        OrderStatus::Compensating => "We are reversing this payment",
        OrderStatus::Expired => "This payment expired",
        OrderStatus::Failed => "The payment did not go through",
        OrderStatus::NeedsAttention => "We are looking into this payment",
    }
}

/// `yyyyMMddHHmmss` → `yyyy-MM-dd HH:mm:ss` (KST, as KICC sends it).
fn format_kicc_time(s: &str) -> String {
    if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
        format!(
            "{}-{}-{} {}:{}:{} KST",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12],
            &s[12..14]
        )
    } else {
        s.to_owned()
    }
}

async fn payment_url(state: &AppState, no: &str) -> Result<String, WebError> {
    let order = load_order(state, no).await?;
    order
        .payment_page_url
        .filter(|_| order.trade_type == Some(TradeType::Native))
        .ok_or_else(|| WebError::NotFound {
            what: "QR code".into(),
        })
}

/// The QR images of an order's payment page URL, from the cache.
async fn qr_images(state: &AppState, no: &str) -> Result<std::sync::Arc<qr::QrImages>, WebError> {
    let url = payment_url(state, no).await?;
    state.qr.get(&url).map_err(|_| WebError::NotFound {
        what: "QR code".into(),
    })
}

/// `GET /orders/{shopOrderNo}/qr.svg`.
pub async fn qr_svg(
    state: web::Data<AppState>,
    no: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let images = qr_images(&state, &no).await?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .body(images.svg().to_owned()))
}

/// `GET /orders/{shopOrderNo}/qr.png`.
pub async fn qr_png(
    state: web::Data<AppState>,
    no: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let images = qr_images(&state, &no).await?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .body(images.png().to_vec()))
}
