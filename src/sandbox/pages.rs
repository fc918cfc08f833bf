//! The sandbox's payment pages: the WeChat scan page (native QR target), the WeChat mweb page,
//! the KICC Pay window, their Pay / Cancel forms and the return form that carries the result to
//! the merchant's returnUrl; plus the pages' CSS and script.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::SandboxState;
use super::ledger::{Method, PageAction, PageResult, Phase};
use super::scenario::Scenario;
use super::validate as v;
use super::webhook;
use crate::domain::{Currency, Money};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/wechat/scan/{pg_cno}", web::get().to(wechat_scan))
        .route("/wechat/mweb/{pg_cno}", web::get().to(wechat_mweb))
        .route("/wechat/pay/{pg_cno}", web::post().to(wechat_pay))
        .route("/kiccpay/window", web::get().to(kiccpay_window))
        .route("/kiccpay/window/{pg_cno}", web::post().to(kiccpay_pay))
        .route("/assets/{file}", web::get().to(asset));
}

/// A payment page: merchant, goods, amount, and Pay / Cancel while payable.
#[derive(Template)]
#[template(path = "sandbox/pay.html")]
pub struct PayPage {
    pub base: String,
    /// "WeChat Pay" or "KICC Pay".
    pub wallet: &'static str,
    pub heading: &'static str,
    pub hint: &'static str,
    pub merchant: String,
    pub goods: String,
    pub amount: String,
    pub order: String,
    pub pg_cno: String,
    /// Where Pay / Cancel post.
    pub action: String,
    pub payable: bool,
    pub status: &'static str,
    pub scenario: Option<String>,
}

/// Sends the browser to the merchant's returnUrl: a form POST that the script submits at once
/// and a person can submit with the button.
#[derive(Template)]
#[template(path = "sandbox/return.html")]
pub struct ReturnPage {
    pub base: String,
    pub heading: &'static str,
    pub return_url: String,
    pub fields: Vec<(&'static str, String)>,
}

/// A message and nothing else (completion, errors).
#[derive(Template)]
#[template(path = "sandbox/message.html")]
pub struct MessagePage {
    pub base: String,
    pub heading: String,
    pub message: String,
}

pub fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            log::error!("sandbox page failed to render: {e}");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("the sandbox page failed to render")
        }
    }
}

pub fn message(
    state: &SandboxState,
    status: StatusCode,
    heading: &str,
    text: impl Into<String>,
) -> HttpResponse {
    render(
        status,
        &MessagePage {
            base: state.base_path.clone(),
            heading: heading.to_owned(),
            message: text.into(),
        },
    )
}

pub fn format_amount(amount: i64, currency: Currency) -> String {
    Money::from_minor(amount, currency)
        .map(|m| m.to_string())
        .unwrap_or_else(|_| format!("{amount} {currency}"))
}

/// `GET /wechat/scan/{pgCno}`: what the native QR code opens.
async fn wechat_scan(state: web::Data<SandboxState>, pg_cno: web::Path<String>) -> HttpResponse {
    pay_page(&state, &pg_cno, Method::WechatNative)
}

/// `GET /wechat/mweb/{pgCno}`: where an mweb trade redirects the phone.
async fn wechat_mweb(state: web::Data<SandboxState>, pg_cno: web::Path<String>) -> HttpResponse {
    pay_page(&state, &pg_cno, Method::WechatMweb)
}

