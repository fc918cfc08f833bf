//! Control of the sandbox, for tests, the review runner and people: the scenario API, the
//! sandbox's view of a trade as JSON, webhook resends, and the console page at the root.
//! Not KICC's protocol: plain HTTP semantics (400 for a bad request, 404 for none such).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use serde_json::{Value, json};

use super::SandboxState;
use super::ledger::{
    AttemptOutcome, Delivery, DeliveryKind, DeliveryState, Ledger, Method, ScenarioTarget, Trade,
    stamp,
};
use super::pages::{format_amount, message, render};
use super::scenario::{Scenario, ScenarioSetting};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(console))
        .route("", web::get().to(console))
        .route("/control/scenario", web::post().to(set_scenario))
        .route("/control/trades/{id}", web::get().to(trade))
        .route("/control/webhooks/{id}/resend", web::post().to(resend));
}

/// Whether a request came from an HTML form (the console) rather than a program.
fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn to_console(state: &SandboxState) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("{}/", state.base_path)))
        .finish()
}

fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

/// The fields of a scenario request, from JSON or from a form.
struct ScenarioRequest {
    shop_order_no: Option<String>,
    scenario: Scenario,
    count: Option<u64>,
}

fn parse_scenario_request(form: bool, body: &[u8]) -> Result<ScenarioRequest, String> {
    let (order, name, count): (Option<String>, Option<String>, Option<String>) = if form {
        let fields: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        (
            fields.get("shopOrderNo").cloned(),
            fields.get("scenario").cloned(),
            fields.get("count").cloned(),
        )
    } else {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let text = |field: &str| -> Result<Option<String>, String> {
            match value.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) if field == "count" => Ok(Some(n.to_string())),
                Some(other) => Err(format!("{field} must be a string, not {other}")),
            }
        };
        (text("shopOrderNo")?, text("scenario")?, text("count")?)
    };
    let scenario = name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or("scenario is required")?
        .parse::<Scenario>()
        .map_err(|e| e.to_string())?;
    let count = match count.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| format!("count `{c}` is not a whole number ≥ 0"))?,
        ),
    };
    let shop_order_no = order.map(|o| o.trim().to_owned()).filter(|o| !o.is_empty());
    Ok(ScenarioRequest {
        shop_order_no,
        scenario,
        count,
    })
}

/// `POST /control/scenario`: `{"shopOrderNo": "…"|null, "scenario": NAME, "count": N}`.
async fn set_scenario(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let form = is_form(&req);
    let request = match parse_scenario_request(form, &body) {
        Ok(r) => r,
        Err(why) if form => {
            return message(&state, StatusCode::BAD_REQUEST, "Scenario not set", why);
        }
        Err(why) => return json_error(StatusCode::BAD_REQUEST, why),
    };
    let setting = ScenarioSetting::new(request.scenario, request.count);
    let target = state
        .ledger()
        .set_scenario(request.shop_order_no.as_deref(), setting);
    log::info!(
        "sandbox: scenario {} (count {}) for {}",
        setting.scenario,
        setting.count,
        request.shop_order_no.as_deref().unwrap_or("the next trade")
    );
    if form {
        return to_console(&state);
    }
    let (applies_to, pg_cno) = match target {
        ScenarioTarget::Trade { pg_cno } => ("trade", Some(pg_cno)),
        ScenarioTarget::Order => ("order", None),
        ScenarioTarget::Next => ("next", None),
    };
    HttpResponse::Ok().json(json!({
        "shopOrderNo": request.shop_order_no,
        "scenario": setting.scenario,
        "count": setting.count,
        "appliesTo": applies_to,
        "pgCno": pg_cno,
    }))
}

/// `GET /control/trades/{pgCno}` (or a shopOrderNo / mercTrxNo): the sandbox's view of a trade.
async fn trade(state: web::Data<SandboxState>, id: web::Path<String>) -> HttpResponse {
    let ledger = state.ledger();
    match ledger.find_trade(&id) {
        Some(trade) => HttpResponse::Ok().json(trade_json(&ledger, trade)),
        None => json_error(StatusCode::NOT_FOUND, format!("no trade `{id}`")),
    }
}

/// `POST /control/webhooks/{id}/resend`: the same body to the same address, a new delivery.
async fn resend(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    id: web::Path<u64>,
) -> HttpResponse {
    let new_id = state.ledger().resend(*id, &SandboxState::now());
    let Some(new_id) = new_id else {
        return if is_form(&req) {
            message(
                &state,
                StatusCode::NOT_FOUND,
                "Webhook not found",
                format!("There is no webhook delivery {id}."),
            )
        } else {
            json_error(StatusCode::NOT_FOUND, format!("no webhook delivery {id}"))
        };
    };
    log::info!("sandbox: webhook {id} resent as {new_id}");
    super::webhook::start(&state, &[new_id]);
    if is_form(&req) {
        to_console(&state)
    } else {
        HttpResponse::Ok().json(json!({ "deliveryId": new_id, "resendOf": *id }))
    }
}

