//! The sandbox's books — trades, cancels, idempotency keys, calls received, webhook deliveries —
//! and KICC's operations on them. No I/O: every operation takes the time and the parsed request
//! and returns an [`Outcome`] (the reply, how to send it, which webhooks to start); the HTTP
//! handlers do the sending. Held behind one `Mutex`, never across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Days, FixedOffset, NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::config::SandboxConfig;
use super::scenario::{Scenario, ScenarioSetting};
use super::validate::{self as v, Refusal};
use super::wire::{self, code};
use crate::domain::Currency;
use crate::kicc::crypto;

/// KICC's clock: Korea Standard Time (UTC+9), no daylight saving.
pub type Kst = DateTime<FixedOffset>;

pub fn kst(now: DateTime<Utc>) -> Kst {
    now.with_timezone(&FixedOffset::east_opt(9 * 3600).expect("UTC+9 is a valid offset"))
}

/// `yyyyMMddHHmmss`, KICC's date-time.
pub fn stamp(t: &Kst) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

/// At most this many attempts per webhook (spec 04/05: "resent up to 15 times").
pub const MAX_WEBHOOK_ATTEMPTS: u32 = 15;
/// Calls kept for the console (per trade, every call is kept).
const RECENT_CALLS: usize = 500;
/// How long a KICC Pay nonce is remembered, and how far a timestamp may be from the clock.
const NONCE_WINDOW_MS: i64 = 10 * 60 * 1000;

/// API names, as paths relative to the sandbox (the call log shows them).
pub mod api {
    pub const CREATE: &str = "/api/trades/wechatpay";
    pub const FIND: &str = "/api/trades/wechatpay/find";
    pub const WECHAT_REVISE: &str = "/api/trades/wechatpay/revise";
    pub const APPROVAL: &str = "/api/v2/trades/approval";
    pub const REVISE: &str = "/api/trades/revise";
    pub const RETRIEVE: &str = "/api/trades/retrieveTransaction";
    pub const KICCPAY_APPROVE: &str = "/smpy/kiccpay/reqAprv";
    pub const KICCPAY_NET_CANCEL: &str = "/smpy/kiccpay/reqRtran";
    pub const KICCPAY_CANCEL: &str = "/smpy/kiccpay/reqCancel";
}

/// What the operations need besides the books.
pub struct Ctx<'a> {
    pub config: &'a SandboxConfig,
    /// Absolute, without a trailing slash: `http://127.0.0.1:8080/sandbox`.
    pub public_base: &'a str,
    pub now: Kst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    WechatNative,
    WechatMweb,
    KiccPay,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::WechatNative => "wechat_native",
            Method::WechatMweb => "wechat_mweb",
            Method::KiccPay => "kiccpay",
        }
    }

    pub fn is_wechat(self) -> bool {
        self != Method::KiccPay
    }
}

/// Where a trade is, before cancels (which [`Trade::status_code`] adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, not paid on the page yet.
    Registered,
    /// The shopper pressed Cancel (or the scenario said so); Pay is still possible.
    ShopperCancelled,
    /// Paid on the page: an authorizationId was issued, the approval is awaited.
    Authorized,
    /// The approval was declined (scenario `decline`).
    Declined,
    Approved,
    /// Voided by a KICC Pay net-cancel.
    NetCancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovedBy {
    Merchant,
    /// Auto-approve, `webhook_first`, `return_lost`.
    Sandbox,
}

#[derive(Debug, Clone)]
pub struct Approval {
    pub amount: i64,
    pub at: Kst,
    pub approval_no: String,
    pub van_trx_no: String,
    pub by: ApprovedBy,
}

#[derive(Debug, Clone)]
pub struct Cancel {
    pub cancel_pg_cno: String,
    pub amount: i64,
    pub at: Kst,
    pub api: &'static str,
    /// The request's own id: `shopTransactionId`, or the KICC Pay cancel's `mercTrxNo`.
    pub request_id: String,
    pub remaining_after: i64,
    /// TS06, TS02 or TS12.
    pub status_after: &'static str,
    /// KICC Pay cancel approval number.
    pub approval_no: String,
}

/// A call received, as the console and `control/trades` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub at: String,
    pub api: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop_transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_cno: Option<String>,
    pub res_cd: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub request: String,
    pub reply: String,
}

#[derive(Debug)]
pub struct Trade {
    pub pg_cno: String,
    pub method: Method,
    pub shop_order_no: String,
    pub goods_name: String,
    pub currency: Currency,
    /// What the merchant asked for.
    pub amount: i64,
    pub return_url: String,
    /// The create's notifyUrl (WeChat Pay only).
    pub notify_url: Option<String>,
    pub customer: Option<wire::CustomerInfo>,
    pub created_at: Kst,
    pub phase: Phase,
    pub authorization_id: Option<String>,
    pub paid_at: Option<Kst>,
    pub approval: Option<Approval>,
    pub cancels: Vec<Cancel>,
    pub scenario: ScenarioSetting,
    pub calls: Vec<CallRecord>,
}

impl Trade {
    pub fn approved_amount(&self) -> i64 {
        self.approval.as_ref().map_or(0, |a| a.amount)
    }

    pub fn cancelled_amount(&self) -> i64 {
        self.cancels.iter().map(|c| c.amount).sum()
    }

    pub fn remaining(&self) -> i64 {
        match self.phase {
            Phase::Approved => self.approved_amount() - self.cancelled_amount(),
            _ => 0,
        }
    }

    /// The WeChat Pay status (`statusCd`, docs/KICC-ASSUMPTIONS.md): TS00 until approved.
    pub fn status_code(&self) -> &'static str {
        match self.phase {
            Phase::Registered | Phase::ShopperCancelled | Phase::Authorized | Phase::Declined => {
                "TS00"
            }
            Phase::NetCancelled => "TS12",
            Phase::Approved if self.cancels.is_empty() => "TS01",
            Phase::Approved if self.remaining() == 0 => "TS02",
            Phase::Approved => "TS06",
        }
    }

    /// The approval's `statusCode` (spec 02): TS03 "Capture Requested" once approved.
    pub fn approval_status_code(&self) -> &'static str {
        match self.status_code() {
            "TS01" => "TS03",
            other => other,
        }
    }

    pub fn status_name(&self) -> &'static str {
        match (self.phase, self.status_code()) {
            (Phase::Registered, _) => "registered",
            (Phase::ShopperCancelled, _) => "shopper_cancelled",
            (Phase::Authorized, _) => "authorized",
            (Phase::Declined, _) => "declined",
            (Phase::NetCancelled, _) => "net_cancelled",
            (Phase::Approved, "TS06") => "partially_cancelled",
            (Phase::Approved, "TS02") => "cancelled",
            (Phase::Approved, _) => "approved",
        }
    }
}

