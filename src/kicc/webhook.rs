//! KICC's two notifications (spec 04 approval, spec 05 cancellation) parsed into domain values,
//! and the ack both expect. One parser for both routes: they are told apart by their fields
//! (`cancelPgCno` marks a cancellation), so a merchant may register one notifyUrl or two.

use super::wire::{NotificationBody, WebhookAck};

/// An approval notification (spec 04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotification {
    pub res_cd: String,
    pub res_msg: String,
    pub mall_id: Option<String>,
    pub shop_order_no: Option<String>,
    pub pg_cno: String,
    pub approval_date: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
}

/// A cancellation notification (spec 05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelNotification {
    pub res_cd: String,
    pub res_msg: String,
    pub mall_id: Option<String>,
    pub shop_order_no: Option<String>,
    /// The original payment.
    pub pg_cno: Option<String>,
    pub cancel_pg_cno: String,
    pub cancel_date: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    Payment(PaymentNotification),
    Cancel(CancelNotification),
}

impl Notification {
    /// The pgCno to echo in the ack (spec 04/05: "Echo back the received value").
    pub fn pg_cno(&self) -> &str {
        match self {
            Notification::Payment(p) => &p.pg_cno,
            Notification::Cancel(c) => c.pg_cno.as_deref().unwrap_or(&c.cancel_pg_cno),
        }
    }

    /// KICC's deduplication key (spec 06): pgCno for approvals, cancelPgCno for cancellations.
    pub fn dedupe_key(&self) -> &str {
        match self {
            Notification::Payment(p) => &p.pg_cno,
            Notification::Cancel(c) => &c.cancel_pg_cno,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Notification::Payment(_) => "payment",
            Notification::Cancel(_) => "cancel",
        }
    }
}

/// Why a body is not a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the body is not JSON in KICC's notification shape: {0}")]
    Shape(String),
    #[error("the notification has no {0}")]
    Missing(&'static str),
}

/// Parses either notification. Lenient on what KICC may add or format differently (amounts as
/// number or string, unknown fields); strict on what we need to act (pgCno / cancelPgCno).
pub fn parse_notification(body: &[u8]) -> Result<Notification, NotificationError> {
    let raw: NotificationBody =
        serde_json::from_slice(body).map_err(|e| NotificationError::Shape(e.to_string()))?;
    let amount = raw.amount_info.as_ref().and_then(|a| a.value());
    let currency = raw.amount_info.and_then(|a| a.currency);
    let present = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    if let Some(cancel_pg_cno) = present(raw.cancel_pg_cno) {
        return Ok(Notification::Cancel(CancelNotification {
            res_cd: raw.res_cd,
            res_msg: raw.res_msg.unwrap_or_default(),
            mall_id: raw.mall_id,
            shop_order_no: raw.shop_order_no,
            pg_cno: present(raw.pg_cno),
            cancel_pg_cno,
            cancel_date: raw.cancel_date,
            amount,
            currency,
        }));
    }
    let pg_cno = present(raw.pg_cno).ok_or(NotificationError::Missing("pgCno"))?;
    Ok(Notification::Payment(PaymentNotification {
        res_cd: raw.res_cd,
        res_msg: raw.res_msg.unwrap_or_default(),
        mall_id: raw.mall_id,
        shop_order_no: raw.shop_order_no,
        pg_cno,
        approval_date: raw.approval_date,
        amount,
        currency,
    }))
}

/// The ack body (spec 04/05): `0000` only when the notification is durably recorded; any other
/// code (e.g. `5001`) asks KICC to resend.
pub fn ack_body(res_cd: &str, res_msg: &str, pg_cno: &str) -> String {
    serde_json::to_string(&WebhookAck {
        res_cd: res_cd.into(),
        res_msg: res_msg.into(),
        pg_cno: pg_cno.into(),
    })
    .expect("ack serializes")
}

/// Reads an ack (the sandbox and tests use it).
pub fn parse_ack(body: &[u8]) -> Option<(String, String, String)> {
    let ack: WebhookAck = serde_json::from_slice(body).ok()?;
    Some((ack.res_cd, ack.res_msg, ack.pg_cno))
}
