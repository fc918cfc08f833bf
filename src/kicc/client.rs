//! The one KICC client: builds each request from domain values, checks it against KICC's limits,
//! records it in `gateway_calls` **before** sending, sends it with the configured timeout (30 s
//! by default, spec 02/03), interprets the reply into a typed `Outcome`, and completes the record
//! with the redacted reply, outcome and latency. Secrets, tokenKey and authorizationId never
//! reach the table or the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{FixedOffset, Utc};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, InvalidRequest, Reply};
use super::{
    Api, Approval, CancelAccepted, CancelAmount, CancelStatus, GatewayCall, KiccPayApproval,
    KiccPayCancelled, KiccPayTransmission, Outcome, PaymentStatus, Registered,
    RetrievedTransaction, TradeStatus, crypto, redact_body,
};
use crate::db::gateway_calls::{self, CallCompletion, DeferredCall, NewGatewayCall};
use crate::db::{AnyConnection, Db, DbError, write_transaction};
use crate::domain::{Order, TradeType};

/// Why a call was not made. (Once a call is sent, every ending is an `Outcome`, not an error.)
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A field of ours breaks KICC's limits: our bug, caught before sending anything.
    #[error("request not sent: {0}")]
    Invalid(#[from] InvalidRequest),
    /// The call could not be recorded, so it was not sent (DESIGN §4: persist before sending).
    #[error("request not sent: could not record it: {0}")]
    Record(#[from] DbError),
    #[error("gateway client: {0}")]
    Setup(String),
}

/// KICC Pay merchant settings (spec 03).
pub struct KiccPaySettings {
    pub api_base: String,
    pub tid: String,
    pub svc_id: String,
    pub bizr_no: String,
    pub channel_id: String,
    pub secret_key: SecretString,
    pub aes_key: SecretBox<[u8; 32]>,
    pub aes_iv: SecretBox<[u8; 16]>,
}

/// Where KICC is and who we are to it.
pub struct ClientSettings {
    /// e.g. `https://testpgapi.easypay.co.kr`, or the sandbox's base.
    pub api_base: String,
    pub mall_id: String,
    pub secret_key: SecretString,
    pub kiccpay: KiccPaySettings,
    /// Read timeout of every call (`KICC_TIMEOUT_SECS`, 30 s by default).
    pub timeout: Duration,
}

impl ClientSettings {
    /// From the app's configuration, with the API base resolved (the sandbox's URL in sandbox
    /// mode).
    pub fn from_config(config: &crate::config::Config, api_base: &str) -> Self {
        let kp = &config.kiccpay;
        Self {
            api_base: api_base.trim_end_matches('/').to_owned(),
            mall_id: config.mall_id.clone(),
            secret_key: config.secret_key.clone(),
            kiccpay: KiccPaySettings {
                api_base: kp
                    .api_base
                    .clone()
                    .unwrap_or_else(|| api_base.trim_end_matches('/').to_owned()),
                tid: kp.tid.clone(),
                svc_id: kp.svc_id.clone(),
                bizr_no: kp.bizr_no.clone(),
                channel_id: kp.channel_id.clone(),
                secret_key: kp.secret_key.clone(),
                aes_key: SecretBox::new(Box::new(*kp.aes_key.expose_secret())),
                aes_iv: SecretBox::new(Box::new(*kp.aes_iv.expose_secret())),
            },
            timeout: config.gateway_timeout,
        }
    }
}

pub struct KiccClient {
    http: reqwest::Client,
    settings: Arc<ClientSettings>,
    db: Db,
    /// `false` only for [`KiccClient::deferred`]: calls made while the database is unreachable.
    record_first: bool,
}

/// A reply as it came off the wire, before interpretation.
pub(super) enum RawReply {
    Body { status: u16, bytes: Vec<u8> },
    Timeout,
    Transport(String),
}

/// What was sent and what came back.
struct Exchange {
    /// The row written before sending; `None` for a deferred call.
    call_id: Option<i64>,
    order_id: Option<i64>,
    key: String,
    date: String,
    redacted_request: String,
    requested_at: chrono::NaiveDateTime,
    started: Instant,
    reply: RawReply,
}

/// A request as it is recorded and sent: the body, and its redacted copy for the table.
struct Request {
    api: Api,
    order_id: Option<i64>,
    key: String,
    date: String,
    body: Vec<u8>,
    redacted: String,
    requested_at: chrono::NaiveDateTime,
}

impl Request {
    fn new(api: Api, order_id: Option<i64>, key: String, date: String, body: Vec<u8>) -> Self {
        Self {
            api,
            order_id,
            redacted: redact_body(&body),
            requested_at: crate::db::now(),
            key,
            date,
            body,
        }
    }

    /// Its `gateway_calls` row, owned (to move into a database task).
    fn row(&self) -> CallRow {
        CallRow {
            order_id: self.order_id,
            api: self.api.as_str(),
            key: self.key.clone(),
            date: self.date.clone(),
            redacted: self.redacted.clone(),
        }
    }
}

struct CallRow {
    order_id: Option<i64>,
    api: &'static str,
    key: String,
    date: String,
    redacted: String,
}

impl CallRow {
    fn as_new(&self) -> NewGatewayCall<'_> {
        NewGatewayCall {
            order_id: self.order_id,
            api: self.api,
            shop_transaction_id: &self.key,
            request_date: &self.date,
            request_body: &self.redacted,
        }
    }
}

