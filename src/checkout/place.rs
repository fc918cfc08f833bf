//! Placing an order: prices from the database (never from the form), the order saved, then the
//! payment registered — WeChat Pay's create-transaction (spec 01), or the KICC Pay window.

use sha2::{Digest, Sha256};

use super::Checkout;
use crate::db::orders::{self, NewOrder, OrderPatch, Transition, TransitionOutcome};
use crate::db::{DbError, now, products, write_transaction};
use crate::domain::{
    Currency, Customer, GoodsName, Order, OrderEvent, OrderLine, OrderStatus, PayMethod, Product,
    ShopOrderNo, TradeType, ValidationError,
};
use crate::kicc::{ClientError, Completion, Outcome, RecordedCall, Registered};

/// Desktop (QR, `native`) or phone (redirect, `mweb`): spec 01's trade types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Pc,
    Mobile,
}

impl Device {
    /// From a `User-Agent`: phones and tablets get the redirect.
    pub fn from_user_agent(user_agent: &str) -> Self {
        const MOBILE: [&str; 6] = [
            "Mobile",
            "Android",
            "iPhone",
            "iPad",
            "iPod",
            "MicroMessenger",
        ];
        if MOBILE.iter().any(|m| user_agent.contains(m)) {
            Device::Mobile
        } else {
            Device::Pc
        }
    }

    /// `pc` or `mobile` (the `?device=` override).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pc" => Some(Device::Pc),
            "mobile" => Some(Device::Mobile),
            _ => None,
        }
    }

    pub fn trade_type(self) -> TradeType {
        match self {
            Device::Pc => TradeType::Native,
            Device::Mobile => TradeType::Mweb,
        }
    }
}

/// An order as the shopper asked for it: SKUs and quantities only — prices come from the
/// catalog.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    pub items: Vec<(String, u32)>,
    pub currency: Currency,
    pub pay_method: PayMethod,
    pub device: Device,
    pub customer: Customer,
    /// The client's key: a second request of the same client with the same key and the same
    /// body finds the first order; with another body it is refused.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Most lines one order may have (each line's quantity is 1 to 99).
pub const MAX_ORDER_LINES: usize = 50;