pub fn status_message(code: &str) -> &'static str {
    match code {
        "TS00" => "Registered",
        "TS01" => "Approved",
        "TS02" => "Approval Cancelled",
        "TS03" => "Capture Requested",
        "TS06" => "Partially Cancelled",
        "TS12" => "Network Cancelled",
        _ => "Unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryKind {
    Approval,
    Cancel { cancel_pg_cno: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Sending,
    Acked,
    GaveUp,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum AttemptOutcome {
    /// The receiver answered; `body` is its ack (truncated).
    #[serde(rename = "http")]
    Http { status: u16, body: String },
    /// No answer: connection refused, timeout, …
    #[serde(rename = "error")]
    Error { error: String },
    /// Lost on the way by scenario `webhook_fails`: never sent.
    #[serde(rename = "dropped")]
    Dropped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub number: u32,
    pub at: String,
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
    pub acked: bool,
    /// From sending to the merchant's full answer (or the error); none when dropped. Spec 04/05:
    /// the merchant must answer within 10 seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub pg_cno: String,
    pub kind: DeliveryKind,
    pub url: String,
    /// The JSON text sent, identical on every attempt.
    pub body: String,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
    pub created_at: Kst,
    pub resend_of: Option<u64>,
}

/// What one attempt of a delivery is to do.
pub struct AttemptPlan {
    pub number: u32,
    pub url: String,
    pub body: String,
    /// Scenario `webhook_fails`: record it, send nothing.
    pub dropped: bool,
}

/// What a `shopTransactionId` was used for (spec 06: unique per day; `retrieveTransaction`
/// finds the approval or cancel it made).
#[derive(Debug, Clone)]
struct KeyUse {
    day: NaiveDate,
    /// The request's own date (`approvalReqDate`, `cancelReqDate`).
    declared: Option<String>,
    refers: Option<KeyRef>,
}

#[derive(Debug, Clone)]
enum KeyRef {
    Approval {
        pg_cno: String,
    },
    Cancel {
        pg_cno: String,
        cancel_pg_cno: String,
    },
}

/// How the reply goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    Normal,
    /// `approval_late`: after this long.
    Late(Duration),
    /// `malformed_reply`: HTTP 200 with a body that is not JSON.
    Malformed,
    /// `cancel_reply_lost`: the connection is dropped instead.
    Lost,
}

/// The result of one API call.
#[derive(Debug)]
pub struct Outcome {
    pub body: Value,
    pub res_cd: String,
    pub pg_cno: Option<String>,
    pub reply: ReplyMode,
    /// Webhook deliveries to start now.
    pub deliveries: Vec<u64>,
    /// Scenario effects, for the call log.
    pub notes: Vec<String>,
}

impl Outcome {
    fn ok(body: impl Serialize, pg_cno: &str) -> Self {
        let body = serde_json::to_value(body).expect("wire structs serialize");
        Self {
            res_cd: code::SUCCESS.to_owned(),
            body,
            pg_cno: Some(pg_cno.to_owned()),
            reply: ReplyMode::Normal,
            deliveries: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Reply shapes of refusals: WeChat/generic APIs echo `shopTransactionId`/`mallId`; KICC Pay
/// answers `respCd`/`respMsg` with `tid`/`mercTrxNo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Kicc,
    KiccPay,
}

/// The four `X-KICC-*` headers of a KICC Pay call and the path it was sent to.
#[derive(Debug, Clone, Default)]
pub struct KiccPayHeaders {
    pub channel_id: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub authorization: Option<String>,
    /// The request's real path (under `/sandbox` when mounted): the one the client signed.
    pub path: String,
}

/// What Pay or Cancel on a payment page leads to.
#[derive(Debug)]
pub enum PageResult {
    /// Send the browser to the returnUrl with these form fields.
    Return {
        return_url: String,
        fields: Vec<(&'static str, String)>,
        /// `webhook_first`: wait for these deliveries' first attempt before sending it.
        wait_for: Vec<u64>,
    },
    /// `return_lost`: the browser stays on a completion page.
    Stay { message: String },
}

#[derive(Debug)]
pub struct PageOutcome {
    pub result: PageResult,
    pub deliveries: Vec<u64>,
    /// Schedule the sandbox's own approval after this long (auto-approve).
    pub auto_approve: Option<Duration>,
    pub pg_cno: String,
}

/// Which button was pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAction {
    Pay,
    Cancel,
}

/// Where a scenario was put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioTarget {
    /// The trade of this shopOrderNo exists and now has it.
    Trade { pg_cno: String },
    /// No trade yet for this shopOrderNo: it gets it when created.
    Order,
    /// The next new trade, whatever its shopOrderNo.
    Next,
}

/// All of the sandbox's state.
pub struct Ledger {
    trades: HashMap<String, Trade>,
    /// shopOrderNo (KICC Pay: mercTrxNo) → pgCno.
    by_order: HashMap<String, String>,
    /// pgCnos in creation order.
    order: Vec<String>,
    keys: HashMap<String, Vec<KeyUse>>,
    scenarios: HashMap<String, ScenarioSetting>,
    next_scenario: Option<ScenarioSetting>,
    calls: VecDeque<CallRecord>,
    deliveries: BTreeMap<u64, Delivery>,
    next_delivery: u64,
    nonces: HashSet<String>,
    nonce_times: VecDeque<(i64, String)>,
    /// Numbers (pgCno, approval numbers) continue from a random start, so a restarted sandbox
    /// does not hand out a pgCno the app has already stored.
    sequence: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    pub fn new() -> Self {
        let seed = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        Self {
            trades: HashMap::new(),
            by_order: HashMap::new(),
            order: Vec::new(),
            keys: HashMap::new(),
            scenarios: HashMap::new(),
            next_scenario: None,
            calls: VecDeque::new(),
            deliveries: BTreeMap::new(),
            next_delivery: 1,
            nonces: HashSet::new(),
            nonce_times: VecDeque::new(),
            sequence: seed % 100_000_000,
        }
    }

    // ------------------------------------------------------------------------------------------
    // Reading

    pub fn trade(&self, pg_cno: &str) -> Option<&Trade> {
        self.trades.get(pg_cno)
    }

    /// A trade by pgCno, or by shopOrderNo / mercTrxNo.
    pub fn find_trade(&self, id: &str) -> Option<&Trade> {
        self.trades
            .get(id)
            .or_else(|| self.by_order.get(id).and_then(|p| self.trades.get(p)))
    }

    /// Newest first.
    pub fn trades_newest_first(&self) -> impl Iterator<Item = &Trade> {
        self.order.iter().rev().filter_map(|p| self.trades.get(p))
    }

    /// Newest first.
    pub fn recent_calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.calls.iter().rev()
    }

    pub fn delivery(&self, id: u64) -> Option<&Delivery> {
        self.deliveries.get(&id)
    }

    /// Newest first.
    pub fn deliveries_newest_first(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.values().rev()
    }

    pub fn deliveries_of<'a>(&'a self, pg_cno: &'a str) -> impl Iterator<Item = &'a Delivery> {
        self.deliveries.values().filter(move |d| d.pg_cno == pg_cno)
    }

    pub fn next_scenario(&self) -> Option<ScenarioSetting> {
        self.next_scenario
    }

    // ------------------------------------------------------------------------------------------
    // Numbers

    fn next_number(&mut self) -> u64 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// A 20-digit PG transaction number: `yyMMddHHmmss` and 8 digits of the sequence.
    fn new_pg_cno(&mut self, now: &Kst) -> String {
        let n = self.next_number() % 100_000_000;
        format!("{}{n:08}", now.format("%y%m%d%H%M%S"))
    }

    // ------------------------------------------------------------------------------------------
    // Shared steps

    /// `mallId` must be ours, then `shopTransactionId` must be new today; the key is spent from
    /// here on, whatever the outcome.
    fn merchant_and_key(
        &mut self,
        ctx: &Ctx,
        mall_id: &Option<String>,
        key: &Option<String>,
        declared: Option<&str>,
    ) -> Result<String, Refusal> {
        let mall = v::required("mallId", mall_id)?;
        if mall != ctx.config.mall_id {
            return Err(Refusal::new(
                code::UNKNOWN_MERCHANT,
                format!("unknown mallId `{mall}`"),
            ));
        }
        let key = v::required("shopTransactionId", key)?;
        v::identifier("shopTransactionId", key, 60)?;
        let day = ctx.now.date_naive();
        let uses = self.keys.entry(key.to_owned()).or_default();
        if uses.iter().any(|u| u.day == day) {
            return Err(Refusal::new(
                code::DUPLICATE_REQUEST,
                format!("duplicate request: shopTransactionId `{key}` was already used today"),
            ));
        }
        uses.push(KeyUse {
            day,
            declared: declared.map(str::to_owned),
            refers: None,
        });
        Ok(key.to_owned())
    }

    fn key_made(&mut self, key: &str, day: NaiveDate, made: KeyRef) {
        if let Some(u) = self
            .keys
            .get_mut(key)
            .and_then(|uses| uses.iter_mut().rev().find(|u| u.day == day))
        {
            u.refers = Some(made);
        }
    }

    fn kiccpay_terminal(
        ctx: &Ctx,
        tid: &Option<String>,
        svc_id: &Option<String>,
        bizr_no: &Option<String>,
    ) -> Result<(), Refusal> {
        let k = &ctx.config.kiccpay;
        for (field, value, ours) in [
            ("tid", tid, &k.tid),
            ("svcId", svc_id, &k.svc_id),
            ("bizrNo", bizr_no, &k.bizr_no),
        ] {
            let given = v::required(field, value)?;
            if given != ours {
                return Err(Refusal::new(
                    code::UNKNOWN_MERCHANT,
                    format!("unknown {field} `{given}`"),
                ));
            }
        }
        Ok(())
    }

    /// The four headers and the signature over the exact path and raw body (spec 06); a nonce
    /// is good once.
    fn check_kiccpay_signature(
        &mut self,
        ctx: &Ctx,
        headers: &KiccPayHeaders,
        raw: &[u8],
    ) -> Result<(), Refusal> {
        let refuse = |why: &str| Refusal::new(code::BAD_SIGNATURE, why.to_owned());
        let (Some(channel), Some(timestamp), Some(nonce), Some(signature)) = (
            headers.channel_id.as_deref(),
            headers.timestamp.as_deref(),
            headers.nonce.as_deref(),
            headers.authorization.as_deref(),
        ) else {
            return Err(refuse(
                "X-KICC-ChannelId, X-KICC-Timestamp, X-KICC-Nonce and X-KICC-Authorization are required",
            ));
        };
        let k = &ctx.config.kiccpay;
        if channel != k.channel_id {
            return Err(refuse("unknown X-KICC-ChannelId"));
        }
        let Ok(ts) = timestamp.parse::<i64>() else {
            return Err(refuse("X-KICC-Timestamp must be milliseconds since 1970"));
        };
        let now_ms = ctx.now.timestamp_millis();
        if (now_ms - ts).abs() > NONCE_WINDOW_MS {
            return Err(refuse("X-KICC-Timestamp is more than 10 minutes from now"));
        }
        if !crypto::verify_kiccpay_signature(
            k.secret_key.expose_secret(),
            channel,
            &headers.path,
            timestamp,
            nonce,
            raw,
            signature,
        ) {
            return Err(refuse(
                "X-KICC-Authorization does not verify over ChannelId + path + Timestamp + Nonce + body",
            ));
        }
        while let Some((t, _)) = self.nonce_times.front() {
            if now_ms - t <= NONCE_WINDOW_MS {
                break;
            }
            let (_, old) = self.nonce_times.pop_front().expect("front exists");
            self.nonces.remove(&old);
        }
        if !self.nonces.insert(nonce.to_owned()) {
            return Err(refuse("X-KICC-Nonce was already used"));
        }
        self.nonce_times.push_back((now_ms, nonce.to_owned()));
        Ok(())
    }

    /// Ends every API operation: a refusal becomes KICC's error body; `malformed_reply` takes
    /// the reply of a trade that already exists.
    fn conclude(
        &mut self,
        result: Result<Outcome, Refusal>,
        request: &Value,
        style: Style,
        creates: bool,
    ) -> Outcome {
        let mut outcome = match result {
            Ok(o) => o,
            Err(r) => {
                let body = error_body(&r, request, style);
                Outcome {
                    body,
                    res_cd: r.code.to_owned(),
                    pg_cno: r.pg_cno,
                    reply: ReplyMode::Normal,
                    deliveries: Vec::new(),
                    notes: Vec::new(),
                }
            }
        };
        if !creates
            && let Some(trade) = outcome
                .pg_cno
                .as_deref()
                .and_then(|p| self.trades.get_mut(p))
            && trade.scenario.take(Scenario::MalformedReply)
        {
            outcome.reply = ReplyMode::Malformed;
            outcome
                .notes
                .push("malformed_reply: reply is not JSON".into());
        }
        outcome
    }

    /// Keeps the call, on the trade it concerns and in the recent list.
    pub fn record_call(&mut self, at: &Kst, api: &'static str, raw: &[u8], outcome: &Outcome) {
        let request_text = String::from_utf8_lossy(raw);
        let record = CallRecord {
            at: stamp(at),
            api,
            shop_transaction_id: serde_json::from_slice::<Value>(raw)
                .ok()
                .and_then(|v| v.get("shopTransactionId")?.as_str().map(str::to_owned)),
            pg_cno: outcome.pg_cno.clone(),
            res_cd: outcome.res_cd.clone(),
            notes: outcome.notes.clone(),
            request: truncate(&request_text, 2000),
            reply: truncate(&outcome.body.to_string(), 2000),
        };
        log::info!(
            "sandbox: {api} → {}{}{}",
            record.res_cd,
            record
                .pg_cno
                .as_deref()
                .map(|p| format!(" pgCno={p}"))
                .unwrap_or_default(),
            if record.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", record.notes.join("; "))
            }
        );
        if let Some(trade) = outcome
            .pg_cno
            .as_deref()
            .and_then(|p| self.trades.get_mut(p))
        {
            trade.calls.push(record.clone());
        }
        if self.calls.len() == RECENT_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back(record);
    }

    fn insert_trade(&mut self, trade: Trade) {
        self.by_order
            .insert(trade.shop_order_no.clone(), trade.pg_cno.clone());
        self.order.push(trade.pg_cno.clone());
        self.trades.insert(trade.pg_cno.clone(), trade);
    }

    /// The scenario a new trade starts with: its shopOrderNo's, else the one for the next trade.
    fn scenario_for_new(&mut self, shop_order_no: &str) -> ScenarioSetting {
        self.scenarios
            .remove(shop_order_no)
            .or_else(|| self.next_scenario.take())
            .unwrap_or_default()
    }

    /// Approves a trade (merchant, KICC Pay or the sandbox itself) and queues its approval
    /// webhook. `approval_amount_mismatch` approves one minor unit more than ordered.
    fn approve(
        &mut self,
        mall_id: &str,
        pg_cno: &str,
        now: &Kst,
        by: ApprovedBy,
    ) -> (Vec<u64>, Vec<String>) {
        let n = self.next_number();
        let mut notes = Vec::new();
        let Some(trade) = self.trades.get_mut(pg_cno) else {
            return (Vec::new(), notes);
        };
        let mut amount = trade.amount;
        if trade.scenario.is(Scenario::ApprovalAmountMismatch) {
            amount += 1;
            notes.push(format!(
                "approval_amount_mismatch: approved {amount} for an order of {}",
                trade.amount
            ));
        }
        trade.approval = Some(Approval {
            amount,
            at: *now,
            approval_no: format!("{:08}", n % 100_000_000),
            van_trx_no: format!("V{:011}", n % 100_000_000_000),
            by,
        });
        trade.phase = Phase::Approved;
        let Some(url) = trade.notify_url.clone() else {
            return (Vec::new(), notes);
        };
        let mut webhook_amount = amount;
        if trade.scenario.is(Scenario::WebhookAmountMismatch) {
            webhook_amount += 1;
            notes.push(format!(
                "webhook_amount_mismatch: webhook says {webhook_amount}, approved {amount}"
            ));
        }
        let body = wire::ApprovalNotification {
            res_cd: code::SUCCESS.into(),
            res_msg: "Success".into(),
            mall_id: mall_id.to_owned(),
            shop_order_no: trade.shop_order_no.clone(),
            pg_cno: trade.pg_cno.clone(),
            approval_date: stamp(now),
            amount_info: wire::PaidAmountInfo {
                currency: trade.currency.code().into(),
                amount: webhook_amount,
            },
        };
        let copies = self.copies(pg_cno, &mut notes);
        let ids = (0..copies)
            .map(|_| {
                self.new_delivery(
                    pg_cno,
                    DeliveryKind::Approval,
                    &url,
                    serde_json::to_value(&body).expect("serializes"),
                    now,
                    None,
                )
            })
            .collect();
        (ids, notes)
    }

    /// `webhook_storm`: `count` copies of each webhook.
    fn copies(&self, pg_cno: &str, notes: &mut Vec<String>) -> u64 {
        match self.trades.get(pg_cno) {
            Some(t) if t.scenario.is(Scenario::WebhookStorm) => {
                let n = t.scenario.count.max(1);
                notes.push(format!("webhook_storm: {n} copies at once"));
                n
            }
            _ => 1,
        }
    }

    fn new_delivery(
        &mut self,
        pg_cno: &str,
        kind: DeliveryKind,
        url: &str,
        body: Value,
        now: &Kst,
        resend_of: Option<u64>,
    ) -> u64 {
        let id = self.next_delivery;
        self.next_delivery += 1;
        self.deliveries.insert(
            id,
            Delivery {
                id,
                pg_cno: pg_cno.to_owned(),
                kind,
                url: url.to_owned(),
                body: body.to_string(),
                state: DeliveryState::Sending,
                attempts: Vec::new(),
                created_at: *now,
                resend_of,
            },
        );
        id
    }

    /// Records a cancel; returns it.
    fn apply_cancel(
        &mut self,
        pg_cno: &str,
        amount: i64,
        now: &Kst,
        api: &'static str,
        request_id: &str,
    ) -> Cancel {
        let cancel_pg_cno = self.new_pg_cno(now);
        let approval_no = format!("{:08}", self.next_number() % 100_000_000);
        let trade = self.trades.get_mut(pg_cno).expect("caller found the trade");
        let remaining_after = trade.remaining() - amount;
        let cancel = Cancel {
            cancel_pg_cno,
            amount,
            at: *now,
            api,
            request_id: request_id.to_owned(),
            remaining_after,
            status_after: if remaining_after == 0 { "TS02" } else { "TS06" },
            approval_no,
        };
        trade.cancels.push(cancel.clone());
        cancel
    }

    /// Queues the cancellation webhook (spec 05) to the revise's notifyUrl.
    fn cancel_webhook(
        &mut self,
        pg_cno: &str,
        cancel: &Cancel,
        url: &str,
        mall_id: &str,
        notes: &mut Vec<String>,
    ) -> Vec<u64> {
        let Some(trade) = self.trades.get(pg_cno) else {
            return Vec::new();
        };
        let body = wire::CancelNotification {
            res_cd: code::SUCCESS.into(),
            res_msg: "Success".into(),
            mall_id: mall_id.to_owned(),
            shop_order_no: trade.shop_order_no.clone(),
            pg_cno: pg_cno.to_owned(),
            cancel_pg_cno: cancel.cancel_pg_cno.clone(),
            cancel_date: stamp(&cancel.at),
            amount_info: wire::PaidAmountInfo {
                currency: trade.currency.code().into(),
                amount: cancel.amount,
            },
        };
        let body = serde_json::to_value(&body).expect("serializes");
        let copies = self.copies(pg_cno, notes);
        (0..copies)
            .map(|_| {
                self.new_delivery(
                    pg_cno,
                    DeliveryKind::Cancel {
                        cancel_pg_cno: cancel.cancel_pg_cno.clone(),
                    },
                    url,
                    body.clone(),
                    &cancel.at,
                    None,
                )
            })
            .collect()
    }

    // ------------------------------------------------------------------------------------------
    // WeChat Pay: create (spec 01)

    pub fn create_wechat(&mut self, ctx: &Ctx, request: &Value) -> Outcome {
        let result = parse::<wire::CreateTradeRequest>(request)
            .and_then(|req| self.try_create_wechat(ctx, req));
        self.conclude(result, request, Style::Kicc, true)
    }

    fn try_create_wechat(
        &mut self,
        ctx: &Ctx,
        req: wire::CreateTradeRequest,
    ) -> Result<Outcome, Refusal> {
        let key = self.merchant_and_key(ctx, &req.mall_id, &req.shop_transaction_id, None)?;
        let order = v::required("shopOrderNo", &req.shop_order_no)?;
        v::identifier("shopOrderNo", order, 40)?;
        let goods = v::required("goodsName", &req.goods_name)?;
        v::english("goodsName", goods, 100)?;
        let return_url = v::required("returnUrl", &req.return_url)?;
        v::http_url("returnUrl", return_url, 256)?;
        let method = match v::required("tradeType", &req.trade_type)? {
            "native" => Method::WechatNative,
            "mweb" => Method::WechatMweb,
            other => {
                return Err(Refusal::new(
                    code::MALFORMED,
                    format!("tradeType `{other}` is not native or mweb"),
                ));
            }
        };
        let notify_url = v::required("notifyUrl", &req.notify_url)?;
        v::http_url("notifyUrl", notify_url, 256)?;
        let amount_info = req
            .amount_info
            .ok_or_else(|| Refusal::new(code::MALFORMED, "amountInfo is required"))?;
        let currency = v::required("amountInfo.currency", &amount_info.currency)?;
        let currency: Currency = currency.parse().map_err(|_| {
            Refusal::new(
                code::MALFORMED,
                format!("amountInfo.currency `{currency}` is not KRW or USD"),
            )
        })?;
        let amount = v::positive("amountInfo.totalAmount", amount_info.total_amount)?;
        if let Some(c) = &req.customer_info {
            for (field, value, max) in [
                ("customerInfo.customerId", &c.customer_id, 20),
                ("customerInfo.customerName", &c.customer_name, 20),
                ("customerInfo.customerMail", &c.customer_mail, 50),
                ("customerInfo.customerAddr", &c.customer_addr, 200),
            ] {
                if let Some(value) = v::optional(value) {
                    v::max_bytes(field, value, max)?;
                }
            }
            if let Some(phone) = v::optional(&c.customer_contact_no) {
                v::digits("customerInfo.customerContactNo", phone, 11)?;
            }
        }
        if let Some(existing) = self.by_order.get(order) {
            return Err(Refusal::new(
                code::DUPLICATE_ORDER,
                format!("shopOrderNo `{order}` already has a trade ({existing})"),
            ));
        }
        let pg_cno = self.new_pg_cno(&ctx.now);
        let scenario = self.scenario_for_new(order);
        let page = match method {
            Method::WechatMweb => "mweb",
            _ => "scan",
        };
        let payment_page_url = format!("{}/wechat/{page}/{pg_cno}", ctx.public_base);
        self.insert_trade(Trade {
            pg_cno: pg_cno.clone(),
            method,
            shop_order_no: order.to_owned(),
            goods_name: goods.to_owned(),
            currency,
            amount,
            return_url: return_url.to_owned(),
            notify_url: Some(notify_url.to_owned()),
            customer: req.customer_info,
            created_at: ctx.now,
            phase: Phase::Registered,
            authorization_id: None,
            paid_at: None,
            approval: None,
            cancels: Vec::new(),
            scenario,
            calls: Vec::new(),
        });
        let mut outcome = Outcome::ok(
            wire::CreateTradeResponse {
                res_cd: code::SUCCESS.into(),
                res_msg: "Success".into(),
                shop_transaction_id: key,
                mall_id: ctx.config.mall_id.clone(),
                pg_cno: pg_cno.clone(),
                payment_page_url,
            },
            &pg_cno,
        );
        if scenario.scenario != Scenario::Approve {
            outcome.notes.push(format!(
                "scenario {} (count {})",
                scenario.scenario, scenario.count
            ));
        }
        Ok(outcome)
    }

    // ------------------------------------------------------------------------------------------
    // Payment approval v2 (spec 02)

    pub fn approve_v2(&mut self, ctx: &Ctx, request: &Value) -> Outcome {
        let result =
            parse::<wire::ApprovalRequest>(request).and_then(|req| self.try_approve_v2(ctx, req));
        self.conclude(result, request, Style::Kicc, false)
    }

    fn try_approve_v2(
        &mut self,
        ctx: &Ctx,
        req: wire::ApprovalRequest,
    ) -> Result<Outcome, Refusal> {
        let key = self.merchant_and_key(
            ctx,
            &req.mall_id,
            &req.shop_transaction_id,
            v::optional(&req.approval_req_date),
        )?;
        let order = v::required("shopOrderNo", &req.shop_order_no)?;
        v::max_bytes("shopOrderNo", order, 40)?;
        let authorization_id = v::required("authorizationId", &req.authorization_id)?;
        v::max_bytes("authorizationId", authorization_id, 60)?;
        let date = v::required("approvalReqDate", &req.approval_req_date)?;
        v::request_date("approvalReqDate", date, ctx.now.date_naive())?;
        let pg_cno = self.by_order.get(order).cloned().ok_or_else(|| {
            Refusal::new(
                code::UNKNOWN_TRANSACTION,
                format!("no trade for shopOrderNo `{order}`"),
            )
        })?;
        let trade = self.trades.get_mut(&pg_cno).expect("indexed trade exists");
        if !trade.method.is_wechat() {
            return Err(Refusal::new(
                code::WRONG_STATE,
                "a KICC Pay transaction is approved with /smpy/kiccpay/reqAprv",
            )
            .about(&pg_cno));
        }
        if trade.authorization_id.as_deref() != Some(authorization_id) {
            return Err(Refusal::new(
                code::FOREIGN_AUTHORIZATION,
                format!("authorizationId does not belong to shopOrderNo `{order}`"),
            )
            .about(&pg_cno));
        }
        let mut notes = Vec::new();
        let mut deliveries = Vec::new();
        match trade.phase {
            Phase::Authorized | Phase::Declined => {
                if trade.scenario.is(Scenario::Decline) {
                    trade.phase = Phase::Declined;
                    return Err(Refusal::new(
                        code::DECLINED,
                        "payment declined (scenario decline)",
                    )
                    .about(&pg_cno));
                }
                let (ids, n) =
                    self.approve(&ctx.config.mall_id, &pg_cno, &ctx.now, ApprovedBy::Merchant);
                deliveries = ids;
                notes.extend(n);
            }
            Phase::Approved if trade.cancels.is_empty() => {
                notes.push("already approved: same approval data".into());
            }
            _ => {
                return Err(Refusal::new(
                    code::WRONG_STATE,
                    format!("the trade is {}", trade.status_name()),
                )
                .about(&pg_cno));
            }
        }
        let trade = &self.trades[&pg_cno];
        let mut body = approval_body(ctx, trade, &key);
        if trade.scenario.is(Scenario::BadMac) {
            body.msg_auth_value = body.msg_auth_value.map(|m| corrupt_hex(&m));
            notes.push("bad_mac: msgAuthValue does not verify".into());
        }
        if trade.scenario.is(Scenario::ApprovalOtherTrade) {
            // Another trade's number and order, signed as KICC signs: only the names are wrong.
            let last = if body.pg_cno.ends_with('9') { '8' } else { '9' };
            body.pg_cno = format!("{}{last}", &body.pg_cno[..body.pg_cno.len() - 1]);
            body.shop_order_no = format!("{}-X", body.shop_order_no);
            body.msg_auth_value = Some(crypto::msg_auth_value(
                ctx.config.secret_key.expose_secret(),
                &[
                    &body.pg_cno,
                    &body.amount.to_string(),
                    &body.transaction_date,
                ],
            ));
            notes.push(format!(
                "approval_other_trade: the reply names {} / {}",
                body.pg_cno, body.shop_order_no
            ));
        }
        let late = trade
            .scenario
            .is(Scenario::ApprovalLate)
            .then(|| Duration::from_millis(trade.scenario.count));
        self.key_made(
            &key,
            ctx.now.date_naive(),
            KeyRef::Approval {
                pg_cno: pg_cno.clone(),
            },
        );
        let mut outcome = Outcome::ok(body, &pg_cno);
        outcome.deliveries = deliveries;
        if let Some(delay) = late {
            outcome.reply = ReplyMode::Late(delay);
            notes.push(format!(
                "approval_late: reply after {} ms",
                delay.as_millis()
            ));
        }
        outcome.notes = notes;
        Ok(outcome)
    }

    // ------------------------------------------------------------------------------------------
    // WeChat Pay status check (spec 06)

    pub fn find_wechat(&mut self, ctx: &Ctx, request: &Value) -> Outcome {
        let result = parse::<wire::FindRequest>(request).and_then(|req| self.try_find(ctx, req));
        self.conclude(result, request, Style::Kicc, false)
    }

    fn try_find(&mut self, ctx: &Ctx, req: wire::FindRequest) -> Result<Outcome, Refusal> {
        let key = self.merchant_and_key(ctx, &req.mall_id, &req.shop_transaction_id, None)?;
        let pg_cno = v::required("pgCno", &req.pg_cno)?;
        let trade = self.trades.get(pg_cno).ok_or_else(|| {
            Refusal::new(code::UNKNOWN_TRANSACTION, format!("no trade `{pg_cno}`"))
        })?;
        let mall_id = ctx.config.mall_id.clone();
        if let Some(cancel_pg_cno) = v::optional(&req.cancel_pg_cno) {
            let cancel = trade
                .cancels
                .iter()
                .find(|c| c.cancel_pg_cno == cancel_pg_cno)
                .ok_or_else(|| {
                    Refusal::new(
                        code::UNKNOWN_TRANSACTION,
                        format!("no cancel `{cancel_pg_cno}` of trade `{pg_cno}`"),
                    )
                    .about(pg_cno)
                })?;
            return Ok(Outcome::ok(
                wire::FindCancelResponse {
                    res_cd: code::SUCCESS.into(),
                    res_msg: "Success".into(),
                    shop_transaction_id: key,
                    mall_id,
                    pg_cno: pg_cno.to_owned(),
                    cancel_pg_cno: cancel.cancel_pg_cno.clone(),
                    transaction_date: stamp(&cancel.at),
                    cancel_status: cancel.status_after.to_owned(),
                    amount_info: wire::CancelAmountInfo {
                        currency: trade.currency.code().into(),
                        tot_amount: cancel.amount,
                    },
                },
                pg_cno,
            ));
        }
        let status = trade.status_code();
        let detail = match trade.phase {
            Phase::Registered => "Waiting for the shopper to pay",
            Phase::ShopperCancelled => "The shopper cancelled the payment",
            Phase::Authorized => "Paid by the shopper, waiting for approval",
            Phase::Declined => "Payment declined",
            _ => status_message(status),
        };
        let amount = match &trade.approval {
            Some(a) => a.amount,
            None => trade.amount,
        };
        Ok(Outcome::ok(
            wire::FindPaymentResponse {
                res_cd: code::SUCCESS.into(),
                res_msg: "Success".into(),
                shop_transaction_id: key,
                mall_id,
                shop_order_no: trade.shop_order_no.clone(),
                pg_cno: pg_cno.to_owned(),
                approval_date: trade
                    .approval
                    .as_ref()
                    .map(|a| stamp(&a.at))
                    .unwrap_or_default(),
                status_cd: status.to_owned(),
                res_detail_msg: url::form_urlencoded::byte_serialize(detail.as_bytes()).collect(),
                amount_info: wire::PaidAmountInfo {
                    currency: trade.currency.code().into(),
                    amount,
                },
            },
            pg_cno,
        ))
    }

    // ------------------------------------------------------------------------------------------
    // Cancels: WeChat revise, generic revise (spec 06)

    /// What both revise APIs check first (spec 06): merchant and key, pgCno, reviseTypeCode,
    /// cancelReqDate, and msgAuthValue over `pgCno|shopTransactionId`. Returns the key, the
    /// pgCno and whether the cancel is partial.
    fn revise_checks<'r>(
        &mut self,
        ctx: &Ctx,
        f: ReviseFields<'r>,
        allowed: &[&str],
    ) -> Result<(String, &'r str, bool), Refusal> {
        let key = self.merchant_and_key(ctx, f.mall_id, f.key, v::optional(f.cancel_req_date))?;
        let pg_cno = v::required("pgCno", f.pg_cno)?;
        v::max_bytes("pgCno", pg_cno, 60)?;
        let partial = revise_type(f.type_code, allowed)?;
        let date = v::required("cancelReqDate", f.cancel_req_date)?;
        v::request_date("cancelReqDate", date, ctx.now.date_naive())?;
        check_msg_auth_value(ctx, pg_cno, &key, f.msg_auth_value)?;
        Ok((key, pg_cno, partial))
    }

    pub fn revise_wechat(&mut self, ctx: &Ctx, request: &Value) -> Outcome {
        let result = parse::<wire::WechatReviseRequest>(request)
            .and_then(|req| self.try_revise_wechat(ctx, req));
        self.conclude(result, request, Style::Kicc, false)
    }

    fn try_revise_wechat(
        &mut self,
        ctx: &Ctx,
        req: wire::WechatReviseRequest,
    ) -> Result<Outcome, Refusal> {
        let (key, pg_cno, partial) = self.revise_checks(
            ctx,
            ReviseFields {
                mall_id: &req.mall_id,
                key: &req.shop_transaction_id,
                pg_cno: &req.pg_cno,
                type_code: &req.revise_type_code,
                cancel_req_date: &req.cancel_req_date,
                msg_auth_value: &req.msg_auth_value,
            },
            &["40", "32"],
        )?;
        let notify_url = v::optional(&req.notify_url);
        if let Some(url) = notify_url {
            v::http_url("notifyUrl", url, 1000)?;
        }
        if let Some(memo) = v::optional(&req.memo) {
            v::max_bytes("memo", memo, 400)?;
        }
        if let Some(reg_id) = v::optional(&req.reg_id) {
            v::max_bytes("regId", reg_id, 40)?;
        }
        let (currency, tot_amount) = match &req.amount_info {
            Some(a) => (v::optional(&a.currency), a.tot_amount),
            None => (None, None),
        };
        let trade = self.cancellable(pg_cno, true)?;
        if let Some(currency) = currency
            && currency != trade.currency.code()
        {
            return Err(Refusal::new(
                code::MALFORMED,
                format!(
                    "amountInfo.currency `{currency}` is not the trade's {}",
                    trade.currency
                ),
            )
            .about(pg_cno));
        }
        let requested = if partial {
            Some(v::positive("amountInfo.totAmount", tot_amount).map_err(|r| r.about(pg_cno))?)
        } else {
            None
        };
        let pg_cno = pg_cno.to_owned();
        let mut notes = Vec::new();
        let amount = self.cancel_amount(&pg_cno, requested, &mut notes)?;
        let cancel = self.apply_cancel(&pg_cno, amount, &ctx.now, api::WECHAT_REVISE, &key);
        let deliveries = match notify_url {
            Some(url) => {
                let mall_id = ctx.config.mall_id.clone();
                self.cancel_webhook(&pg_cno, &cancel, url, &mall_id, &mut notes)
            }
            None => {
                notes.push("no notifyUrl: no cancellation webhook".into());
                Vec::new()
            }
        };
        self.key_made(
            &key,
            ctx.now.date_naive(),
            KeyRef::Cancel {
                pg_cno: pg_cno.clone(),
                cancel_pg_cno: cancel.cancel_pg_cno.clone(),
            },
        );
        let mut outcome = Outcome::ok(
            wire::WechatReviseResponse {
                res_cd: code::SUCCESS.into(),
                res_msg: "Success".into(),
                shop_transaction_id: key,
                mall_id: ctx.config.mall_id.clone(),
                pg_cno: pg_cno.clone(),
                cancel_pg_cno: cancel.cancel_pg_cno.clone(),
                cancel_date: stamp(&cancel.at),
            },
            &pg_cno,
        );
        outcome.deliveries = deliveries;
        self.reply_lost(&pg_cno, &mut outcome, notes);
        Ok(outcome)
    }

    pub fn revise_generic(&mut self, ctx: &Ctx, request: &Value) -> Outcome {
        let result = parse::<wire::GenericReviseRequest>(request)
            .and_then(|req| self.try_revise_generic(ctx, req));
        self.conclude(result, request, Style::Kicc, false)
    }

    fn try_revise_generic(
        &mut self,
        ctx: &Ctx,
        req: wire::GenericReviseRequest,
    ) -> Result<Outcome, Refusal> {
        let (key, pg_cno, partial) = self.revise_checks(
            ctx,
            ReviseFields {
                mall_id: &req.mall_id,
                key: &req.shop_transaction_id,
                pg_cno: &req.pg_cno,
                type_code: &req.revise_type_code,
                cancel_req_date: &req.cancel_req_date,
                msg_auth_value: &req.msg_auth_value,
            },
            &["40", "32", "33"],
        )?;
        if let Some(message) = v::optional(&req.revise_message) {
            v::max_bytes("reviseMessage", message, 100)?;
        }
        self.cancellable(pg_cno, false)?;
        let requested = if partial {
            Some(v::positive("amount", req.amount).map_err(|r| r.about(pg_cno))?)
        } else {
            None
        };
        let pg_cno = pg_cno.to_owned();
        let mut notes = Vec::new();
        let amount = self.cancel_amount(&pg_cno, requested, &mut notes)?;
        let cancel = self.apply_cancel(&pg_cno, amount, &ctx.now, api::REVISE, &key);
        self.key_made(
            &key,
            ctx.now.date_naive(),
            KeyRef::Cancel {
                pg_cno: pg_cno.clone(),
                cancel_pg_cno: cancel.cancel_pg_cno.clone(),
            },
        );
        let trade = &self.trades[&pg_cno];
        let body = cancel_body(ctx, trade, &cancel, &key, false);
        let mut outcome = Outcome::ok(body, &pg_cno);
        self.reply_lost(&pg_cno, &mut outcome, notes);
        Ok(outcome)
    }

    /// The trade exists, is of the right kind, and has money left to cancel.
    fn cancellable(&self, pg_cno: &str, wechat_only: bool) -> Result<&Trade, Refusal> {
        let trade = self.trades.get(pg_cno).ok_or_else(|| {
            Refusal::new(code::UNKNOWN_TRANSACTION, format!("no trade `{pg_cno}`"))
        })?;
        if wechat_only && !trade.method.is_wechat() {
            return Err(Refusal::new(
                code::WRONG_STATE,
                "a KICC Pay transaction is cancelled with /smpy/kiccpay/reqCancel",
            )
            .about(pg_cno));
        }
        if trade.remaining() == 0 {
            return Err(Refusal::new(
                code::WRONG_STATE,
                format!("nothing to cancel: the trade is {}", trade.status_name()),
            )
            .about(pg_cno));
        }
        Ok(trade)
    }

    /// `cancel_fails`, then the amount: all that remains, or the part asked (≤ what remains).
    fn cancel_amount(
        &mut self,
        pg_cno: &str,
        requested: Option<i64>,
        notes: &mut Vec<String>,
    ) -> Result<i64, Refusal> {
        let trade = self.trades.get_mut(pg_cno).expect("caller found the trade");
        if trade.scenario.take(Scenario::CancelFails) {
            notes.push(format!(
                "cancel_fails: {} failure(s) left",
                trade.scenario.count
            ));
            return Err(
                Refusal::new(code::CANCEL_FAILED, "cancel failed (scenario cancel_fails)")
                    .about(pg_cno),
            );
        }
        let remaining = trade.remaining();
        match requested {
            None => Ok(remaining),
            Some(amount) if amount > remaining => Err(Refusal::new(
                code::EXCEEDS_REMAINING,
                format!("cancel amount {amount} exceeds the remaining {remaining}"),
            )
            .about(pg_cno)),
            Some(amount) => Ok(amount),
        }
    }

    /// `cancel_reply_lost`: the cancel is done; its reply is not delivered.
    fn reply_lost(&mut self, pg_cno: &str, outcome: &mut Outcome, mut notes: Vec<String>) {
        if let Some(trade) = self.trades.get_mut(pg_cno)
            && trade.scenario.take(Scenario::CancelReplyLost)
        {
            outcome.reply = ReplyMode::Lost;
            notes.push("cancel_reply_lost: cancelled, connection dropped".into());
        }
        outcome.notes = notes;
    }

    // ------------------------------------------------------------------------------------------
    // retrieveTransaction (spec 06)

    pub fn retrieve(&mut self, ctx: &Ctx, request: &Value) -> Outcome {
        let result =
            parse::<wire::RetrieveRequest>(request).and_then(|req| self.try_retrieve(ctx, req));
        self.conclude(result, request, Style::Kicc, false)
    }

    fn try_retrieve(&mut self, ctx: &Ctx, req: wire::RetrieveRequest) -> Result<Outcome, Refusal> {
        let mall = v::required("mallId", &req.mall_id)?;
        if mall != ctx.config.mall_id {
            return Err(Refusal::new(
                code::UNKNOWN_MERCHANT,
                format!("unknown mallId `{mall}`"),
            ));
        }
        let key = v::required("shopTransactionId", &req.shop_transaction_id)?;
        let date = v::required("transactionDate", &req.transaction_date)?;
        v::date8("transactionDate", date)?;
        let today = ctx.now.date_naive();
        let yesterday = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        let not_found = || {
            Refusal::new(
                code::UNKNOWN_TRANSACTION,
                format!("no request `{key}` of {date} (yesterday and today only)"),
            )
        };
        let found = self
            .keys
            .get(key)
            .and_then(|uses| {
                uses.iter().rev().find(|u| {
                    u.day >= yesterday
                        && (u.day.format("%Y%m%d").to_string() == date
                            || u.declared.as_deref() == Some(date))
                })
            })
            .ok_or_else(not_found)?;
        match found.refers.clone() {
            None => Err(Refusal::new(
                code::UNKNOWN_TRANSACTION,
                format!("request `{key}` made no approval or cancel"),
            )),
            Some(KeyRef::Approval { pg_cno }) => {
                let trade = &self.trades[&pg_cno];
                let mut body = approval_body(ctx, trade, key);
                body.msg_auth_value = None;
                Ok(Outcome::ok(body, &pg_cno))
            }
            Some(KeyRef::Cancel {
                pg_cno,
                cancel_pg_cno,
            }) => {
                let trade = &self.trades[&pg_cno];
                let cancel = trade
                    .cancels
                    .iter()
                    .find(|c| c.cancel_pg_cno == cancel_pg_cno)
                    .expect("a recorded cancel stays");
                Ok(Outcome::ok(
                    cancel_body(ctx, trade, cancel, key, true),
                    &pg_cno,
                ))
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // KICC Pay (spec 03, 06)

    pub fn kiccpay_approve(
        &mut self,
        ctx: &Ctx,
        headers: &KiccPayHeaders,
        raw: &[u8],
        request: &Value,
    ) -> Outcome {
        let result = self
            .check_kiccpay_signature(ctx, headers, raw)
            .and_then(|()| parse::<wire::KiccPayApprovalRequest>(request))
            .and_then(|req| self.try_kiccpay_approve(ctx, req));
        self.conclude(result, request, Style::KiccPay, false)
    }

    /// The checks `reqAprv` and `reqRtran` share: the same body, the same trade.
    fn kiccpay_trade_of(
        &self,
        ctx: &Ctx,
        req: &wire::KiccPayApprovalRequest,
    ) -> Result<String, Refusal> {
        Self::kiccpay_terminal(ctx, &req.tid, &req.svc_id, &req.bizr_no)?;
        let merc = v::required("mercTrxNo", &req.merc_trx_no)?;
        v::max_bytes("mercTrxNo", merc, 40)?;
        let token = v::required("tokenKey", &req.token_key)?;
        v::required("alotMonth", &req.alot_month)?;
        let amount = v::positive("trxAmt", req.trx_amt)?;
        v::not_negative("vatAmt", req.vat_amt)?;
        v::date8("tranDt", v::required("tranDt", &req.tran_dt)?)?;
        v::time6("tranTm", v::required("tranTm", &req.tran_tm)?)?;
        if let Some(user_data) = v::optional(&req.user_data) {
            v::max_bytes("userData", user_data, 512)?;
        }
        let trade = self
            .by_order
            .get(merc)
            .and_then(|p| self.trades.get(p))
            .filter(|t| t.method == Method::KiccPay)
            .ok_or_else(|| {
                Refusal::new(
                    code::UNKNOWN_TRANSACTION,
                    format!("no KICC Pay window was opened for mercTrxNo `{merc}`"),
                )
            })?;
        let k = &ctx.config.kiccpay;
        let authorization_id =
            crypto::decrypt_token_key(k.aes_key.expose_secret(), k.aes_iv.expose_secret(), token);
        if authorization_id.is_none() || authorization_id != trade.authorization_id {
            return Err(Refusal::new(
                code::FOREIGN_AUTHORIZATION,
                "tokenKey does not decrypt to the authorizationId issued for this mercTrxNo",
            )
            .about(&trade.pg_cno));
        }
        if amount != trade.amount {
            return Err(Refusal::new(
                code::AMOUNT_MISMATCH,
                format!(
                    "trxAmt {amount} is not the window's amount {}",
                    trade.amount
                ),
            )
            .about(&trade.pg_cno));
        }
        Ok(trade.pg_cno.clone())
    }

    fn try_kiccpay_approve(
        &mut self,
        ctx: &Ctx,
        req: wire::KiccPayApprovalRequest,
    ) -> Result<Outcome, Refusal> {
        let pg_cno = self.kiccpay_trade_of(ctx, &req)?;
        let trade = self.trades.get_mut(&pg_cno).expect("found above");
        let mut notes = Vec::new();
        match trade.phase {
            Phase::Authorized | Phase::Declined => {
                if trade.scenario.is(Scenario::Decline) {
                    trade.phase = Phase::Declined;
                    return Err(Refusal::new(
                        code::DECLINED,
                        "payment declined (scenario decline)",
                    )
                    .about(&pg_cno));
                }
                let (_, n) =
                    self.approve(&ctx.config.mall_id, &pg_cno, &ctx.now, ApprovedBy::Merchant);
                notes.extend(n);
            }
            Phase::Approved if trade.cancels.is_empty() => {
                notes.push("already approved: same approval data".into());
            }
            _ => {
                return Err(Refusal::new(
                    code::WRONG_STATE,
                    format!("the trade is {}", trade.status_name()),
                )
                .about(&pg_cno));
            }
        }
        let trade = &self.trades[&pg_cno];
        let approval = trade.approval.as_ref().expect("approved above");
        let k = &ctx.config.kiccpay;
        let body = wire::KiccPayApprovalResponse {
            resp_cd: code::SUCCESS.into(),
            resp_msg: "Approval Success".into(),
            tid: k.tid.clone(),
            svc_id: k.svc_id.clone(),
            bizr_no: k.bizr_no.clone(),
            merc_trx_no: trade.shop_order_no.clone(),
            trx_dt: approval.at.format("%Y%m%d").to_string(),
            trx_tm: approval.at.format("%H%M%S").to_string(),
            iss_fm_cd: "06".into(),
            iss_fm_nm: "KB Kookmin Card".into(),
            purch_fm_cd: "06".into(),
            purch_fm_nm: "KB Kookmin Card".into(),
            jo_shop_no: k.bizr_no.clone(),
            aprv_dt: approval.at.format("%Y%m%d").to_string(),
            aprv_tm: approval.at.format("%H%M%S").to_string(),
            aprv_no: approval.approval_no.clone(),
            van_trx_no: approval.van_trx_no.clone(),
            card_confirm_no: "1234-56**-****-1234".into(),
            trx_amt: approval.amount,
        };
        let late = trade
            .scenario
            .is(Scenario::ApprovalLate)
            .then(|| Duration::from_millis(trade.scenario.count));
        let mut outcome = Outcome::ok(body, &pg_cno);
        if let Some(delay) = late {
            outcome.reply = ReplyMode::Late(delay);
            notes.push(format!(
                "approval_late: reply after {} ms",
                delay.as_millis()
            ));
        }
        outcome.notes = notes;
        Ok(outcome)
    }

    pub fn kiccpay_net_cancel(
        &mut self,
        ctx: &Ctx,
        headers: &KiccPayHeaders,
        raw: &[u8],
        request: &Value,
    ) -> Outcome {
        let result = self
            .check_kiccpay_signature(ctx, headers, raw)
            .and_then(|()| parse::<wire::KiccPayApprovalRequest>(request))
            .and_then(|req| self.try_kiccpay_net_cancel(ctx, req));
        self.conclude(result, request, Style::KiccPay, false)
    }

    fn try_kiccpay_net_cancel(
        &mut self,
        ctx: &Ctx,
        req: wire::KiccPayApprovalRequest,
    ) -> Result<Outcome, Refusal> {
        let pg_cno = self.kiccpay_trade_of(ctx, &req)?;
        let trade = &self.trades[&pg_cno];
        let merc_trx_no = trade.shop_order_no.clone();
        let mut notes = Vec::new();
        let message = match trade.phase {
            Phase::Approved if trade.cancels.is_empty() => {
                let amount = self.cancel_amount(&pg_cno, None, &mut notes)?;
                self.apply_cancel(
                    &pg_cno,
                    amount,
                    &ctx.now,
                    api::KICCPAY_NET_CANCEL,
                    &merc_trx_no,
                );
                let trade = self.trades.get_mut(&pg_cno).expect("exists");
                trade.phase = Phase::NetCancelled;
                if let Some(last) = trade.cancels.last_mut() {
                    last.status_after = "TS12";
                }
                "Net-cancel Success"
            }
            Phase::NetCancelled => "Already net-cancelled",
            Phase::Approved => {
                return Err(Refusal::new(
                    code::WRONG_STATE,
                    "the approval was already partly cancelled: use reqCancel",
                )
                .about(&pg_cno));
            }
            _ => "Nothing to cancel: never approved",
        };
        let mut outcome = Outcome::ok(
            wire::KiccPayNetCancelResponse {
                resp_cd: code::SUCCESS.into(),
                resp_msg: message.into(),
                tid: ctx.config.kiccpay.tid.clone(),
                merc_trx_no,
            },
            &pg_cno,
        );
        self.reply_lost(&pg_cno, &mut outcome, notes);
        Ok(outcome)
    }

    pub fn kiccpay_cancel(
        &mut self,
        ctx: &Ctx,
        headers: &KiccPayHeaders,
        raw: &[u8],
        request: &Value,
    ) -> Outcome {
        let result = self
            .check_kiccpay_signature(ctx, headers, raw)
            .and_then(|()| parse::<wire::KiccPayCancelRequest>(request))
            .and_then(|req| self.try_kiccpay_cancel(ctx, req));
        self.conclude(result, request, Style::KiccPay, false)
    }

    fn try_kiccpay_cancel(
        &mut self,
        ctx: &Ctx,
        req: wire::KiccPayCancelRequest,
    ) -> Result<Outcome, Refusal> {
        Self::kiccpay_terminal(ctx, &req.tid, &req.svc_id, &req.bizr_no)?;
        let merc = v::required("mercTrxNo", &req.merc_trx_no)?;
        v::identifier("mercTrxNo", merc, 40)?;
        let wcc = v::required("wcc", &req.wcc)?;
        let cnd = v::required("cndTrxNo", &req.cnd_trx_no)?;
        let amount = v::positive("trxAmt", req.trx_amt)?;
        v::date8("tranDt", v::required("tranDt", &req.tran_dt)?)?;
        v::time6("tranTm", v::required("tranTm", &req.tran_tm)?)?;
        let trade = match wcc {
            "G" => self.by_order.get(cnd).and_then(|p| self.trades.get(p)),
            "T" => self
                .trades
                .values()
                .find(|t| t.approval.as_ref().is_some_and(|a| a.van_trx_no == cnd)),
            other => {
                return Err(Refusal::new(
                    code::MALFORMED,
                    format!("wcc `{other}` is not G (merchant number) or T (VAN number)"),
                ));
            }
        }
        .filter(|t| t.method == Method::KiccPay)
        .ok_or_else(|| {
            Refusal::new(
                code::UNKNOWN_TRANSACTION,
                format!("no KICC Pay approval `{cnd}`"),
            )
        })?;
        let pg_cno = trade.pg_cno.clone();
        let respond = |cancel: &Cancel| wire::KiccPayCancelResponse {
            resp_cd: code::SUCCESS.into(),
            resp_msg: "Cancel Success".into(),
            tid: ctx.config.kiccpay.tid.clone(),
            merc_trx_no: cancel.request_id.clone(),
            cnd_trx_no: cnd.to_owned(),
            trx_amt: cancel.amount,
            aprv_dt: cancel.at.format("%Y%m%d").to_string(),
            aprv_no: cancel.approval_no.clone(),
        };
        // The same cancel sent again (same mercTrxNo): its result again, no second cancel.
        if let Some(done) = trade
            .cancels
            .iter()
            .find(|c| c.api == api::KICCPAY_CANCEL && c.request_id == merc)
        {
            let mut outcome = Outcome::ok(respond(done), &pg_cno);
            outcome
                .notes
                .push("same mercTrxNo as an earlier cancel: its result, once".into());
            return Ok(outcome);
        }
        if let Some(approval) = &trade.approval {
            let date = approval.at.format("%Y%m%d").to_string();
            if v::optional(&req.org_aprv_dt).is_some_and(|d| d != date)
                || v::optional(&req.org_aprv_no).is_some_and(|n| n != approval.approval_no)
            {
                return Err(Refusal::new(
                    code::UNKNOWN_TRANSACTION,
                    "orgAprvDt/orgAprvNo do not match the approval",
                )
                .about(&pg_cno));
            }
        }
        self.cancellable(&pg_cno, false)?;
        let mut notes = Vec::new();
        let amount = self.cancel_amount(&pg_cno, Some(amount), &mut notes)?;
        let cancel = self.apply_cancel(&pg_cno, amount, &ctx.now, api::KICCPAY_CANCEL, merc);
        let mut outcome = Outcome::ok(respond(&cancel), &pg_cno);
        self.reply_lost(&pg_cno, &mut outcome, notes);
        Ok(outcome)
    }

    // ------------------------------------------------------------------------------------------
    // Payment pages

    /// `GET /kiccpay/window`: the KICC Pay trade of this mercTrxNo, created or, while unpaid,
    /// updated to the latest window's amount and return address.
    pub fn open_kiccpay_window(
        &mut self,
        now: &Kst,
        merc_trx_no: &str,
        amount: i64,
        goods_name: &str,
        return_url: &str,
    ) -> Result<String, String> {
        if let Some(pg_cno) = self.by_order.get(merc_trx_no).cloned() {
            let trade = self.trades.get_mut(&pg_cno).expect("indexed trade exists");
            if trade.method != Method::KiccPay {
                return Err(format!("order {merc_trx_no} is already a WeChat Pay trade"));
            }
            if !matches!(trade.phase, Phase::Registered | Phase::ShopperCancelled) {
                return Err(format!(
                    "order {merc_trx_no} is already {}",
                    trade.status_name()
                ));
            }
            trade.amount = amount;
            trade.goods_name = goods_name.to_owned();
            trade.return_url = return_url.to_owned();
            return Ok(pg_cno);
        }
        let pg_cno = self.new_pg_cno(now);
        let scenario = self.scenario_for_new(merc_trx_no);
        self.insert_trade(Trade {
            pg_cno: pg_cno.clone(),
            method: Method::KiccPay,
            shop_order_no: merc_trx_no.to_owned(),
            goods_name: goods_name.to_owned(),
            currency: Currency::Krw,
            amount,
            return_url: return_url.to_owned(),
            notify_url: None,
            customer: None,
            created_at: *now,
            phase: Phase::Registered,
            authorization_id: None,
            paid_at: None,
            approval: None,
            cancels: Vec::new(),
            scenario,
            calls: Vec::new(),
        });
        Ok(pg_cno)
    }

    /// Pay or Cancel on a payment page (WeChat scan/mweb, KICC Pay window).
    pub fn page_action(
        &mut self,
        ctx: &Ctx,
        pg_cno: &str,
        action: PageAction,
    ) -> Result<PageOutcome, String> {
        let now = &ctx.now;
        let trade = self
            .trades
            .get_mut(pg_cno)
            .ok_or_else(|| format!("there is no payment {pg_cno}"))?;
        if !matches!(trade.phase, Phase::Registered | Phase::ShopperCancelled) {
            return Err(format!("this payment is already {}", trade.status_name()));
        }
        let cancelled = |trade: &Trade, message: &str| PageResult::Return {
            return_url: trade.return_url.clone(),
            fields: vec![
                ("resCd", code::SHOPPER_CANCELLED.to_owned()),
                ("resMsg", message.to_owned()),
                ("shopOrderNo", trade.shop_order_no.clone()),
            ],
            wait_for: Vec::new(),
        };
        let simple = |result| PageOutcome {
            result,
            deliveries: Vec::new(),
            auto_approve: None,
            pg_cno: pg_cno.to_owned(),
        };
        if action == PageAction::Cancel {
            trade.phase = Phase::ShopperCancelled;
            return Ok(simple(cancelled(trade, "Cancelled by the shopper")));
        }
        if trade.scenario.is(Scenario::ShopperCancel) {
            trade.phase = Phase::ShopperCancelled;
            return Ok(simple(cancelled(
                trade,
                "Cancelled by the shopper (scenario shopper_cancel)",
            )));
        }
        let authorization_id = format!("SBXAUTH{}", uuid::Uuid::new_v4().simple());
        trade.authorization_id = Some(authorization_id.clone());
        trade.phase = Phase::Authorized;
        trade.paid_at = Some(*now);
        let fields = vec![
            ("resCd", code::SUCCESS.to_owned()),
            ("resMsg", "Success".to_owned()),
            ("shopOrderNo", trade.shop_order_no.clone()),
            ("authorizationId", authorization_id),
        ];
        let return_url = trade.return_url.clone();
        let wechat = trade.method.is_wechat();
        let scenario = trade.scenario.scenario;
        match scenario {
            Scenario::WebhookFirst | Scenario::ReturnLost if wechat => {
                let (deliveries, _) =
                    self.approve(&ctx.config.mall_id, pg_cno, now, ApprovedBy::Sandbox);
                let result = if scenario == Scenario::WebhookFirst {
                    PageResult::Return {
                        return_url,
                        fields,
                        wait_for: deliveries.clone(),
                    }
                } else {
                    PageResult::Stay {
                        message: "Payment complete. You can close this page.".into(),
                    }
                };
                Ok(PageOutcome {
                    result,
                    deliveries,
                    auto_approve: None,
                    pg_cno: pg_cno.to_owned(),
                })
            }
            Scenario::ReturnLost => Ok(simple(PageResult::Stay {
                message: "Payment complete. You can close this page.".into(),
            })),
            _ => Ok(PageOutcome {
                result: PageResult::Return {
                    return_url,
                    fields,
                    wait_for: Vec::new(),
                },
                deliveries: Vec::new(),
                auto_approve: ctx
                    .config
                    .auto_approve
                    .filter(|_| wechat && scenario != Scenario::Decline),
                pg_cno: pg_cno.to_owned(),
            }),
        }
    }

    /// The sandbox's own approval after `SANDBOX_AUTO_APPROVE_MS`: only a WeChat trade still
    /// paid and unapproved.
    pub fn auto_approve(&mut self, ctx: &Ctx, pg_cno: &str) -> Vec<u64> {
        match self.trades.get(pg_cno) {
            Some(t)
                if t.method.is_wechat()
                    && t.phase == Phase::Authorized
                    && !t.scenario.is(Scenario::Decline) =>
            {
                log::info!("sandbox: auto-approving {pg_cno}");
                self.approve(&ctx.config.mall_id, pg_cno, &ctx.now, ApprovedBy::Sandbox)
                    .0
            }
            _ => Vec::new(),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Webhook deliveries

    /// The next attempt of a delivery, or `None` when it is finished. `webhook_fails` drops it.
    pub fn begin_attempt(&mut self, id: u64) -> Option<AttemptPlan> {
        let delivery = self.deliveries.get(&id)?;
        if delivery.state != DeliveryState::Sending {
            return None;
        }
        let number = u32::try_from(delivery.attempts.len()).ok()? + 1;
        if number > MAX_WEBHOOK_ATTEMPTS {
            return None;
        }
        let dropped = self
            .trades
            .get_mut(&delivery.pg_cno)
            .is_some_and(|t| t.scenario.take(Scenario::WebhookFails));
        Some(AttemptPlan {
            number,
            url: delivery.url.clone(),
            body: delivery.body.clone(),
            dropped,
        })
    }

    /// Records an attempt; true when the delivery is finished (acked, or the last attempt).
    pub fn end_attempt(
        &mut self,
        id: u64,
        number: u32,
        at: &Kst,
        outcome: AttemptOutcome,
        acked: bool,
        elapsed: Option<std::time::Duration>,
    ) -> bool {
        let Some(delivery) = self.deliveries.get_mut(&id) else {
            return true;
        };
        log::info!(
            "sandbox: webhook {id} ({}) attempt {number} to {}: {}",
            delivery.pg_cno,
            delivery.url,
            match &outcome {
                AttemptOutcome::Http { status, .. } =>
                    format!("HTTP {status}{}", if acked { ", acked" } else { "" }),
                AttemptOutcome::Error { error } => format!("error: {error}"),
                AttemptOutcome::Dropped => "dropped (scenario webhook_fails)".into(),
            }
        );
        delivery.attempts.push(Attempt {
            number,
            at: stamp(at),
            outcome,
            acked,
            elapsed_ms: elapsed.map(|e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX)),
        });
        if acked {
            delivery.state = DeliveryState::Acked;
        } else if number >= MAX_WEBHOOK_ATTEMPTS {
            delivery.state = DeliveryState::GaveUp;
        }
        delivery.state != DeliveryState::Sending
    }

    /// A new delivery of the same body to the same address (the console's Resend).
    pub fn resend(&mut self, id: u64, now: &Kst) -> Option<u64> {
        let old = self.deliveries.get(&id)?.clone();
        let body = serde_json::from_str(&old.body).unwrap_or(Value::String(old.body.clone()));
        Some(self.new_delivery(&old.pg_cno, old.kind, &old.url, body, now, Some(id)))
    }

    // ------------------------------------------------------------------------------------------
    // Scenarios

    pub fn set_scenario(
        &mut self,
        shop_order_no: Option<&str>,
        setting: ScenarioSetting,
    ) -> ScenarioTarget {
        match shop_order_no {
            None => {
                self.next_scenario = Some(setting);
                ScenarioTarget::Next
            }
            Some(order) => match self.by_order.get(order) {
                Some(pg_cno) => {
                    let pg_cno = pg_cno.clone();
                    if let Some(t) = self.trades.get_mut(&pg_cno) {
                        t.scenario = setting;
                    }
                    ScenarioTarget::Trade { pg_cno }
                }
                None => {
                    self.scenarios.insert(order.to_owned(), setting);
                    ScenarioTarget::Order
                }
            },
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Pure helpers

fn parse<T: DeserializeOwned>(request: &Value) -> Result<T, Refusal> {
    if !request.is_object() {
        return Err(Refusal::new(
            code::MALFORMED,
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(request.clone())
        .map_err(|e| Refusal::new(code::MALFORMED, format!("malformed request: {e}")))
}

/// The request fields both revise APIs share.
struct ReviseFields<'r> {
    mall_id: &'r Option<String>,
    key: &'r Option<String>,
    pg_cno: &'r Option<String>,
    type_code: &'r Option<String>,
    cancel_req_date: &'r Option<String>,
    msg_auth_value: &'r Option<String>,
}

fn revise_type(value: &Option<String>, allowed: &[&str]) -> Result<bool, Refusal> {
    let code_given = v::required("reviseTypeCode", value)?;
    if !allowed.contains(&code_given) {
        return Err(Refusal::new(
            code::MALFORMED,
            format!(
                "reviseTypeCode `{code_given}` is not one of {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(code_given != "40")
}

/// The revise's msgAuthValue: HMAC over `pgCno|shopTransactionId` (spec 06).
fn check_msg_auth_value(
    ctx: &Ctx,
    pg_cno: &str,
    key: &str,
    given: &Option<String>,
) -> Result<(), Refusal> {
    let given = v::required("msgAuthValue", given)?;
    if !crypto::verify_msg_auth_value(ctx.config.secret_key.expose_secret(), &[pg_cno, key], given)
    {
        return Err(Refusal::new(
            code::BAD_MSG_AUTH_VALUE,
            "msgAuthValue does not verify (HmacSHA256 of pgCno|shopTransactionId)",
        ));
    }
    Ok(())
}

/// Spec 02's approval response for an approved trade; msgAuthValue over
/// `pgCno|amount|transactionDate`.
fn approval_body(ctx: &Ctx, trade: &Trade, key: &str) -> wire::ApprovalResponse {
    let approval = trade.approval.as_ref().expect("approved");
    let transaction_date = stamp(&approval.at);
    let amount = approval.amount;
    let mac = crypto::msg_auth_value(
        ctx.config.secret_key.expose_secret(),
        &[&trade.pg_cno, &amount.to_string(), &transaction_date],
    );
    let status = trade.approval_status_code();
    wire::ApprovalResponse {
        res_cd: code::SUCCESS.into(),
        res_msg: "Success".into(),
        shop_transaction_id: key.to_owned(),
        mall_id: ctx.config.mall_id.clone(),
        shop_order_no: trade.shop_order_no.clone(),
        pg_cno: trade.pg_cno.clone(),
        amount,
        transaction_date: transaction_date.clone(),
        status_code: status.to_owned(),
        status_message: status_message(status).to_owned(),
        msg_auth_value: Some(mac),
        escrow_used: "N".into(),
        payment_info: wire::PaymentInfo {
            pay_method_type_code: PAY_METHOD_TYPE_CODE.into(),
            approval_no: approval.approval_no.clone(),
            approval_date: transaction_date,
        },
    }
}

/// `paymentInfo.payMethodTypeCode` of WeChat Pay approvals: KICC's code for simple pay
/// (docs/KICC-ASSUMPTIONS.md; the client must not depend on it).
pub const PAY_METHOD_TYPE_CODE: &str = "60";

fn cancel_body(
    ctx: &Ctx,
    trade: &Trade,
    cancel: &Cancel,
    key: &str,
    retrieve: bool,
) -> wire::GenericReviseResponse {
    wire::GenericReviseResponse {
        res_cd: code::SUCCESS.into(),
        res_msg: "Success".into(),
        shop_transaction_id: key.to_owned(),
        mall_id: ctx.config.mall_id.clone(),
        shop_order_no: trade.shop_order_no.clone(),
        ori_pg_cno: trade.pg_cno.clone(),
        cancel_pg_cno: cancel.cancel_pg_cno.clone(),
        transaction_date: stamp(&cancel.at),
        status_code: cancel.status_after.to_owned(),
        status_message: status_message(cancel.status_after).to_owned(),
        cancel_amount: cancel.amount,
        remain_amount: cancel.remaining_after,
        pg_cno: retrieve.then(|| trade.pg_cno.clone()),
        cancel_date: retrieve.then(|| stamp(&cancel.at)),
    }
}

/// The error reply: KICC's code and message, echoing the request's identifiers.
fn error_body(refusal: &Refusal, request: &Value, style: Style) -> Value {
    let echo = |field: &str| request.get(field).and_then(Value::as_str);
    let mut body = match style {
        Style::Kicc => json!({ "resCd": refusal.code, "resMsg": refusal.message }),
        Style::KiccPay => json!({ "respCd": refusal.code, "respMsg": refusal.message }),
    };
    let fields: &[&str] = match style {
        Style::Kicc => &["shopTransactionId", "mallId", "shopOrderNo", "pgCno"],
        Style::KiccPay => &["tid", "mercTrxNo"],
    };
    let obj = body.as_object_mut().expect("object");
    for field in fields {
        if let Some(value) = echo(field) {
            obj.insert((*field).to_owned(), Value::String(value.to_owned()));
        }
    }
    body
}

/// A msgAuthValue that is still 64 hex digits but does not verify (`bad_mac`).
fn corrupt_hex(mac: &str) -> String {
    let mut chars: Vec<char> = mac.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == '0' { '1' } else { '0' };
    }
    chars.into_iter().collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