/// A request built and checked against KICC's limits, not yet recorded or sent. For a caller
/// that writes the call's row in its own write transaction, beside what the call is about
/// ([`PreparedCall::record`]: an order and its create call in one commit), then sends it
/// ([`KiccClient::send_recorded`]) and writes how it ended in its next transaction, beside
/// what the ending changes ([`Completion::write`]). The rule is the same as for every call:
/// the row is committed before the request leaves (DESIGN §4).
pub struct PreparedCall<T> {
    request: Request,
    interpret: Interpret<T>,
}

/// How a prepared call's reply is read (the API's `accept` step, see [`interpret`]).
type Interpret<T> = Box<dyn FnOnce(&RawReply) -> (Outcome<T>, Summary) + Send>;

impl<T> PreparedCall<T> {
    fn new<R>(request: Request, accept: impl FnOnce(R) -> Outcome<T> + Send + 'static) -> Self
    where
        R: Reply + DeserializeOwned,
    {
        Self {
            request,
            interpret: Box::new(move |reply| interpret(reply, accept)),
        }
    }
}

impl<T> PreparedCall<T> {
    /// Writes the call's row ("sent, no answer yet"), inside the caller's write transaction.
    /// Send it only after that transaction commits.
    pub fn record(self, conn: &mut AnyConnection) -> Result<RecordedCall<T>, DbError> {
        let call_id = gateway_calls::insert_started_in_tx(conn, &self.request.row().as_new())?;
        Ok(RecordedCall {
            prepared: self,
            call_id,
        })
    }
}

/// A call whose row is written (see [`PreparedCall`]).
pub struct RecordedCall<T> {
    prepared: PreparedCall<T>,
    call_id: i64,
}

/// How a call ended, for the caller to write in its own write transaction
/// ([`KiccClient::send_recorded`]). Until it is written, the call's row says "sent, no answer",
/// which the reconciler treats as an unanswered call.
#[must_use = "a call's ending must be written (Completion::write)"]
#[derive(Debug, Clone)]
pub struct Completion {
    call_id: i64,
    /// For the log line if it cannot be written.
    api: Api,
    key: String,
    done: CallCompletion,
}

impl Completion {
    /// Completes the call's row, inside the caller's write transaction.
    pub fn write(&self, conn: &mut AnyConnection) -> Result<(), DbError> {
        gateway_calls::complete_in_tx(conn, self.call_id, &self.done)
    }
}

/// The reply parsed, or why it could not be: becomes `Timeout`/`Transport`/`Malformed`.
enum Failure {
    Timeout,
    Transport(String),
    Malformed(String),
}

impl<T> From<Failure> for Outcome<T> {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Timeout => Outcome::Timeout,
            Failure::Transport(m) => Outcome::Transport(m),
            Failure::Malformed(m) => Outcome::Malformed(m),
        }
    }
}

/// What is stored about an outcome besides its label.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub(super) res_cd: Option<String>,
    pub(super) res_msg: Option<String>,
    pub(super) pg_cno: Option<String>,
}

/// Today in Korea (yyyyMMdd) and the time (HHmmss): KICC's dates are KST, and an idempotency key
/// is valid until midnight of its request day (spec 06).
fn kst_now() -> (String, String) {
    let kst = FixedOffset::east_opt(9 * 3600).expect("valid offset");
    let now = Utc::now().with_timezone(&kst);
    (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S").to_string(),
    )
}

