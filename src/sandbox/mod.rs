//! The sandbox gateway: a fake KICC that speaks KICC's wire protocol over real HTTP (DESIGN §8),
//! so the app runs end to end without credentials and tests can drive every scenario.
//!
//! Served standalone at the root (`kicc-checkout sandbox --bind ADDR`, [`SandboxServer`]) or,
//! in sandbox mode, under `/sandbox` of the app ([`mount`]); the same [`configure`] serves both.
//! It knows one merchant ([`SandboxConfig`]) and keeps everything in memory ([`ledger`]).
//! It implements the protocol on its own — its wire types are not the client's — and uses
//! only `kicc::crypto` from the client side, so that contract tests mean something.
//!
//! # Routes (relative to the sandbox's base)
//! | route | what |
//! |---|---|
//! | `POST /api/trades/wechatpay` | create (spec 01) |
//! | `POST /api/trades/wechatpay/find` | payment status; cancellation status with `cancelPgCno` |
//! | `POST /api/trades/wechatpay/revise` | cancel `40` / partial `32`, then the cancellation webhook |
//! | `POST /api/v2/trades/approval` | approval (spec 02), then the approval webhook (spec 04) |
//! | `POST /api/trades/revise` | generic cancel (spec 06; no webhook) |
//! | `POST /api/trades/retrieveTransaction` | the approval or cancel a `shopTransactionId` made |
//! | `POST /smpy/kiccpay/reqAprv`, `reqRtran`, `reqCancel` | KICC Pay (spec 03, 06) |
//! | `GET /wechat/scan/{pgCno}`, `GET /wechat/mweb/{pgCno}` | WeChat payment pages (paymentPageUrl) |
//! | `POST /wechat/pay/{pgCno}` | their Pay / Cancel form (`action=pay|cancel`) |
//! | `GET /kiccpay/window?mercTrxNo&trxAmt&goodsName&returnUrl` | the KICC Pay window |
//! | `POST /kiccpay/window/{pgCno}` | its Pay / Cancel form |
//! | `GET /` | the console: trades, calls received, webhook attempts, scenario form |
//! | `POST /control/scenario` | `{"shopOrderNo": "…"|null, "scenario": NAME, "count": N}` (JSON or form) |
//! | `GET /control/trades/{pgCno}` | the sandbox's view of a trade (also by shopOrderNo / mercTrxNo) |
//! | `POST /control/webhooks/{id}/resend` | a new delivery of a webhook (JSON or form) |
//! | `GET /assets/sandbox.css`, `GET /assets/sandbox.js` | the pages' style and script |
//!
//! Every API answers HTTP 200 with a KICC-shaped body (codes in docs/KICC-ASSUMPTIONS.md);
//! HTTP 400 only for a body that is not JSON at all. Each `shopTransactionId` is good once per
//! day (KST) across all WeChat Pay and generic APIs, whatever the request's outcome once it
//! names our `mallId`; `retrieveTransaction` names an earlier key and spends none.
//!
//! # Payment pages
//! Pay issues an `authorizationId` and sends the browser to the trade's `returnUrl` with an
//! auto-submitting form POST (`resCd=0000, resMsg, shopOrderNo, authorizationId`); Cancel posts
//! `resCd=W002, resMsg, shopOrderNo`. The script only submits the form; without it the shopper
//! presses the visible button. A WeChat trade paid on a page (scan or mweb) and not approved
//! within `SANDBOX_AUTO_APPROVE_MS` is approved by the sandbox, which then sends the webhook.
//!
//! # Webhooks
//! After each approval of a WeChat trade (the merchant's or the sandbox's own) the spec-04 body
//! goes to the create's `notifyUrl`; after each WeChat revise with a `notifyUrl`, the spec-05 body
//! goes there. KICC Pay has no webhooks: its replies are the result. A delivery is resent until HTTP 200 with JSON `resCd` `"0000"`, at most 15
//! attempts, waiting `SANDBOX_WEBHOOK_BACKOFF_MS` after the first, doubling, capped at 10
//! minutes; 10 s per attempt. Every attempt is kept and shown.
//!
//! # Scenarios
//! Set per `shopOrderNo` (on its trade, or kept until the trade is created) or, with
//! `shopOrderNo: null`, for the next new trade only. A new setting replaces the old one.
//! - `approve` (default): everything works.
//! - `decline`: every approval (v2, `reqAprv`) answers `5101`; the trade stays unpaid (TS00) and
//!   is never auto-approved.
//! - `shopper_cancel`: Pay on the page acts as Cancel (`W002`).
//! - `approval_late` (`count` ms, default 35000): the approval is made at once (webhook
//!   included, retrieveTransaction finds it) and its reply is sent `count` ms later.
//! - `approval_amount_mismatch`: the trade is approved for one minor unit more than ordered;
//!   the reply (with a valid msgAuthValue), the webhook and status checks all say so. KICC Pay's
//!   reply says so in its `trxAmt` (an echo the sandbox adds; docs/KICC-ASSUMPTIONS.md).
//! - `bad_mac`: the v2 approval reply's msgAuthValue does not verify (still 64 hex digits); the
//!   trade is approved. No effect on KICC Pay (no msgAuthValue).
//! - `webhook_first` (WeChat): Pay approves at once and the approval webhook's first attempt is
//!   made before the browser is sent to the returnUrl; the merchant's approval then answers the
//!   same approval data.
//! - `return_lost`: Pay shows "payment complete" and never sends the browser to the returnUrl;
//!   for WeChat the sandbox approves at once and sends the webhook (whatever auto-approve says).
//! - `webhook_storm` (`count`, default 5): each webhook of the trade goes as `count` concurrent,
//!   identical deliveries, each with its own retries.
//! - `webhook_amount_mismatch`: the approval webhook's amount is one minor unit more than the
//!   approved amount; the approval reply and status checks are right.
//! - `cancel_reply_lost` (`count`, default 1): the next `count` cancels (any cancel API) are made
//!   (webhook included) but the connection is dropped instead of the reply.
//! - `cancel_fails` (`count`, default 1): the next `count` cancels answer `5102` and change
//!   nothing.
//! - `webhook_fails` (`count`, default 1): the next `count` webhook attempts of the trade are
//!   lost on the way (recorded as `dropped`, nothing sent); resends go on, so 15 or more means
//!   the webhook never arrives and only a status check tells.
//! - `malformed_reply` (`count`, default 1): the next `count` API replies about the trade (not
//!   its create) are HTTP 200 with an HTML body; the operation itself takes effect.
//! - `approval_other_trade`: approves, but the approval's reply names another pgCno and
//!   shopOrderNo, with a msgAuthValue valid for them: a reply the merchant must not trust with
//!   its order's money.