pub fn trade_json(ledger: &Ledger, trade: &Trade) -> Value {
    let trade_type = match trade.method {
        Method::WechatNative => Some("native"),
        Method::WechatMweb => Some("mweb"),
        Method::KiccPay => None,
    };
    json!({
        "pgCno": trade.pg_cno,
        "method": trade.method.name(),
        "tradeType": trade_type,
        "shopOrderNo": trade.shop_order_no,
        "goodsName": trade.goods_name,
        "currency": trade.currency.code(),
        "amount": trade.amount,
        "approvedAmount": trade.approved_amount(),
        "cancelledAmount": trade.cancelled_amount(),
        "remainingAmount": trade.remaining(),
        "statusCode": trade.status_code(),
        "status": trade.status_name(),
        "authorizationId": trade.authorization_id,
        "paidAt": trade.paid_at.as_ref().map(stamp),
        "approval": trade.approval.as_ref().map(|a| json!({
            "amount": a.amount,
            "transactionDate": stamp(&a.at),
            "approvalNo": a.approval_no,
            "vanTrxNo": a.van_trx_no,
            "by": match a.by {
                super::ledger::ApprovedBy::Merchant => "merchant",
                super::ledger::ApprovedBy::Sandbox => "sandbox",
            },
        })),
        "scenario": trade.scenario,
        "returnUrl": trade.return_url,
        "notifyUrl": trade.notify_url,
        "customerInfo": trade.customer,
        "createdAt": stamp(&trade.created_at),
        "cancels": trade.cancels.iter().map(|c| json!({
            "cancelPgCno": c.cancel_pg_cno,
            "amount": c.amount,
            "cancelDate": stamp(&c.at),
            "api": c.api,
            "requestId": c.request_id,
            "remainingAfter": c.remaining_after,
            "statusCode": c.status_after,
        })).collect::<Vec<_>>(),
        "calls": trade.calls,
        "webhooks": ledger.deliveries_of(&trade.pg_cno).map(delivery_json).collect::<Vec<_>>(),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    let (kind, cancel_pg_cno) = match &d.kind {
        DeliveryKind::Approval => ("approval", None),
        DeliveryKind::Cancel { cancel_pg_cno } => ("cancel", Some(cancel_pg_cno)),
    };
    json!({
        "id": d.id,
        "kind": kind,
        "cancelPgCno": cancel_pg_cno,
        "url": d.url,
        "state": d.state,
        "body": serde_json::from_str::<Value>(&d.body).unwrap_or(Value::Null),
        "resendOf": d.resend_of,
        "createdAt": stamp(&d.created_at),
        "attempts": d.attempts,
    })
}

// ----------------------------------------------------------------------------------------------
// Console

pub struct ScenarioOption {
    pub name: &'static str,
    pub describe: &'static str,
}

pub struct TradeRow {
    pub pg_cno: String,
    pub method: &'static str,
    pub shop_order_no: String,
    pub amount: String,
    pub status_code: &'static str,
    pub status: &'static str,
    pub cancelled: String,
    pub cancels: usize,
    pub scenario: String,
    pub created: String,
    pub page_url: Option<String>,
}

pub struct CallRow {
    pub at: String,
    pub api: &'static str,
    pub key: String,
    pub pg_cno: String,
    pub res_cd: String,
    pub ok: bool,
    pub notes: String,
}

pub struct AttemptRow {
    pub number: u32,
    pub at: String,
    pub result: String,
    pub acked: bool,
}

pub struct DeliveryRow {
    pub id: u64,
    pub pg_cno: String,
    pub kind: String,
    pub url: String,
    pub state: &'static str,
    pub attempts: Vec<AttemptRow>,
    pub resend_of: String,
}

#[derive(Template)]
#[template(path = "sandbox/console.html")]
pub struct ConsolePage {
    pub base: String,
    pub mall_id: String,
    pub public_base: String,
    pub backoff: String,
    pub auto_approve: String,
    pub next_scenario: Option<String>,
    pub scenarios: Vec<ScenarioOption>,
    pub trades: Vec<TradeRow>,
    pub calls: Vec<CallRow>,
    pub deliveries: Vec<DeliveryRow>,
}

const CONSOLE_ROWS: usize = 200;

/// `GET /`: the console.
async fn console(state: web::Data<SandboxState>) -> HttpResponse {
    let page = {
        let ledger = state.ledger();
        console_page(&state, &ledger)
    };
    render(StatusCode::OK, &page)
}

fn console_page(state: &SandboxState, ledger: &Ledger) -> ConsolePage {
    let base = state.base_path.clone();
    let trades = ledger
        .trades_newest_first()
        .take(CONSOLE_ROWS)
        .map(|t| TradeRow {
            pg_cno: t.pg_cno.clone(),
            method: t.method.name(),
            shop_order_no: t.shop_order_no.clone(),
            amount: format_amount(t.amount, t.currency),
            status_code: t.status_code(),
            status: t.status_name(),
            cancelled: format_amount(t.cancelled_amount(), t.currency),
            cancels: t.cancels.len(),
            scenario: if t.scenario.scenario.default_count() > 0 {
                format!("{} ({})", t.scenario.scenario, t.scenario.count)
            } else {
                t.scenario.scenario.to_string()
            },
            created: stamp(&t.created_at),
            page_url: match t.method {
                Method::WechatNative => Some(format!("{base}/wechat/scan/{}", t.pg_cno)),
                Method::WechatMweb => Some(format!("{base}/wechat/mweb/{}", t.pg_cno)),
                Method::KiccPay => None,
            },
        })
        .collect();
    let calls = ledger
        .recent_calls()
        .take(CONSOLE_ROWS)
        .map(|c| CallRow {
            at: c.at.clone(),
            api: c.api,
            key: c.shop_transaction_id.clone().unwrap_or_default(),
            pg_cno: c.pg_cno.clone().unwrap_or_default(),
            res_cd: c.res_cd.clone(),
            ok: c.res_cd == "0000",
            notes: c.notes.join("; "),
        })
        .collect();
    let deliveries = ledger
        .deliveries_newest_first()
        .take(CONSOLE_ROWS)
        .map(|d| DeliveryRow {
            id: d.id,
            pg_cno: d.pg_cno.clone(),
            kind: match &d.kind {
                DeliveryKind::Approval => "approval".to_owned(),
                DeliveryKind::Cancel { cancel_pg_cno } => format!("cancel {cancel_pg_cno}"),
            },
            url: d.url.clone(),
            state: match d.state {
                DeliveryState::Sending => "sending",
                DeliveryState::Acked => "acked",
                DeliveryState::GaveUp => "gave up",
            },
            attempts: d
                .attempts
                .iter()
                .map(|a| AttemptRow {
                    number: a.number,
                    at: a.at.clone(),
                    result: match &a.outcome {
                        AttemptOutcome::Http { status, body } => {
                            format!("HTTP {status} {body}")
                        }
                        AttemptOutcome::Error { error } => format!("error: {error}"),
                        AttemptOutcome::Dropped => "dropped (webhook_fails)".to_owned(),
                    },
                    acked: a.acked,
                })
                .collect(),
            resend_of: d.resend_of.map(|r| r.to_string()).unwrap_or_default(),
        })
        .collect();
    let config = &state.config;
    ConsolePage {
        base,
        mall_id: config.mall_id.clone(),
        public_base: state.public_base.clone(),
        backoff: format!("{} ms", config.webhook_backoff.as_millis()),
        auto_approve: config
            .auto_approve
            .map_or_else(|| "off".to_owned(), |d| format!("{} ms", d.as_millis())),
        next_scenario: ledger
            .next_scenario()
            .map(|s| format!("{} (count {})", s.scenario, s.count)),
        scenarios: Scenario::ALL
            .iter()
            .map(|s| ScenarioOption {
                name: s.name(),
                describe: s.describe(),
            })
            .collect(),
        trades,
        calls,
        deliveries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_requests_read_from_json_and_forms() {
        let r = parse_scenario_request(
            false,
            br#"{"shopOrderNo":null,"scenario":"cancel_fails","count":3}"#,
        )
        .unwrap();
        assert_eq!(
            (r.shop_order_no, r.scenario, r.count),
            (None, Scenario::CancelFails, Some(3))
        );
        let r = parse_scenario_request(true, b"shopOrderNo=O-1&scenario=decline&count=").unwrap();
        assert_eq!(
            (r.shop_order_no.as_deref(), r.scenario, r.count),
            (Some("O-1"), Scenario::Decline, None)
        );
        let r =
            parse_scenario_request(true, b"shopOrderNo=&scenario=webhook_storm&count=4").unwrap();
        assert_eq!((r.shop_order_no, r.count), (None, Some(4)));
        for bad in [
            &br#"{"scenario":"nope"}"#[..],
            br#"{"count":1}"#,
            br#"{"scenario":"decline","count":-1}"#,
            br#"{"scenario":"decline","shopOrderNo":5}"#,
            b"not json",
        ] {
            assert!(parse_scenario_request(false, bad).is_err(), "{bad:?}");
        }
    }
}
