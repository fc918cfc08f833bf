//! The JSON API for headless front ends (DESIGN §3): products, creating an order and its
//! payment, reading its status. Errors are `{"error":{"code","message","field"}}` with a 4xx/5xx.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::checkout::{
    CheckoutError, Device, IdempotencyKey, NextStep, OrderRequest, guest_customer_id,
};
use crate::db::{DbError, orders, products};
use crate::domain::{Currency, Customer, Order, PayMethod, ShopOrderNo, TradeType};

/// An API error: a stable code, a message, the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<&str>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: field.map(str::to_owned),
            retry_after: None,
        }
    }
}

impl ApiError {
    pub(super) fn payload_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {} KiB", super::error::JSON_LIMIT / 1024),
            None,
        )
    }

    fn too_many_requests(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("too many orders from this address; retry after {retry_after} s"),
                None,
            )
        }
    }

    pub(super) fn unsupported_media_type() -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
            None,
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            log::error!("api: {self}");
        }
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        response.json(
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}}),
        )
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        log::error!("api: database: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is busy; nothing was charged",
            None,
        )
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::EmptyCart => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_order",
                "items is empty",
                Some("items"),
            ),
            CheckoutError::Invalid(v) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                v.message,
                Some(v.field),
            ),
            CheckoutError::KiccPayNotOffered => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_offered",
                "KICC Pay is not offered",
                Some("payMethod"),
            ),
            CheckoutError::IdempotencyKeyReused => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this idempotencyKey was used for a different request; use a new key",
                Some("idempotencyKey"),
            ),
            CheckoutError::Declined { code, message, .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "gateway_declined",
                format!("{code}: {message}"),
                None,
            ),
            CheckoutError::GatewayUnavailable { detail, .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "gateway_unavailable",
                format!("the gateway call ended {detail}"),
                None,
            ),
            CheckoutError::Db(e) => e.into(),
            CheckoutError::Client(e) => {
                log::error!("api: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the payment request could not be sent",
                    None,
                )
            }
        }
    }
}

#[derive(Serialize)]
struct ProductJson {
    sku: String,
    name: String,
    price: serde_json::Value,
}

/// `GET /api/products` → `[{"sku","name","price":{"KRW":12000,"USD":1203}}]` (minor units).
pub async fn list_products(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let catalog = state.db.run(products::list_active).await?;
    let body: Vec<ProductJson> = catalog
        .into_iter()
        .map(|p| ProductJson {
            price: json!({"KRW": p.price_krw.minor(), "USD": p.price_usd.minor()}),
            sku: p.sku,
            name: p.name,
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrderJson {
    #[serde(default)]
    items: Vec<ItemJson>,
    currency: String,
    pay_method: String,
    #[serde(default)]
    device: Option<String>,
    customer: CustomerJson,
    /// Optional: a client's own key so a retried POST finds the first order. It is the
    /// client's: scoped to its address (there are no API keys yet; behind `TRUSTED_PROXIES`,
    /// the forwarded address) and bound to the body, so another address's key finds nothing
    /// and the same key with another body is a 409.
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ItemJson {
    sku: String,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
pub struct CustomerJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    address: String,
}

fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        message,
        Some(field),
    )
}

/// `POST /api/orders` → 201 `{"shopOrderNo","status","amount","currency","pgCno","paymentPageUrl","qrSvgUrl","orderUrl"}`.
pub async fn create_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewOrderJson>,
) -> Result<HttpResponse, ApiError> {
    // actix also takes `text/json` and `…+json`; the API takes exactly application/json.
    let json = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.essence_str() == "application/json");
    if !json {
        return Err(ApiError::unsupported_media_type());
    }
    state
        .limit_checkout(&req)
        .map_err(ApiError::too_many_requests)?;
    let body = body.into_inner();
    let currency: Currency = body
        .currency
        .parse()
        .map_err(|e: crate::domain::ValidationError| unprocessable("currency", e.message))?;
    let pay_method: PayMethod = body
        .pay_method
        .parse()
        .map_err(|e: crate::domain::ValidationError| unprocessable("payMethod", e.message))?;
    let device = match body.device.as_deref() {
        None => Device::Pc,
        Some(d) => Device::parse(d).ok_or_else(|| unprocessable("device", "use pc or mobile"))?,
    };
    let c = &body.customer;
    let customer = Customer::parse(
        &guest_customer_id(&c.email),
        &c.name,
        &c.email,
        &c.phone,
        &c.address,
    )
    .map_err(|errors| {
        let first = &errors[0];
        let field = match first.field {
            "customerName" => "customer.name",
            "customerMail" => "customer.email",
            "customerContactNo" => "customer.phone",
            "customerAddr" => "customer.address",
            other => other,
        };
        unprocessable(field, first.message.clone())
    })?;
    let mut items = Vec::new();
    for item in body.items {
        let quantity = u32::try_from(item.quantity)
            .ok()
            .filter(|q| (1..=99).contains(q))
            .ok_or_else(|| unprocessable("items.quantity", "must be 1 to 99"))?;
        items.push((item.sku, quantity));
    }
    let idempotency_key = body.idempotency_key.filter(|k| !k.is_empty());
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 64) {
        return Err(unprocessable("idempotencyKey", "at most 64 characters"));
    }
    let client = super::client_ip::of_request(&req, &state.config.trusted_proxies);
    let idempotency_key = idempotency_key.map(|key| IdempotencyKey::of_address(client, key));
    let placed = state
        .checkout
        .place_order(OrderRequest {
            items,
            currency,
            pay_method,
            device,
            customer,
            idempotency_key,
        })
        .await?;
    let payment_page_url = match &placed.next {
        NextStep::Redirect(url) => Some(url.clone()),
        NextStep::OrderPage => placed.order.payment_page_url.clone(),
    };
    let order = &placed.order;
    let qr = (order.trade_type == Some(TradeType::Native) && order.payment_page_url.is_some())
        .then(|| format!("{}/orders/{}/qr.svg", state.base_url, order.shop_order_no));
    Ok(HttpResponse::Created().json(json!({
        "shopOrderNo": order.shop_order_no,
        "status": order.status.as_str(),
        "amount": order.amount.minor(),
        "currency": order.amount.currency().code(),
        "pgCno": order.pg_cno,
        "paymentPageUrl": payment_page_url,
        "qrSvgUrl": qr,
        "orderUrl": format!("{}/orders/{}", state.base_url, order.shop_order_no),
    })))
}

fn order_json(order: &Order) -> serde_json::Value {
    json!({
        "shopOrderNo": order.shop_order_no,
        "status": order.status.as_str(),
        "amount": order.amount.minor(),
        "cancelledAmount": order.cancelled.minor(),
        "currency": order.amount.currency().code(),
        "payMethod": order.pay_method.as_str(),
        "pgCno": order.pg_cno,
        "updatedAt": order.updated_at.and_utc().to_rfc3339(),
    })
}

/// `GET /api/orders/{shopOrderNo}`.
pub async fn get_order(
    state: web::Data<AppState>,
    no: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such order", None);
    let no = ShopOrderNo::parse(&no).map_err(|_| not_found())?;
    let order = state
        .db
        .run(move |conn| orders::find_by_shop_order_no(conn, &no))
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(order_json(&order)))
}