mod api;
pub mod config;
mod control;
pub mod ledger;
mod pages;
pub mod scenario;
mod server;
pub mod validate;
mod webhook;
pub mod wire;

use std::sync::{Mutex, MutexGuard};

use actix_web::web;

pub use config::{SandboxConfig, SandboxKiccPay, WEBHOOK_TIMEOUT};
pub use ledger::MAX_WEBHOOK_ATTEMPTS;
pub use scenario::{Scenario, ScenarioSetting};
pub use server::SandboxServer;
pub use webhook::backoff_delay;

use ledger::{Ctx, Kst, Ledger};

/// The sandbox's shared state: its merchant, where it is reachable, its books, and the HTTP
/// client its webhooks go out with. Registered as `web::Data<SandboxState>`.
pub struct SandboxState {
    config: SandboxConfig,
    public_base: String,
    base_path: String,
    ledger: Mutex<Ledger>,
    http: reqwest::Client,
}

impl SandboxState {
    /// `public_base`: the absolute URL the sandbox is reached at (`http://127.0.0.1:8080/sandbox`
    /// mounted, `http://127.0.0.1:8081` standalone); payment page URLs are built on it.
    pub fn new(config: SandboxConfig, public_base: impl Into<String>) -> Self {
        let public_base = public_base.into().trim_end_matches('/').to_owned();
        let base_path = url::Url::parse(&public_base)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("kicc-checkout-sandbox")
            .build()
            .expect("the webhook HTTP client builds (TLS backend available)");
        Self {
            config,
            public_base,
            base_path,
            ledger: Mutex::new(Ledger::new()),
            http,
        }
    }

    pub fn public_base(&self) -> &str {
        &self.public_base
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The books. A panic elsewhere while holding the lock leaves them usable: every operation
    /// writes whole values.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now() -> Kst {
        ledger::kst(chrono::Utc::now())
    }

    fn ctx(&self, now: Kst) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            public_base: &self.public_base,
            now,
        }
    }
}

/// Registers every sandbox route relative to where it is configured: at the root standalone,
/// inside `web::scope("/sandbox")` mounted. Expects `web::Data<SandboxState>` in app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    api::routes(cfg);
    pages::routes(cfg);
    control::routes(cfg);
}

/// Mounts the sandbox under `/sandbox` with its state (the app in sandbox mode).
pub fn mount(cfg: &mut web::ServiceConfig, state: web::Data<SandboxState>) {
    cfg.service(web::scope("/sandbox").app_data(state).configure(configure));
}