impl OrderRequest {
    /// SHA-256 (hex) of the request in one canonical form: its lines sorted, then currency, pay
    /// method, device and customer. Two requests hash alike exactly when they ask for the same
    /// order; the key's stored hash tells a retry from a different request under the same key.
    pub fn request_hash(&self) -> String {
        let mut items: Vec<(&str, u32)> = self
            .items
            .iter()
            .map(|(sku, q)| (sku.as_str(), *q))
            .collect();
        items.sort_unstable();
        let c = &self.customer;
        let canonical = serde_json::json!([
            "order-request/1",
            items,
            self.currency.code(),
            self.pay_method.as_str(),
            match self.device {
                Device::Pc => "pc",
                Device::Mobile => "mobile",
            },
            [
                c.id.as_str(),
                c.name.as_str(),
                c.mail.as_str(),
                c.contact_no.as_str(),
                c.addr.as_str(),
            ],
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// An idempotency key and the client it belongs to. There are no API keys yet, so a client is
/// what the request shows: its address for the JSON API, its browser for the shop's form. A
/// key is looked up only within its client's scope: another client's key finds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who: `ip:ADDRESS` or `browser:HASH` ([`crate::db::orders::Idempotency::scope`]).
    pub scope: String,
    pub key: String,
}

impl IdempotencyKey {
    /// A JSON API client's key: the client is its address (`web::client_ip::of_request`, so
    /// behind `TRUSTED_PROXIES` the address they forwarded). Clients sharing an address (one
    /// NAT) share a scope; a reused key with another body is still refused.
    pub fn of_address(ip: std::net::IpAddr, key: String) -> Self {
        Self {
            scope: format!("ip:{ip}"),
            key,
        }
    }

    /// The shop form's key: the client is the browser, named by a hash of its CSRF token (the
    /// random value in its signed `shop_csrf` cookie; the token itself is never stored).
    pub fn of_browser(csrf_token: &str, key: String) -> Self {
        let digest = Sha256::digest(format!("idempotency-scope/1:{csrf_token}").as_bytes());
        Self {
            scope: format!("browser:{}", &hex::encode(digest)[..32]),
            key,
        }
    }
}

/// Where the shopper goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// The order page (the QR of a native payment, or the result).
    OrderPage,
    /// A 303 to the payment page (mweb) or the KICC Pay window.
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Placed {
    pub order: Order,
    pub next: NextStep,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the cart is empty")]
    EmptyCart,
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("KICC Pay is not offered")]
    KiccPayNotOffered,
    /// The client used this idempotency key before for a different request: nothing placed.
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// KICC refused to register the payment: its message (with WeChat's decoded detail).
    #[error("the payment could not be started: {message}")]
    Declined {
        order: Box<Order>,
        code: String,
        message: String,
    },
    /// The gateway did not answer usably; the order is closed and the shopper may retry.
    #[error("the payment service did not answer: {detail}")]
    GatewayUnavailable { order: Box<Order>, detail: String },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the payment request could not be sent: {0}")]
    Client(#[from] crate::kicc::ClientError),
}

/// A customer id for KICC (20 bytes): a stable pseudonym of the email, so KICC can group a
/// guest's payments without seeing more than it already does.
pub fn guest_customer_id(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_ascii_lowercase().as_bytes());
    format!("G{}", &hex::encode(digest)[..19])
}

impl Checkout {
    /// Saves the order and registers its payment.
    pub async fn place_order(&self, request: OrderRequest) -> Result<Placed, CheckoutError> {
        if request.items.is_empty() {
            return Err(CheckoutError::EmptyCart);
        }
        if request.items.len() > MAX_ORDER_LINES {
            return Err(CheckoutError::Invalid(ValidationError::new(
                "items",
                format!("at most {MAX_ORDER_LINES} lines"),
            )));
        }
        if request.pay_method == PayMethod::Kiccpay && self.kiccpay_window.is_none() {
            return Err(CheckoutError::KiccPayNotOffered);
        }
        if let Some(key) = request.idempotency_key.clone() {
            let hash = request.request_hash();
            let existing = self
                .db
                .run(move |conn| orders::find_by_idempotency_key(conn, &key.scope, &key.key))
                .await?;
            if let Some(found) = existing {
                return same_request(found, &hash).map(|order| self.placed(order));
            }
        }
        match self.save(&request).await? {
            Saved::New(order, Some(call)) => {
                self.register_wechat(order, call, request.device.trade_type())
                    .await
            }
            Saved::New(order, None) => self.open_kiccpay(order).await,
            Saved::Existing(order) => Ok(self.placed(order)),
        }
    }

    /// Prices the lines from the catalog, inserts the order (status `created`) and, for WeChat
    /// Pay, records its create-transaction call: one write transaction for the order and its
    /// call's row, committed before the call is sent (DESIGN §4). Through [`Db::write`], so on
    /// SQLite it commits with the other checkouts and webhooks waiting at the same moment.
    ///
    /// [`Db::write`]: crate::db::Db::write
    async fn save(&self, request: &OrderRequest) -> Result<Saved, CheckoutError> {
        let expires_at = now()
            + chrono::TimeDelta::from_std(self.order_expiry)
                .unwrap_or_else(|_| chrono::TimeDelta::minutes(10));
        let request = request.clone();
        let kicc = self.kicc.clone();
        let (return_url, notify_url) = (self.return_url(), self.payment_notify_url());
        self.db
            .write(move |conn| {
                let catalog = products::list_active(conn)?;
                let new = match priced_order(&catalog, &request, expires_at) {
                    Ok(new) => new,
                    Err(e) => return Ok(Err(e)),
                };
                // A fresh number per try: two orders in the same minute may, rarely, draw the
                // same one. A failed try rolls back whole (PostgreSQL aborts the transaction).
                for _ in 0..3 {
                    let new = NewOrder {
                        shop_order_no: ShopOrderNo::generate(chrono::Utc::now()),
                        ..new.clone()
                    };
                    let saved = write_transaction(conn, |conn| {
                        let order = orders::insert_in_tx(conn, &new, "checkout")?;
                        let call = match (request.pay_method, new.trade_type) {
                            (PayMethod::Wechat, Some(trade_type)) => Some(
                                kicc.wechat_create_request(
                                    &order,
                                    trade_type,
                                    &return_url,
                                    &notify_url,
                                )
                                .map_err(|e| Saving::Invalid(ClientError::Invalid(e).into()))?
                                .record(conn)?,
                            ),
                            _ => None,
                        };
                        Ok::<_, Saving>((order, call))
                    });
                    match saved {
                        Ok((order, call)) => return Ok(Ok(Saved::New(order, call))),
                        Err(Saving::Invalid(e)) => return Ok(Err(e)),
                        Err(Saving::Db(e)) if e.is_unique_violation() => {
                            // The same client's key used twice at once: the other request won.
                            if let Some(key) = &new.idempotency_key
                                && let Some(found) =
                                    orders::find_by_idempotency_key(conn, &key.scope, &key.key)?
                            {
                                return Ok(
                                    same_request(found, &key.request_hash).map(Saved::Existing)
                                );
                            }
                        }
                        Err(Saving::Db(e)) => return Err(e),
                    }
                }
                Ok(Err(CheckoutError::Db(DbError::Corrupt(
                    "could not draw a free order number".into(),
                ))))
            })
            .await?
    }

    /// Spec 01: register the WeChat Pay payment (its call recorded by `save`); store pgCno and
    /// the payment page. The call's ending and the order's transition are one write
    /// transaction.
    async fn register_wechat(
        &self,
        order: Order,
        call: RecordedCall<Registered>,
        trade_type: TradeType,
    ) -> Result<Placed, CheckoutError> {
        let (call, completion) = self.kicc.send_recorded(call).await;
        let (event, cause, patch) = match &call.outcome {
            Outcome::Accepted(registered) => (
                OrderEvent::PaymentRegistered,
                format!("KICC registered the payment (pgCno {})", registered.pg_cno),
                OrderPatch {
                    pg_cno: Some(registered.pg_cno.clone()),
                    payment_page_url: Some(registered.payment_page_url.clone()),
                    ..Default::default()
                },
            ),
            Outcome::Declined {
                code,
                message,
                detail,
            } => (
                OrderEvent::RegistrationFailed,
                format!(
                    "KICC declined the payment ({code}: {message}{})",
                    detail_suffix(detail.as_deref())
                ),
                OrderPatch::default(),
            ),
            other => (
                OrderEvent::RegistrationFailed,
                format!(
                    "create-transaction ended {}: the shopper may try again",
                    other.label()
                ),
                OrderPatch::default(),
            ),
        };
        let updated = self
            .transition_after(
                Some(completion),
                &order,
                OrderStatus::Created,
                event,
                cause,
                patch,
            )
            .await?;
        match call.outcome {
            Outcome::Accepted(registered) => Ok(Placed {
                next: match trade_type {
                    TradeType::Native => NextStep::OrderPage,
                    TradeType::Mweb => NextStep::Redirect(registered.payment_page_url),
                },
                order: updated,
            }),
            Outcome::Declined {
                code,
                message,
                detail,
            } => Err(CheckoutError::Declined {
                order: Box::new(updated),
                code,
                message: format!("{message}{}", detail_suffix(detail.as_deref())),
            }),
            other => Err(CheckoutError::GatewayUnavailable {
                order: Box::new(updated),
                detail: other.label().into(),
            }),
        }
    }

    /// KICC Pay: the window takes the shopper's authentication; the returnUrl brings the
    /// authorizationId back (docs/KICC-ASSUMPTIONS.md: the window is not in our spec files).
    async fn open_kiccpay(&self, order: Order) -> Result<Placed, CheckoutError> {
        let updated = self
            .transition(
                &order,
                OrderStatus::Created,
                OrderEvent::PaymentRegistered,
                "KICC Pay window opened".into(),
                OrderPatch::default(),
            )
            .await?;
        Ok(self.placed(updated))
    }

    /// The KICC Pay window URL for an order: `mercTrxNo`, `trxAmt`, `goodsName`, `returnUrl`.
    pub fn kiccpay_window_url(&self, order: &Order) -> Option<String> {
        let base = self.kiccpay_window.as_deref()?;
        let mut url = url::Url::parse(base).ok()?;
        url.query_pairs_mut()
            .append_pair("mercTrxNo", order.shop_order_no.as_str())
            .append_pair("trxAmt", &order.amount.minor().to_string())
            .append_pair("goodsName", &order.goods_name)
            .append_pair("returnUrl", &self.return_url());
        Some(url.into())
    }

    /// Where the shopper goes for an order that exists (a repeated submit lands here too).
    fn placed(&self, order: Order) -> Placed {
        let next = match (
            order.status,
            order.pay_method,
            order.trade_type,
            &order.payment_page_url,
        ) {
            (OrderStatus::Pending, PayMethod::Wechat, Some(TradeType::Mweb), Some(url)) => {
                NextStep::Redirect(url.clone())
            }
            (OrderStatus::Pending, PayMethod::Kiccpay, _, _) => self
                .kiccpay_window_url(&order)
                .map_or(NextStep::OrderPage, NextStep::Redirect),
            _ => NextStep::OrderPage,
        };
        Placed { order, next }
    }

    /// One transition from a known status; returns the order as it is afterwards (moved by us
    /// or by whoever won the race).
    pub(super) async fn transition(
        &self,
        order: &Order,
        expected: OrderStatus,
        event: OrderEvent,
        cause: String,
        patch: OrderPatch,
    ) -> Result<Order, DbError> {
        self.transition_after(None, order, expected, event, cause, patch)
            .await
    }

    /// [`Self::transition`], caused by a gateway call whose ending (`completion`) is written in
    /// the same write transaction.
    pub(super) async fn transition_after(
        &self,
        completion: Option<Completion>,
        order: &Order,
        expected: OrderStatus,
        event: OrderEvent,
        cause: String,
        patch: OrderPatch,
    ) -> Result<Order, DbError> {
        let id = order.id;
        let t = Transition::new(id, expected, event, cause).with_patch(patch);
        // One write transaction (grouped with others on SQLite, [`crate::db::Db::write`]); the
        // row is read back inside it.
        let (outcome, order) = self
            .db
            .write(move |conn| {
                if let Some(completion) = &completion {
                    completion.write(conn)?;
                }
                let outcome = orders::transition_in_tx(conn, &t)?;
                if let TransitionOutcome::Lost { current } = &outcome {
                    // Another path (the notification's status check, the reconciler, a second
                    // instance) moved the order first. What this one learnt — a verified reply,
                    // say — still belongs on the timeline, beside the transition that won.
                    let note = format!("{}; not applied: the order is already {current}", t.cause);
                    orders::add_note(conn, id, "not_applied", &note)?;
                    if *current == OrderStatus::Paid {
                        orders::fill_approval(conn, id, &t.patch)?;
                    }
                }
                let order = orders::find_by_id(conn, id)?.ok_or(DbError::NotFound)?;
                Ok((outcome, order))
            })
            .await?;
        if let TransitionOutcome::NotAllowed(e) = outcome {
            log::warn!("order {id}: {e}");
        }
        Ok(order)
    }
}

/// The order the request asks for, priced from the catalog (never from the form).
fn priced_order(
    catalog: &[Product],
    request: &OrderRequest,
    expires_at: chrono::NaiveDateTime,
) -> Result<NewOrder, CheckoutError> {
    let mut lines = Vec::with_capacity(request.items.len());
    for (sku, quantity) in &request.items {
        let product = catalog.iter().find(|p| &p.sku == sku).ok_or_else(|| {
            CheckoutError::Invalid(ValidationError::new(
                "items",
                format!("`{sku}` is not on sale"),
            ))
        })?;
        let quantity = i32::try_from(*quantity)
            .ok()
            .filter(|q| (1..=99).contains(q))
            .ok_or_else(|| {
                CheckoutError::Invalid(ValidationError::new("quantity", "must be 1 to 99"))
            })?;
        let unit_price = product.price(request.currency);
        let line_total = unit_price.checked_mul(i64::from(quantity)).ok_or_else(|| {
            CheckoutError::Invalid(ValidationError::new("quantity", "is too large"))
        })?;
        lines.push(OrderLine {
            sku: product.sku.clone(),
            name: product.name.clone(),
            unit_price,
            quantity,
            line_total,
        });
    }
    let goods_name = GoodsName::for_cart(lines.iter().map(|l| l.name.as_str()))
        .map_err(CheckoutError::Invalid)?;
    Ok(NewOrder {
        shop_order_no: ShopOrderNo::generate(chrono::Utc::now()),
        pay_method: request.pay_method,
        trade_type: (request.pay_method == PayMethod::Wechat).then(|| request.device.trade_type()),
        goods_name,
        customer: request.customer.clone(),
        lines,
        idempotency_key: request
            .idempotency_key
            .as_ref()
            .map(|k| orders::Idempotency {
                scope: k.scope.clone(),
                key: k.key.clone(),
                request_hash: request.request_hash(),
            }),
        expires_at: Some(expires_at),
    })
}

/// The order a client's key found, when this request is the one that placed it (a retry, a
/// double submit); a different request under the same key is refused. (A key without a hash
/// was stored before requests were hashed, in the `legacy` scope no client has.)
fn same_request(
    (order, stored_hash): (Order, Option<String>),
    hash: &str,
) -> Result<Order, CheckoutError> {
    if stored_hash.as_deref() == Some(hash) {
        Ok(order)
    } else {
        Err(CheckoutError::IdempotencyKeyReused)
    }
}

enum Saved {
    /// A new order, with its create call recorded (WeChat Pay) or none (KICC Pay's window).
    New(Order, Option<RecordedCall<Registered>>),
    Existing(Order),
}

/// Why saving an order's write transaction ended early.
enum Saving {
    /// The create call breaks KICC's limits (our bug): nothing saved, nothing sent.
    Invalid(CheckoutError),
    Db(DbError),
}

impl From<DbError> for Saving {
    fn from(e: DbError) -> Self {
        Saving::Db(e)
    }
}

impl From<diesel::result::Error> for Saving {
    fn from(e: diesel::result::Error) -> Self {
        Saving::Db(e.into())
    }
}

fn detail_suffix(detail: Option<&str>) -> String {
    detail.map(|d| format!(" — {d}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_user_agents() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";
        let android = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36";
        let wechat = "Mozilla/5.0 (Linux; Android 13) MicroMessenger/8.0.40";
        let desktop =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
        assert_eq!(Device::from_user_agent(iphone), Device::Mobile);
        assert_eq!(Device::from_user_agent(android), Device::Mobile);
        assert_eq!(Device::from_user_agent(wechat), Device::Mobile);
        assert_eq!(Device::from_user_agent(desktop), Device::Pc);
        assert_eq!(Device::from_user_agent(""), Device::Pc);
    }

    #[test]
    fn guest_ids_fit_kicc_and_are_stable() {
        let id = guest_customer_id("Test@Email.com ");
        assert_eq!(id.len(), 20);
        assert_eq!(id, guest_customer_id("test@email.com"));
        assert_ne!(id, guest_customer_id("other@email.com"));
    }
}