/// A fresh idempotency key (spec 06: unique per request, a UUID is suggested).
fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `resDetailMsg` is URL-encoded (spec 01).
fn decode_detail(detail: Option<String>) -> Option<String> {
    detail.filter(|d| !d.is_empty()).map(|d| {
        let plus_as_space = d.replace('+', " ");
        url::form_urlencoded::parse(format!("x={plus_as_space}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or(d)
    })
}

/// Parses a reply body: only HTTP 200 with the documented JSON counts (spec 06).
fn parse<R: DeserializeOwned>(reply: &RawReply) -> Result<R, Failure> {
    match reply {
        RawReply::Timeout => Err(Failure::Timeout),
        RawReply::Transport(m) => Err(Failure::Transport(m.clone())),
        RawReply::Body { status, .. } if *status != 200 => {
            Err(Failure::Transport(format!("HTTP {status}")))
        }
        RawReply::Body { bytes, .. } => serde_json::from_slice(bytes)
            .map_err(|e| Failure::Malformed(format!("reply is not the documented JSON: {e}"))),
    }
}

/// What a reply means (no I/O): any code but `0000` is a decline; `accept` turns a `0000` reply
/// into the result (and may still find it malformed or untrustworthy).
pub(super) fn interpret<R, T>(
    reply: &RawReply,
    accept: impl FnOnce(R) -> Outcome<T>,
) -> (Outcome<T>, Summary)
where
    R: Reply + DeserializeOwned,
{
    match parse::<R>(reply) {
        Err(failure) => (failure.into(), Summary::default()),
        Ok(reply) => {
            let summary = Summary {
                res_cd: Some(reply.code().to_owned()),
                res_msg: reply.message().map(str::to_owned),
                pg_cno: reply.pg_cno().map(str::to_owned),
            };
            let outcome = if reply.code() == "0000" {
                accept(reply)
            } else {
                Outcome::Declined {
                    code: reply.code().to_owned(),
                    message: reply.message().unwrap_or_default().to_owned(),
                    detail: decode_detail(reply.detail().map(str::to_owned)),
                }
            };
            (outcome, summary)
        }
    }
}

/// An approval `0000` reply as a result: complete, and its msgAuthValue verified with `secret_key`.
pub(super) fn verified_approval(secret_key: &str, r: wire::ApprovalResponse) -> Outcome<Approval> {
    let (Some(pg_cno), Some(amount), Some(transaction_date)) =
        (r.pg_cno, r.amount, r.transaction_date)
    else {
        return Outcome::Malformed("0000 without pgCno, amount or transactionDate".into());
    };
    let Some(mac) = r.msg_auth_value else {
        return Outcome::IntegrityFailure {
            detail: "approval without msgAuthValue".into(),
            pg_cno: Some(pg_cno),
        };
    };
    let amount_text = amount.to_string();
    let fields = [
        pg_cno.as_str(),
        amount_text.as_str(),
        transaction_date.as_str(),
    ];
    if !crypto::verify_msg_auth_value(secret_key, &fields, &mac) {
        return Outcome::IntegrityFailure {
            detail: "msgAuthValue does not match pgCno|amount|transactionDate".into(),
            pg_cno: Some(pg_cno),
        };
    }
    let payment = r.payment_info;
    Outcome::Accepted(Approval {
        pg_cno,
        shop_order_no: r.shop_order_no,
        amount,
        transaction_date,
        status: r.status_code.as_deref().map(TradeStatus::from_code),
        status_code: r.status_code,
        approval_no: payment.as_ref().and_then(|p| p.approval_no.clone()),
        approval_date: payment.and_then(|p| p.approval_date),
    })
}

impl KiccClient {
    /// Seals a value for the database under the merchant's KICC secret (kept in configuration,
    /// never in the database): the authorizationId a KICC Pay net-cancel needs again.
    pub fn seal_at_rest(&self, value: &str) -> String {
        super::crypto::seal(self.settings.secret_key.expose_secret(), value)
    }

    /// Opens a value [`Self::seal_at_rest`] stored. A value stored before sealing existed (no
    /// `v1:` prefix) is returned as it is.
    pub fn unseal_at_rest(&self, stored: &str) -> Option<String> {
        if stored.starts_with("v1:") {
            super::crypto::unseal(self.settings.secret_key.expose_secret(), stored)
        } else {
            Some(stored.to_owned())
        }
    }

    pub fn new(settings: ClientSettings, db: Db) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("kicc-checkout/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self {
            http,
            settings: Arc::new(settings),
            db,
            record_first: true,
        })
    }

    /// The same client for the one case where a call may not wait for the database: a
    /// compensating cancel while the database is unreachable (DESIGN §4: "cancel directly
    /// in-process, then record once the DB is back"). Its calls are not written first; each
    /// returns its record in `GatewayCall::deferred` for the caller to write later.
    pub fn deferred(&self) -> KiccClient {
        KiccClient {
            http: self.http.clone(),
            settings: self.settings.clone(),
            db: self.db.clone(),
            record_first: false,
        }
    }

    pub fn mall_id(&self) -> &str {
        &self.settings.mall_id
    }

    fn url(&self, api: Api) -> String {
        let base = if api.is_kiccpay() {
            &self.settings.kiccpay.api_base
        } else {
            &self.settings.api_base
        };
        format!("{base}{}", api.path())
    }

    /// Records, sends, and returns the raw exchange.
    async fn send(&self, request: Request) -> Result<Exchange, ClientError> {
        let call_id = if self.record_first {
            let db = self.db.clone();
            let row = request.row();
            Some(
                db.run(move |conn| gateway_calls::insert_started(conn, &row.as_new()))
                    .await?,
            )
        } else {
            None
        };
        Ok(self.transmit(request, call_id).await)
    }

    /// Sends a request (its row, if any, already committed). `kiccpay` adds the signed
    /// `X-KICC-*` headers.
    async fn transmit(&self, request: Request, call_id: Option<i64>) -> Exchange {
        let Request {
            api,
            order_id,
            key,
            date,
            body,
            redacted,
            requested_at,
        } = request;
        let url = self.url(api);
        let mut request = self.http.post(&url).header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        );
        if api.is_kiccpay() {
            let kp = &self.settings.kiccpay;
            let path = url::Url::parse(&url)
                .map(|u| u.path().to_owned())
                .unwrap_or_else(|_| api.path().to_owned());
            let timestamp = Utc::now().timestamp_millis().to_string();
            // The nonce is this call's key (unique per call, UUID v4: spec 06).
            let signature = crypto::kiccpay_signature(
                kp.secret_key.expose_secret(),
                &kp.channel_id,
                &path,
                &timestamp,
                &key,
                &body,
            );
            request = request
                .header("X-KICC-ChannelId", &kp.channel_id)
                .header("X-KICC-Timestamp", timestamp)
                .header("X-KICC-Nonce", &key)
                .header("X-KICC-Authorization", signature);
        }
        let started = Instant::now();
        let reply = match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => RawReply::Body {
                        status,
                        bytes: bytes.to_vec(),
                    },
                    Err(e) if e.is_timeout() => RawReply::Timeout,
                    Err(e) => RawReply::Transport(format!("reading the reply: {e}")),
                }
            }
            Err(e) if e.is_timeout() => RawReply::Timeout,
            Err(e) => RawReply::Transport(crate::text::error_chain(&e)),
        };
        Exchange {
            call_id,
            order_id,
            key,
            date,
            redacted_request: redacted,
            requested_at,
            started,
            reply,
        }
    }

    /// Completes the call's row and logs one line (no bodies).
    async fn finish<T>(
        &self,
        api: Api,
        exchange: Exchange,
        outcome: Outcome<T>,
        summary: Summary,
    ) -> GatewayCall<T> {
        let (call, completion) = self.settle(api, exchange, outcome, summary);
        if let Some(completion) = completion {
            self.write_completion(completion).await;
        }
        call
    }

    /// Writes a call's ending in a write transaction of its own (when nothing else is written
    /// with it). A failure is logged, not returned: the outcome still goes back to the caller,
    /// which decides about the money, and the row stays "sent, no answer", which the
    /// reconciler treats as an unanswered call.
    pub async fn write_completion(&self, completion: Completion) {
        let (api, key) = (completion.api, completion.key.clone());
        let recorded = self
            .db
            .run(move |conn| write_transaction(conn, |conn| completion.write(conn)))
            .await;
        if let Err(e) = recorded {
            log::error!("kicc {api} key={key}: the reply could not be recorded: {e}");
        }
    }

    /// Logs one line for the call (no bodies) and builds how it ended: a [`Completion`] for a
    /// recorded call, or, for a deferred one, its whole record inside the result.
    fn settle<T>(
        &self,
        api: Api,
        exchange: Exchange,
        outcome: Outcome<T>,
        summary: Summary,
    ) -> (GatewayCall<T>, Option<Completion>) {
        let latency = exchange.started.elapsed();
        let (http_status, response_body) = match &exchange.reply {
            RawReply::Body { status, bytes } => {
                (Some(i32::from(*status)), Some(redact_body(bytes)))
            }
            _ => (None, None),
        };
        let label = outcome.label();
        let detail = match &outcome {
            Outcome::Transport(m) | Outcome::Malformed(m) => Some(m.clone()),
            Outcome::IntegrityFailure { detail, .. } => Some(detail.clone()),
            _ => None,
        };
        let res_msg = summary.res_msg.or(detail);
        log::info!(
            "kicc {api} key={} -> {label}{} in {} ms",
            exchange.key,
            summary
                .res_cd
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            latency.as_millis()
        );
        let done = CallCompletion {
            response_body,
            http_status,
            outcome: label,
            res_cd: summary.res_cd,
            res_msg,
            pg_cno: summary.pg_cno,
            latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
        };
        let mut call = GatewayCall {
            call_id: exchange.call_id,
            shop_transaction_id: exchange.key.clone(),
            request_date: exchange.date.clone(),
            latency,
            outcome,
            deferred: None,
        };
        let Some(call_id) = exchange.call_id else {
            // A deferred call: its whole record goes back to the caller to write later.
            call.deferred = Some(DeferredCall {
                order_id: exchange.order_id,
                api: api.as_str(),
                shop_transaction_id: exchange.key,
                request_date: exchange.date,
                request_body: exchange.redacted_request,
                requested_at: exchange.requested_at,
                ending: done,
                completed_at: crate::db::now(),
            });
            return (call, None);
        };
        let completion = Completion {
            call_id,
            api,
            key: call.shop_transaction_id.clone(),
            done,
        };
        (call, Some(completion))
    }

    /// Sends a call recorded by the caller ([`PreparedCall`]) and returns its outcome with the
    /// [`Completion`] the caller must write.
    pub async fn send_recorded<T>(&self, call: RecordedCall<T>) -> (GatewayCall<T>, Completion) {
        let RecordedCall {
            prepared: PreparedCall { request, interpret },
            call_id,
        } = call;
        let api = request.api;
        let exchange = self.transmit(request, Some(call_id)).await;
        let (outcome, summary) = interpret(&exchange.reply);
        let (call, completion) = self.settle(api, exchange, outcome, summary);
        let completion = completion.expect("a recorded call completes with a row to write");
        (call, completion)
    }

    fn body<R: Serialize>(request: &R) -> Vec<u8> {
        serde_json::to_vec(request).expect("wire types serialize")
    }

    /// Records, sends, interprets and completes one call. Any code but `0000` is a decline;
    /// `accept` turns a `0000` reply into the result (and may still find it malformed or
    /// untrustworthy).
    async fn call<R, T>(
        &self,
        api: Api,
        order_id: Option<i64>,
        (key, date): (String, String),
        body: Vec<u8>,
        accept: impl FnOnce(R) -> Outcome<T>,
    ) -> Result<GatewayCall<T>, ClientError>
    where
        R: Reply + DeserializeOwned,
    {
        let request = Request::new(api, order_id, key, date, body);
        self.exchange(request, |reply| interpret(reply, accept))
            .await
    }

    /// Records, sends, interprets and completes a prepared call, like [`Self::call`].
    async fn call_prepared<T>(
        &self,
        prepared: PreparedCall<T>,
    ) -> Result<GatewayCall<T>, ClientError> {
        self.exchange(prepared.request, prepared.interpret).await
    }

    /// What [`Self::call`] and [`Self::call_prepared`] share: record and send the request,
    /// read the reply with `read`, complete the row.
    async fn exchange<T>(
        &self,
        request: Request,
        read: impl FnOnce(&RawReply) -> (Outcome<T>, Summary),
    ) -> Result<GatewayCall<T>, ClientError> {
        let api = request.api;
        let exchange = self.send(request).await?;
        let (outcome, summary) = read(&exchange.reply);
        Ok(self.finish(api, exchange, outcome, summary).await)
    }

    /// A fresh key and today's date (KST) for a new request.
    fn fresh() -> (String, String) {
        (new_key(), kst_now().0)
    }

    // -----------------------------------------------------------------------------------------
    // WeChat Pay

    /// Registers the payment (spec 01): `POST /api/trades/wechatpay`.
    pub async fn create_wechat_trade(
        &self,
        order: &Order,
        trade_type: TradeType,
        return_url: &str,
        notify_url: &str,
    ) -> Result<GatewayCall<Registered>, ClientError> {
        let prepared = self.wechat_create_request(order, trade_type, return_url, notify_url)?;
        self.call_prepared(prepared).await
    }

    /// The create-transaction request for `order` (spec 01), built and checked, for the caller
    /// to record and send ([`PreparedCall`]).
    pub fn wechat_create_request(
        &self,
        order: &Order,
        trade_type: TradeType,
        return_url: &str,
        notify_url: &str,
    ) -> Result<PreparedCall<Registered>, InvalidRequest> {
        let (key, date) = Self::fresh();
        let request = wire::CreateTransactionRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_transaction_id: key.clone(),
            shop_order_no: order.shop_order_no.to_string(),
            goods_name: order.goods_name.clone(),
            return_url: return_url.to_owned(),
            trade_type: trade_type.as_str().to_owned(),
            notify_url: notify_url.to_owned(),
            amount_info: wire::CreateAmountInfo {
                currency: order.amount.currency().code().to_owned(),
                total_amount: order.amount.minor(),
            },
            customer_info: wire::CustomerInfo {
                customer_id: order.customer_id.clone(),
                customer_name: order.customer_name.clone(),
                customer_mail: order.customer_mail.clone(),
                customer_contact_no: order.customer_contact_no.clone(),
                customer_addr: order.customer_addr.clone(),
            },
        };
        request.validate()?;
        Ok(PreparedCall::new(
            Request::new(
                Api::WechatCreate,
                Some(order.id),
                key,
                date,
                Self::body(&request),
            ),
            |r: wire::CreateTransactionResponse| match (r.pg_cno, r.payment_page_url) {
                (Some(pg_cno), Some(url)) if !pg_cno.is_empty() && !url.is_empty() => {
                    Outcome::Accepted(Registered {
                        pg_cno,
                        payment_page_url: url,
                    })
                }
                _ => Outcome::Malformed("0000 without pgCno or paymentPageUrl".into()),
            },
        ))
    }

    /// Payment status check: `POST /api/trades/wechatpay/find` (spec 06).
    pub async fn wechat_find(
        &self,
        order_id: Option<i64>,
        pg_cno: &str,
    ) -> Result<GatewayCall<PaymentStatus>, ClientError> {
        let prepared = self.wechat_find_request(order_id, pg_cno)?;
        self.call_prepared(prepared).await
    }

    /// The payment status check for `pg_cno` (spec 06), built and checked, for the caller to
    /// record and send ([`PreparedCall`]).
    pub fn wechat_find_request(
        &self,
        order_id: Option<i64>,
        pg_cno: &str,
    ) -> Result<PreparedCall<PaymentStatus>, InvalidRequest> {
        let (key, date) = Self::fresh();
        let request = wire::WechatFindRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_transaction_id: key.clone(),
            pg_cno: pg_cno.to_owned(),
            cancel_pg_cno: None,
        };
        request.validate()?;
        let pg_cno = pg_cno.to_owned();
        Ok(PreparedCall::new(
            Request::new(Api::WechatFind, order_id, key, date, Self::body(&request)),
            move |r: wire::WechatFindResponse| match r.status_cd.as_deref() {
                None | Some("") => Outcome::Malformed("0000 without statusCd".into()),
                Some(code) => Outcome::Accepted(PaymentStatus {
                    pg_cno: r.pg_cno.clone().unwrap_or_else(|| pg_cno.to_owned()),
                    shop_order_no: r.shop_order_no.clone(),
                    status: TradeStatus::from_code(code),
                    amount: r
                        .amount_info
                        .as_ref()
                        .and_then(wire::ReceivedAmountInfo::value),
                    currency: r.amount_info.as_ref().and_then(|a| a.currency.clone()),
                    approval_date: r.approval_date.clone(),
                }),
            },
        ))
    }

    /// Cancellation status check: `/api/trades/wechatpay/find` with `cancelPgCno` (spec 06).
    pub async fn wechat_find_cancel(
        &self,
        order_id: Option<i64>,
        pg_cno: &str,
        cancel_pg_cno: &str,
    ) -> Result<GatewayCall<CancelStatus>, ClientError> {
        let (key, date) = Self::fresh();
        let request = wire::WechatFindRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_transaction_id: key.clone(),
            pg_cno: pg_cno.to_owned(),
            cancel_pg_cno: Some(cancel_pg_cno.to_owned()),
        };
        request.validate()?;
        self.call(
            Api::WechatFindCancel,
            order_id,
            (key, date),
            Self::body(&request),
            |r: wire::WechatFindResponse| match r
                .cancel_status
                .as_deref()
                .or(r.status_cd.as_deref())
            {
                None | Some("") => Outcome::Malformed("0000 without cancelStatus".into()),
                Some(code) => Outcome::Accepted(CancelStatus {
                    pg_cno: r.pg_cno.clone().unwrap_or_else(|| pg_cno.to_owned()),
                    cancel_pg_cno: r
                        .cancel_pg_cno
                        .clone()
                        .unwrap_or_else(|| cancel_pg_cno.to_owned()),
                    status: TradeStatus::from_code(code),
                    amount: r
                        .amount_info
                        .as_ref()
                        .and_then(wire::ReceivedAmountInfo::value),
                    currency: r.amount_info.as_ref().and_then(|a| a.currency.clone()),
                    transaction_date: r.transaction_date.clone(),
                }),
            },
        )
        .await
    }

    /// Cancel or partial cancel of a WeChat Pay payment: `POST /api/trades/wechatpay/revise`
    /// (spec 06), signed with msgAuthValue = HMAC(`pgCno|shopTransactionId`). `cancel_req_date`
    /// is the original date when this retries an earlier cancel (spec 06), else today.
    pub async fn wechat_revise(
        &self,
        order: &Order,
        pg_cno: &str,
        amount: CancelAmount,
        notify_url: &str,
        cancel_req_date: Option<&str>,
    ) -> Result<GatewayCall<CancelAccepted>, ClientError> {
        let (key, today) = Self::fresh();
        let (code, amount_info) = match amount {
            CancelAmount::Full => ("40", None),
            CancelAmount::Partial(minor) => (
                "32",
                Some(wire::ReviseAmountInfo {
                    currency: order.amount.currency().code().to_owned(),
                    tot_amount: minor,
                }),
            ),
        };
        let request = wire::WechatReviseRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_transaction_id: key.clone(),
            pg_cno: pg_cno.to_owned(),
            revise_type_code: code.to_owned(),
            cancel_req_date: cancel_req_date.unwrap_or(&today).to_owned(),
            msg_auth_value: crypto::msg_auth_value(
                self.settings.secret_key.expose_secret(),
                &[pg_cno, &key],
            ),
            notify_url: Some(notify_url.to_owned()),
            memo: None,
            amount_info,
        };
        request.validate()?;
        self.call(
            Api::WechatRevise,
            Some(order.id),
            (key, today),
            Self::body(&request),
            |r: wire::WechatReviseResponse| {
                Outcome::Accepted(CancelAccepted {
                    pg_cno: r.pg_cno,
                    cancel_pg_cno: r.cancel_pg_cno,
                    cancel_date: r.cancel_date,
                    cancel_amount: None,
                    remain_amount: None,
                    status: None,
                })
            },
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Generic online APIs

    /// Payment approval v2 (spec 02): `POST /api/v2/trades/approval`. An accepted approval has a
    /// verified msgAuthValue (`pgCno|amount|transactionDate`); a bad one is an
    /// `IntegrityFailure` carrying the pgCno to cancel.
    pub async fn approve(
        &self,
        order: &Order,
        authorization_id: &str,
    ) -> Result<GatewayCall<Approval>, ClientError> {
        let (key, date) = Self::fresh();
        let request = wire::ApprovalRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_order_no: order.shop_order_no.to_string(),
            shop_transaction_id: key.clone(),
            authorization_id: authorization_id.to_owned(),
            approval_req_date: date.clone(),
        };
        request.validate()?;
        self.call(
            Api::ApprovalV2,
            Some(order.id),
            (key, date),
            Self::body(&request),
            |r| verified_approval(self.settings.secret_key.expose_secret(), r),
        )
        .await
    }

    /// Generic cancel: `POST /api/trades/revise` (spec 06).
    pub async fn revise(
        &self,
        order: &Order,
        pg_cno: &str,
        amount: CancelAmount,
        cancel_req_date: Option<&str>,
    ) -> Result<GatewayCall<CancelAccepted>, ClientError> {
        let (key, today) = Self::fresh();
        let (code, amount_minor) = match amount {
            CancelAmount::Full => ("40", None),
            CancelAmount::Partial(minor) => ("32", Some(minor)),
        };
        let request = wire::ReviseRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_transaction_id: key.clone(),
            pg_cno: pg_cno.to_owned(),
            revise_type_code: code.to_owned(),
            cancel_req_date: cancel_req_date.unwrap_or(&today).to_owned(),
            msg_auth_value: crypto::msg_auth_value(
                self.settings.secret_key.expose_secret(),
                &[pg_cno, &key],
            ),
            amount: amount_minor,
            remain_amount: None,
            client_ip: None,
            revise_message: None,
        };
        request.validate()?;
        self.call(
            Api::Revise,
            Some(order.id),
            (key, today),
            Self::body(&request),
            |r: wire::ApprovalResponse| {
                Outcome::Accepted(CancelAccepted {
                    pg_cno: r.ori_pg_cno.or(r.pg_cno),
                    cancel_pg_cno: r.cancel_pg_cno,
                    cancel_date: r.transaction_date,
                    cancel_amount: r.cancel_amount,
                    remain_amount: r.remain_amount,
                    status: r.status_code.as_deref().map(TradeStatus::from_code),
                })
            },
        )
        .await
    }

    /// Status of an earlier approval or cancel by its key and date:
    /// `POST /api/trades/retrieveTransaction` (spec 06; covers yesterday and today).
    pub async fn retrieve_transaction(
        &self,
        order_id: Option<i64>,
        original_key: &str,
        original_date: &str,
    ) -> Result<GatewayCall<RetrievedTransaction>, ClientError> {
        // The lookup is a request of its own with its own row (and fresh row key); the original
        // key goes in the body: it is what KICC looks up.
        let request = wire::RetrieveTransactionRequest {
            mall_id: self.settings.mall_id.clone(),
            shop_transaction_id: original_key.to_owned(),
            transaction_date: original_date.to_owned(),
        };
        request.validate()?;
        self.call(
            Api::RetrieveTransaction,
            order_id,
            Self::fresh(),
            Self::body(&request),
            |r: wire::ApprovalResponse| {
                Outcome::Accepted(RetrievedTransaction {
                    pg_cno: r.pg_cno.or(r.ori_pg_cno),
                    shop_order_no: r.shop_order_no,
                    amount: r.amount.or(r.cancel_amount),
                    transaction_date: r.transaction_date,
                    status: r.status_code.as_deref().map(TradeStatus::from_code),
                    cancel_pg_cno: r.cancel_pg_cno,
                })
            },
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // KICC Pay (spec 03, 06). The row key of a KICC Pay call is its X-KICC-Nonce.

    fn kiccpay_approval_request(
        &self,
        order: &Order,
        authorization_id: &str,
        tran: &KiccPayTransmission,
    ) -> wire::KiccPayApprovalRequest {
        let kp = &self.settings.kiccpay;
        let amount = order.amount.minor();
        wire::KiccPayApprovalRequest {
            tid: kp.tid.clone(),
            svc_id: kp.svc_id.clone(),
            bizr_no: kp.bizr_no.clone(),
            merc_trx_no: order.shop_order_no.to_string(),
            token_key: crypto::encrypt_token_key(
                kp.aes_key.expose_secret(),
                kp.aes_iv.expose_secret(),
                authorization_id,
            ),
            alot_month: "00".into(),
            trx_amt: amount,
            // Prices include 10% VAT: VAT = total / 11 (spec 03's example: 10000 → 909).
            vat_amt: amount / 11,
            svc_amt: Some(0),
            tax_free_amt: Some(0),
            tran_dt: tran.tran_dt.clone(),
            tran_tm: tran.tran_tm.clone(),
            user_data: None,
        }
    }

    /// KICC Pay approval: `POST /smpy/kiccpay/reqAprv` with tokenKey = AES(authorizationId).
    /// Returns the transmission date/time too: a net-cancel must resend the same data.
    pub async fn kiccpay_approve(
        &self,
        order: &Order,
        authorization_id: &str,
    ) -> Result<(GatewayCall<KiccPayApproval>, KiccPayTransmission), ClientError> {
        let (tran_dt, tran_tm) = kst_now();
        let tran = KiccPayTransmission { tran_dt, tran_tm };
        let request = self.kiccpay_approval_request(order, authorization_id, &tran);
        request.validate()?;
        let merc_trx_no = request.merc_trx_no.clone();
        let call = self
            .call(
                Api::KiccPayApprove,
                Some(order.id),
                (new_key(), tran.tran_dt.clone()),
                Self::body(&request),
                |r: wire::KiccPayResponse| {
                    Outcome::Accepted(KiccPayApproval {
                        merc_trx_no: r.merc_trx_no.unwrap_or(merc_trx_no),
                        amount: r.trx_amt,
                        approval_date: r.aprv_dt,
                        approval_time: r.aprv_tm,
                        approval_no: r.aprv_no,
                        van_trx_no: r.van_trx_no,
                        card_confirm_no: r.card_confirm_no,
                        issuer_name: r.iss_fm_nm,
                    })
                },
            )
            .await?;
        Ok((call, tran))
    }

    /// KICC Pay net-cancel: `POST /smpy/kiccpay/reqRtran` with exactly the approval's data
    /// (spec 03: mandatory after a read timeout, connection error or unparseable approval reply).
    pub async fn kiccpay_net_cancel(
        &self,
        order: &Order,
        authorization_id: &str,
        approval: &KiccPayTransmission,
    ) -> Result<GatewayCall<()>, ClientError> {
        let request = self.kiccpay_approval_request(order, authorization_id, approval);
        request.validate()?;
        self.call(
            Api::KiccPayNetCancel,
            Some(order.id),
            Self::fresh(),
            Self::body(&request),
            |_: wire::KiccPayResponse| Outcome::Accepted(()),
        )
        .await
    }

    /// KICC Pay cancel: `POST /smpy/kiccpay/reqCancel` (spec 06), by our merchant transaction
    /// number (`wcc` = `G`), with a new `mercTrxNo` of its own.
    pub async fn kiccpay_cancel(
        &self,
        order: &Order,
        original_approval_date: &str,
        original_approval_no: &str,
        amount_minor: i64,
    ) -> Result<GatewayCall<KiccPayCancelled>, ClientError> {
        let kp = &self.settings.kiccpay;
        let (tran_dt, tran_tm) = kst_now();
        let random = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        // C + yyMMddHHmmss + 7 random = 20 bytes (mercTrxNo: send ≤ 20, spec 06).
        let merc_trx_no = format!("C{}{}{}", &tran_dt[2..], tran_tm, &random[..7]);
        let request = wire::KiccPayCancelRequest {
            tid: kp.tid.clone(),
            svc_id: kp.svc_id.clone(),
            bizr_no: kp.bizr_no.clone(),
            merc_trx_no: merc_trx_no.clone(),
            wcc: "G".into(),
            cnd_trx_no: order.shop_order_no.to_string(),
            alot_month: "00".into(),
            trx_amt: amount_minor,
            vat_amt: amount_minor / 11,
            svc_amt: Some(0),
            tran_dt: tran_dt.clone(),
            tran_tm,
            org_aprv_dt: original_approval_date.to_owned(),
            org_aprv_no: original_approval_no.to_owned(),
        };
        request.validate()?;
        self.call(
            Api::KiccPayCancel,
            Some(order.id),
            (new_key(), tran_dt),
            Self::body(&request),
            |r: wire::KiccPayResponse| {
                Outcome::Accepted(KiccPayCancelled {
                    merc_trx_no: r.merc_trx_no.unwrap_or(merc_trx_no),
                    approval_no: r.aprv_no,
                    amount: r.trx_amt,
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn res_detail_msg_is_url_decoded() {
        assert_eq!(
            decode_detail(Some(
                "ORDERPAID%3A+order+already+paid%20%EC%A3%BC%EB%AC%B8".into()
            ))
            .as_deref(),
            Some("ORDERPAID: order already paid 주문")
        );
        assert_eq!(decode_detail(Some(String::new())), None);
    }

    #[test]
    fn kst_dates_have_kicc_shapes() {
        let (date, time) = kst_now();
        assert_eq!(date.len(), 8);
        assert_eq!(time.len(), 6);
        assert!(date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit()));
    }
}