fn pay_page(state: &SandboxState, pg_cno: &str, method: Method) -> HttpResponse {
    let ledger = state.ledger();
    let Some(trade) = ledger.trade(pg_cno).filter(|t| t.method == method) else {
        drop(ledger);
        return message(
            state,
            StatusCode::NOT_FOUND,
            "Payment not found",
            format!("The sandbox has no such payment ({pg_cno})."),
        );
    };
    let (wallet, heading, hint, action) = match method {
        Method::WechatNative => (
            "WeChat Pay",
            "Scan to pay",
            "You scanned the merchant's QR code. Confirm the payment.",
            format!("{}/wechat/pay/{pg_cno}", state.base_path),
        ),
        Method::WechatMweb => (
            "WeChat Pay",
            "Pay in WeChat",
            "The merchant sent you here to pay with WeChat Pay.",
            format!("{}/wechat/pay/{pg_cno}", state.base_path),
        ),
        Method::KiccPay => (
            "KICC Pay",
            "KICC Pay",
            "Confirm the payment with your registered card.",
            format!("{}/kiccpay/window/{pg_cno}", state.base_path),
        ),
    };
    let page = PayPage {
        base: state.base_path.clone(),
        wallet,
        heading,
        hint,
        merchant: state.config.mall_id.clone(),
        goods: trade.goods_name.clone(),
        amount: format_amount(trade.amount, trade.currency),
        order: trade.shop_order_no.clone(),
        pg_cno: trade.pg_cno.clone(),
        action,
        payable: matches!(trade.phase, Phase::Registered | Phase::ShopperCancelled),
        status: trade.status_name(),
        scenario: (!trade.scenario.is(Scenario::Approve))
            .then(|| trade.scenario.scenario.to_string()),
    };
    drop(ledger);
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct ActionForm {
    action: String,
}

impl ActionForm {
    fn action(&self) -> Option<PageAction> {
        match self.action.as_str() {
            "pay" => Some(PageAction::Pay),
            "cancel" => Some(PageAction::Cancel),
            _ => None,
        }
    }
}

/// `POST /wechat/pay/{pgCno}`: Pay or Cancel on the scan or mweb page.
async fn wechat_pay(
    state: web::Data<SandboxState>,
    pg_cno: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    page_action(state, &pg_cno, &form, true).await
}

/// `POST /kiccpay/window/{pgCno}`: Pay or Cancel in the KICC Pay window.
async fn kiccpay_pay(
    state: web::Data<SandboxState>,
    pg_cno: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    page_action(state, &pg_cno, &form, false).await
}

async fn page_action(
    state: web::Data<SandboxState>,
    pg_cno: &str,
    form: &ActionForm,
    wechat: bool,
) -> HttpResponse {
    let Some(action) = form.action() else {
        return message(
            &state,
            StatusCode::BAD_REQUEST,
            "Unknown action",
            "Press Pay or Cancel.",
        );
    };
    let outcome = {
        let now = SandboxState::now();
        let ctx = state.ctx(now);
        let mut ledger = state.ledger();
        match ledger.trade(pg_cno) {
            Some(t) if t.method.is_wechat() == wechat => ledger.page_action(&ctx, pg_cno, action),
            _ => Err(String::new()),
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(why) if why.is_empty() => {
            return message(
                &state,
                StatusCode::NOT_FOUND,
                "Payment not found",
                format!("The sandbox has no such payment ({pg_cno})."),
            );
        }
        Err(why) => {
            return message(&state, StatusCode::CONFLICT, "Nothing to pay", why);
        }
    };
    log::info!("sandbox: {action:?} on the page of {}", outcome.pg_cno);
    webhook::start(&state, &outcome.deliveries);
    if let Some(delay) = outcome.auto_approve {
        let state = state.clone();
        let pg_cno = outcome.pg_cno.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(delay).await;
            let ids = {
                let ctx = state.ctx(SandboxState::now());
                state.ledger().auto_approve(&ctx, &pg_cno)
            };
            webhook::start(&state, &ids);
        });
    }
    match outcome.result {
        PageResult::Return {
            return_url,
            fields,
            wait_for,
        } => {
            wait_for_first_attempts(&state, &wait_for).await;
            let heading = if action == PageAction::Pay && fields[0].1 == "0000" {
                "Payment complete"
            } else {
                "Payment cancelled"
            };
            render(
                StatusCode::OK,
                &ReturnPage {
                    base: state.base_path.clone(),
                    heading,
                    return_url,
                    fields,
                },
            )
        }
        PageResult::Stay { message: text } => {
            message(&state, StatusCode::OK, "Payment complete", text)
        }
    }
}

/// `webhook_first`: the browser goes back only once each webhook's first attempt is over (or a
/// webhook timeout has passed).
async fn wait_for_first_attempts(state: &SandboxState, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let deadline = Instant::now() + state.config.webhook_timeout + Duration::from_secs(1);
    loop {
        let done = {
            let ledger = state.ledger();
            ids.iter()
                .all(|id| ledger.delivery(*id).is_none_or(|d| !d.attempts.is_empty()))
        };
        if done || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /kiccpay/window?mercTrxNo&trxAmt&goodsName&returnUrl`: the KICC Pay window.
async fn kiccpay_window(
    state: web::Data<SandboxState>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let get = |name: &str| query.get(name).map(|s| s.trim().to_owned());
    let checked = (|| {
        let merc = get("mercTrxNo");
        let merc = v::required("mercTrxNo", &merc)?.to_owned();
        v::identifier("mercTrxNo", &merc, 40)?;
        let amount = get("trxAmt");
        let amount = v::required("trxAmt", &amount)?;
        let amount = amount
            .parse::<i64>()
            .ok()
            .filter(|a| (1..=v::MAX_AMOUNT).contains(a))
            .ok_or_else(|| {
                v::Refusal::new("1001", "trxAmt must be a whole number of won above zero")
            })?;
        let goods = get("goodsName");
        let goods = v::required("goodsName", &goods)?.to_owned();
        v::max_bytes("goodsName", &goods, 100)?;
        let return_url = get("returnUrl");
        let return_url = v::required("returnUrl", &return_url)?.to_owned();
        v::http_url("returnUrl", &return_url, 256)?;
        Ok::<_, v::Refusal>((merc, amount, goods, return_url))
    })();
    let (merc, amount, goods, return_url) = match checked {
        Ok(values) => values,
        Err(refusal) => {
            return message(
                &state,
                StatusCode::BAD_REQUEST,
                "The merchant's request is not valid",
                refusal.message,
            );
        }
    };
    let opened = state.ledger().open_kiccpay_window(
        &SandboxState::now(),
        &merc,
        amount,
        &goods,
        &return_url,
    );
    match opened {
        Ok(pg_cno) => pay_page(&state, &pg_cno, Method::KiccPay),
        Err(why) => message(&state, StatusCode::CONFLICT, "Nothing to pay", why),
    }
}

const CSS: &str = include_str!("../../static/sandbox/sandbox.css");
const JS: &str = include_str!("../../static/sandbox/sandbox.js");

/// `GET /assets/{file}`: the pages' stylesheet and script, embedded in the binary.
async fn asset(state: web::Data<SandboxState>, file: web::Path<String>) -> HttpResponse {
    let (content_type, body) = match file.as_str() {
        "sandbox.css" => ("text/css; charset=utf-8", CSS),
        "sandbox.js" => ("text/javascript; charset=utf-8", JS),
        _ => {
            return message(
                &state,
                StatusCode::NOT_FOUND,
                "Not found",
                "The sandbox has no such file.",
            );
        }
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(3600),
        ]))
        .body(body)
}
