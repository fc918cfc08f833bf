//! The KICC gateway, our side: wire types (private to this module), crypto, the client that
//! records every call in `gateway_calls`, and webhook parsing. Everything public here is a
//! domain result; KICC's field names stay inside `wire`.

mod client;
pub mod crypto;
#[cfg(test)]
pub(crate) mod fuzz;
mod redact;
pub mod webhook;
mod wire;

use std::fmt;
use std::time::Duration;

pub use client::{
    ClientError, ClientSettings, Completion, KiccClient, KiccPaySettings, PreparedCall,
    RecordedCall,
};
pub use redact::redact_body;

/// The APIs we call, each with its path under the API base (spec 01–03, 06).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    WechatCreate,
    WechatFind,
    WechatFindCancel,
    WechatRevise,
    ApprovalV2,
    Revise,
    RetrieveTransaction,
    KiccPayApprove,
    KiccPayNetCancel,
    KiccPayCancel,
}

impl Api {
    pub const ALL: [Api; 10] = [
        Api::WechatCreate,
        Api::WechatFind,
        Api::WechatFindCancel,
        Api::WechatRevise,
        Api::ApprovalV2,
        Api::Revise,
        Api::RetrieveTransaction,
        Api::KiccPayApprove,
        Api::KiccPayNetCancel,
        Api::KiccPayCancel,
    ];

    /// The name stored in `gateway_calls.api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::WechatCreate => "wechat_create",
            Api::WechatFind => "wechat_find",
            Api::WechatFindCancel => "wechat_find_cancel",
            Api::WechatRevise => "wechat_revise",
            Api::ApprovalV2 => "approval_v2",
            Api::Revise => "revise",
            Api::RetrieveTransaction => "retrieve_transaction",
            Api::KiccPayApprove => "kiccpay_approve",
            Api::KiccPayNetCancel => "kiccpay_net_cancel",
            Api::KiccPayCancel => "kiccpay_cancel",
        }
    }

    /// The request path, as KICC documents it.
    pub fn path(self) -> &'static str {
        match self {
            Api::WechatCreate => "/api/trades/wechatpay",
            Api::WechatFind | Api::WechatFindCancel => "/api/trades/wechatpay/find",
            Api::WechatRevise => "/api/trades/wechatpay/revise",
            Api::ApprovalV2 => "/api/v2/trades/approval",
            Api::Revise => "/api/trades/revise",
            Api::RetrieveTransaction => "/api/trades/retrieveTransaction",
            Api::KiccPayApprove => "/smpy/kiccpay/reqAprv",
            Api::KiccPayNetCancel => "/smpy/kiccpay/reqRtran",
            Api::KiccPayCancel => "/smpy/kiccpay/reqCancel",
        }
    }

    fn is_kiccpay(self) -> bool {
        matches!(
            self,
            Api::KiccPayApprove | Api::KiccPayNetCancel | Api::KiccPayCancel
        )
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a gateway call ended, typed (DESIGN §4). `Timeout`, `Transport` and `Malformed` mean we do
/// not know what KICC did: for an approval, the status check (v2) or net-cancel (KICC Pay) must
/// follow (spec 02, 03).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// `resCd`/`respCd` `0000`, reply complete and verified.
    Accepted(T),
    /// KICC answered with another code.
    Declined {
        code: String,
        message: String,
        detail: Option<String>,
    },
    /// No answer within the configured timeout (KICC asks for 30 s).
    Timeout,
    /// Connection failed, or an HTTP status other than 200 (spec 06: only 200 carries resCd).
    Transport(String),
    /// HTTP 200 whose body is not the documented JSON.
    Malformed(String),
    /// The reply is complete but its msgAuthValue does not verify: it must not be trusted
    /// (and an approval must be cancelled: `pg_cno` is the transaction to cancel).
    IntegrityFailure {
        detail: String,
        pg_cno: Option<String>,
    },
}

impl<T> Outcome<T> {
    /// The name stored in `gateway_calls.outcome`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted(_) => "accepted",
            Outcome::Declined { .. } => "declined",
            Outcome::Timeout => "timeout",
            Outcome::Transport(_) => "transport_error",
            Outcome::Malformed(_) => "malformed",
            Outcome::IntegrityFailure { .. } => "integrity_failure",
        }
    }

    /// True when we cannot know whether KICC acted (timeout, transport error, malformed reply).
    pub fn is_unknown(&self) -> bool {
        matches!(
            self,
            Outcome::Timeout | Outcome::Transport(_) | Outcome::Malformed(_)
        )
    }

    pub fn accepted(&self) -> Option<&T> {
        match self {
            Outcome::Accepted(value) => Some(value),
            _ => None,
        }
    }
}

