//! An order as the rest of the app sees it: typed fields, read from the database by `db::orders`.

use chrono::NaiveDateTime;

use super::{Money, OrderStatus, PayMethod, ShopOrderNo, TradeType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub shop_order_no: ShopOrderNo,
    pub status: OrderStatus,
    pub pay_method: PayMethod,
    pub amount: Money,
    /// Cancelled so far (partial cancels accumulate), same currency as `amount`.
    pub cancelled: Money,
    pub goods_name: String,
    pub customer_id: String,
    pub customer_name: String,
    pub customer_mail: String,
    pub customer_contact_no: String,
    pub customer_addr: String,
    pub trade_type: Option<TradeType>,
    /// KICC's transaction id, once the payment is registered.
    pub pg_cno: Option<String>,
    pub payment_page_url: Option<String>,
    /// What the returnUrl brought (needed again for a KICC Pay net-cancel); never shown.
    pub authorization_id: Option<String>,
    pub approval_no: Option<String>,
    /// yyyyMMddHHmmss as KICC sent it.
    pub approval_date: Option<String>,
    pub transaction_date: Option<String>,
    pub kicc_status_code: Option<String>,
    pub expires_at: Option<NaiveDateTime>,
    pub paid_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Order {
    /// What is still paid: amount − cancelled.
    pub fn remaining(&self) -> Money {
        self.amount
            .checked_sub(self.cancelled)
            .unwrap_or(Money::zero(self.amount.currency()))
    }
}

/// One line of an order, priced when the order was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub unit_price: Money,
    pub quantity: i32,
    pub line_total: Money,
}

/// One row of the order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub id: i64,
    pub event: String,
    pub from_status: Option<OrderStatus>,
    pub to_status: Option<OrderStatus>,
    pub cause: String,
    pub created_at: NaiveDateTime,
}