/// One recorded call: its row in `gateway_calls`, its idempotency key and date, and its outcome.
#[derive(Debug, Clone)]
pub struct GatewayCall<T> {
    /// Its `gateway_calls` row; `None` for a call of [`KiccClient::deferred`].
    pub call_id: Option<i64>,
    pub shop_transaction_id: String,
    /// yyyyMMdd (KST) the request was sent on.
    pub request_date: String,
    pub latency: Duration,
    pub outcome: Outcome<T>,
    /// A deferred call's record, to be written once the database answers.
    pub deferred: Option<crate::db::gateway_calls::DeferredCall>,
}

/// KICC's transaction status codes (spec 06, docs/KICC-ASSUMPTIONS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeStatus {
    /// `TS00`: registered, not paid yet [assume].
    Registered,
    /// `TS01` approved, `TS03` capture requested, `TS04` captured.
    Approved,
    /// `TS02` approval cancelled, `TS05` capture cancelled.
    Cancelled,
    /// `TS06`.
    PartiallyCancelled,
    /// `TS12`: network-cancelled (void).
    Voided,
    /// Any other code, kept as sent.
    Other(String),
}

impl TradeStatus {
    pub fn from_code(code: &str) -> Self {
        match code {
            "TS00" => TradeStatus::Registered,
            "TS01" | "TS03" | "TS04" => TradeStatus::Approved,
            "TS02" | "TS05" => TradeStatus::Cancelled,
            "TS06" => TradeStatus::PartiallyCancelled,
            "TS12" => TradeStatus::Voided,
            other => TradeStatus::Other(other.to_owned()),
        }
    }
}

/// A registered WeChat Pay trade (spec 01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub pg_cno: String,
    /// A code URL to show as a QR (native) or a page to redirect to (mweb).
    pub payment_page_url: String,
}

/// An approval whose msgAuthValue verified (spec 02). The amount is as KICC approved it: the
/// caller compares it with the order and cancels on a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub pg_cno: String,
    pub shop_order_no: Option<String>,
    pub amount: i64,
    pub transaction_date: String,
    pub status: Option<TradeStatus>,
    pub status_code: Option<String>,
    pub approval_no: Option<String>,
    pub approval_date: Option<String>,
}

/// The answer of `/api/trades/wechatpay/find` for a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentStatus {
    pub pg_cno: String,
    pub shop_order_no: Option<String>,
    pub status: TradeStatus,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub approval_date: Option<String>,
}

/// The answer of `/api/trades/wechatpay/find` with a `cancelPgCno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelStatus {
    pub pg_cno: String,
    pub cancel_pg_cno: String,
    pub status: TradeStatus,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub transaction_date: Option<String>,
}

/// A cancel KICC accepted (WeChat revise or generic revise). For WeChat Pay it is only
/// requested: the cancellation webhook is the final word (spec 05, 06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelAccepted {
    pub pg_cno: Option<String>,
    pub cancel_pg_cno: Option<String>,
    pub cancel_date: Option<String>,
    pub cancel_amount: Option<i64>,
    pub remain_amount: Option<i64>,
    pub status: Option<TradeStatus>,
}

/// What `retrieveTransaction` found for an approval or cancel key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievedTransaction {
    pub pg_cno: Option<String>,
    pub shop_order_no: Option<String>,
    pub amount: Option<i64>,
    pub transaction_date: Option<String>,
    pub status: Option<TradeStatus>,
    pub cancel_pg_cno: Option<String>,
}

/// A KICC Pay approval (spec 03). `amount` is read when KICC echoes it (not in spec 03's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KiccPayApproval {
    pub merc_trx_no: String,
    pub amount: Option<i64>,
    pub approval_date: Option<String>,
    pub approval_time: Option<String>,
    pub approval_no: Option<String>,
    pub van_trx_no: Option<String>,
    /// Masked by KICC.
    pub card_confirm_no: Option<String>,
    pub issuer_name: Option<String>,
}

/// The transmission date and time of a KICC Pay approval: net-cancel resends the approval's
/// data unchanged (spec 06), so these are kept with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KiccPayTransmission {
    pub tran_dt: String,
    pub tran_tm: String,
}

/// A KICC Pay cancel's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KiccPayCancelled {
    pub merc_trx_no: String,
    pub approval_no: Option<String>,
    pub amount: Option<i64>,
}

/// How much to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAmount {
    /// `reviseTypeCode` 40.
    Full,
    /// `reviseTypeCode` 32, with the amount to cancel (minor units of the order's currency).
    Partial(i64),
}
