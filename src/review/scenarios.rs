//! The scenarios themselves: each makes the shopper's, KICC's and the merchant's moves over real
//! HTTP, then checks the order, its records and KICC's trade (rules in `catalog.rs`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::Ctx;
use super::env::{
    Created, DbFault, Form, Instance, KICC_DEV_IP, STRANGER_IP, Step, first_form, text_of,
};
use super::evidence::records;
use crate::db::{DbError, gateway_calls, webhook_deliveries};

/// The sandbox's answer to a reused `shopTransactionId` (docs/KICC-ASSUMPTIONS.md).
const DUPLICATE_KEY: &str = "3001";
/// An iPhone's WeChat browser.
const PHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47";

pub async fn run(id: &str, ctx: &mut Ctx<'_>) -> Step<()> {
    match id {
        "native_qr" => native_qr(ctx).await,
        "mweb_redirect" => mweb_redirect(ctx).await,
        "usd_minor_units" => usd_minor_units(ctx).await,
        "unique_order_numbers" => unique_order_numbers(ctx).await,
        "approval_paid" => approval_paid(ctx).await,
        "timeout_30s" => timeout_30s(ctx),
        "approval_amount_mismatch" => {
            wechat_must_cancel(ctx, Cancel::Scenario("approval_amount_mismatch")).await
        }
        "approval_bad_mac" => wechat_must_cancel(ctx, Cancel::Scenario("bad_mac")).await,
        "approval_db_failure" => wechat_must_cancel(ctx, Cancel::DbFailure).await,
        "approval_timeout" => approval_timeout(ctx).await,
        "kiccpay_paid" => kiccpay_paid(ctx).await,
        "kiccpay_timeout_net_cancel" => kiccpay_net_cancel(ctx, "approval_late", Some(2500)).await,
        "kiccpay_unparseable_net_cancel" => {
            kiccpay_net_cancel(ctx, "malformed_reply", Some(1)).await
        }
        "kiccpay_amount_mismatch" => {
            kiccpay_cancel(ctx, Cancel::Scenario("approval_amount_mismatch")).await
        }
        "kiccpay_db_failure" => kiccpay_cancel(ctx, Cancel::DbFailure).await,
        "webhook_amount_mismatch" => webhook_amount_mismatch(ctx).await,
        "webhook_db_failure_cancel" => webhook_db_failure_cancel(ctx).await,
        "webhook_db_failure_resend" => webhook_db_failure_resend(ctx).await,
        "webhook_duplicates" => webhook_duplicates(ctx).await,
        "webhook_before_return" => webhook_before_return(ctx).await,
        "return_lost_status_check" => return_lost_status_check(ctx).await,
        "cancel_webhook_full" => cancel_webhook(ctx, false).await,
        "cancel_webhook_partial" => cancel_webhook(ctx, true).await,
        "cancel_retry_original_date" => cancel_retry_original_date(ctx).await,
        "cancel_reply_lost_status_first" => cancel_reply_lost_status_first(ctx).await,
        "shopper_cancelled" => shopper_cancelled(ctx).await,
        "forged_return" => forged_return(ctx).await,
        "webhook_source_ip" => webhook_source_ip(ctx).await,
        "idempotency_keys" => idempotency_keys(ctx).await,
        "webhook_ack_10s" => webhook_ack_10s(ctx).await,
        "late_payment_accepted" => super::late::late_payment_accepted(ctx).await,
        "late_payment_refunded" => super::late::late_payment_refunded(ctx).await,
        "forged_failure_return" => super::late::forged_failure_return(ctx).await,
        "unconfirmed_cancel_notification" => {
            super::late::unconfirmed_cancel_notification(ctx).await
        }
        "forwarded_for_two_lines" => super::late::forwarded_for_two_lines(ctx).await,
        other => Err(format!("no scenario `{other}`")),
    }
}

/// What makes a cancel necessary.
#[derive(Clone, Copy)]
enum Cancel {
    /// A sandbox scenario (amount mismatch, bad msgAuthValue).
    Scenario(&'static str),
    /// The database refuses to mark the order paid.
    DbFailure,
}

pub(super) fn status(order: &Value) -> String {
    order["status"].as_str().unwrap_or("?").to_owned()
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// Pays a WeChat order on KICC's page and brings the browser back; the returnUrl's answer.
pub(super) async fn pay_and_return(
    ctx: &Ctx<'_>,
    created: &Created,
) -> Step<(u16, String, String)> {
    let form = ctx
        .env
        .wechat_press(&created.pg_cno, "pay")
        .await?
        .ok_or("the payment page did not send the shopper back")?;
    ctx.env.submit(&ctx.env.http, &form).await
}

/// Checks that KICC's trade ended as `code` with nothing (or `remaining`) left.
pub(super) async fn check_trade(
    ctx: &mut Ctx<'_>,
    id: &str,
    code: &str,
    remaining: Option<i64>,
) -> Step<Value> {
    let trade = ctx.env.until_trade(id, |t| t["statusCode"] == code).await?;
    ctx.eq(
        "KICC's trade status",
        code.to_owned(),
        text(&trade["statusCode"]),
    );
    if let Some(remaining) = remaining {
        ctx.eq(
            "left at KICC",
            remaining,
            trade["remainingAmount"].as_i64().unwrap_or(-1),
        );
    }
    Ok(trade)
}

/// Waits for the order to settle (cancelled, paid, or left for a person) and checks it ended
/// cancelled; the order as the API shows it.
pub(super) async fn ends_cancelled(ctx: &mut Ctx<'_>, instance: Instance, no: &str) -> Step<Value> {
    let order = ctx
        .env
        .until(instance, no, &["cancelled", "paid", "needs_attention"])
        .await?;
    ctx.eq("order status", "cancelled".to_owned(), status(&order));
    Ok(order)
}

// ---- spec 01 ----------------------------------------------------------------------------

async fn native_qr(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    let base = &env.app(Instance::Main).base;
    let page = text_of(
        env.http.get(format!("{base}/orders/{}", created.no)),
        "the order page",
    )
    .await?;
    ctx.check(
        "the order page shows the QR",
        "an <svg> QR code",
        if page.contains("<svg") {
            "an <svg> QR code"
        } else {
            "no QR"
        },
        page.contains("<svg"),
    );
    let png = env
        .http
        .get(format!("{base}/orders/{}/qr.png", created.no))
        .send()
        .await
        .map_err(|e| format!("qr.png: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("qr.png: {e}"))?;
    let decoded = super::env::decode_qr_png(&png)?;
    ctx.eq(
        "the QR image decodes to",
        created.payment_page_url.clone(),
        decoded.clone(),
    );
    // The phone opens what it scanned.
    let scan = env
        .http
        .get(&decoded)
        .send()
        .await
        .map_err(|e| format!("opening the scanned URL: {e}"))?;
    let scan_status = scan.status().as_u16();
    let scan_page = scan.text().await.unwrap_or_default();
    ctx.check(
        "the scanned URL opens the payment page",
        "HTTP 200 with a Pay form",
        format!("HTTP {scan_status}"),
        scan_status == 200 && first_form(&decoded, &scan_page).is_some(),
    );
    pay_and_return(ctx, &created).await?;
    let order = env.until(Instance::Main, &created.no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC's trade type",
        "native".to_owned(),
        text(&trade["tradeType"]),
    );
    Ok(())
}

async fn mweb_redirect(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let base = env.app(Instance::Main).base.clone();
    let phone = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent(PHONE_UA)
        .build()
        .map_err(|e| e.to_string())?;
    let get = |url: String| {
        let request = phone.get(&url);
        async move { text_of(request, &format!("GET {url}")).await }
    };
    let product_url = format!("{base}/products/CERAMIC-MUG");
    let mut add = first_form(&product_url, &get(product_url.clone()).await?)
        .ok_or("the product page has no form")?;
    add.set("quantity", "2");
    let (s, _, _) = env.submit(&phone, &add).await?;
    ctx.eq("adding to the cart answers", 303, s);
    let checkout_url = format!("{base}/checkout");
    let page = get(checkout_url.clone()).await?;
    let mut form = page
        .split("<form")
        .skip(1)
        .map(|f| format!("<form{f}"))
        .find_map(|f| first_form(&checkout_url, &f).filter(|f| f.action.ends_with("/checkout")))
        .ok_or("the checkout page has no checkout form")?;
    for (k, v) in [
        ("name", "Review Phone"),
        ("email", "phone@example.com"),
        ("phone", "01012345678"),
        ("address", "Busan, Korea"),
        ("pay_method", "wechat"),
    ] {
        form.set(k, v);
    }
    let (s, location, body) = env.submit(&phone, &form).await?;
    let redirected = s == 303 && location.contains("/wechat/mweb/");
    ctx.check(
        "the checkout answers",
        "303 to KICC's mweb page",
        format!(
            "{s} to {}",
            if location.is_empty() {
                "(nowhere)"
            } else {
                &location
            }
        ),
        redirected,
    );
    if !redirected {
        return Err(format!(
            "no redirect; the page said: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    let pg_cno = location
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let trade = env.trade(&pg_cno).await?;
    let no = text(&trade["shopOrderNo"]);
    env.trades.lock().expect("trades").push(pg_cno.clone());
    ctx.track(Instance::Main, &no);
    ctx.eq(
        "KICC's trade type",
        "mweb".to_owned(),
        text(&trade["tradeType"]),
    );
    let mweb = get(location.clone()).await?;
    ctx.check(
        "the redirect target is the payment page",
        "a page with a Pay form",
        if first_form(&location, &mweb).is_some() {
            "a page with a Pay form"
        } else {
            "no form"
        },
        first_form(&location, &mweb).is_some(),
    );
    let back = env
        .wechat_press(&pg_cno, "pay")
        .await?
        .ok_or("the payment page did not send the shopper back")?;
    let (s, location, _) = env.submit(&phone, &back).await?;
    ctx.check(
        "the returnUrl sends the phone to",
        "its order page",
        format!("{s} {location}"),
        s == 303 && location.ends_with(&format!("/orders/{no}")),
    );
    let order = env.until(Instance::Main, &no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    Ok(())
}

async fn usd_minor_units(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let base = &env.app(Instance::Main).base;
    let products: Value = env
        .http
        .get(format!("{base}/api/products"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let price = |sku: &str| {
        products
            .as_array()
            .and_then(|a| a.iter().find(|p| p["sku"] == sku))
            .and_then(|p| p["price"]["USD"].as_i64())
            .unwrap_or_default()
    };
    let expected = 2 * price("CERAMIC-MUG") + price("STICKER-PACK");
    let created = env.create(Instance::Main, "wechat", "pc", "USD").await?;
    ctx.track(Instance::Main, &created.no);
    ctx.eq("the order's amount in cents", expected, created.amount);
    let r = records(env, &created.no).await?;
    let create = r.requests("wechat_create");
    let sent = create.first().cloned().unwrap_or(Value::Null);
    ctx.eq(
        "totalAmount sent",
        expected,
        sent["amountInfo"]["totalAmount"].as_i64().unwrap_or(-1),
    );
    ctx.eq(
        "currency sent",
        "USD".to_owned(),
        text(&sent["amountInfo"]["currency"]),
    );
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC holds",
        expected,
        trade["amount"].as_i64().unwrap_or(-1),
    );
    pay_and_return(ctx, &created).await?;
    let order = env.until(Instance::Main, &created.no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC approved",
        expected,
        trade["approvedAmount"].as_i64().unwrap_or(-1),
    );
    Ok(())
}

async fn unique_order_numbers(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created: Vec<Step<Created>> = futures_util::future::join_all(
        (0..20).map(|_| env.create(Instance::Main, "wechat", "pc", "KRW")),
    )
    .await;
    let created: Vec<Created> = created.into_iter().collect::<Step<_>>()?;
    let numbers: HashSet<&str> = created.iter().map(|c| c.no.as_str()).collect();
    let pg_cnos: HashSet<&str> = created.iter().map(|c| c.pg_cno.as_str()).collect();
    ctx.eq("different shopOrderNo values", 20, numbers.len());
    let longest = created.iter().map(|c| c.no.len()).max().unwrap_or_default();
    ctx.check(
        "longest shopOrderNo",
        "≤ 20 bytes",
        format!("{longest} bytes"),
        longest <= 20,
    );
    ctx.eq("trades KICC registered", 20, pg_cnos.len());
    for c in created.iter().take(2) {
        ctx.track(Instance::Main, &c.no);
    }
    ctx.note("The first two of the 20 orders are shown; all stay pending (nobody pays).");
    Ok(())
}

// ---- spec 02 ----------------------------------------------------------------------------

async fn approval_paid(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    let (s, location, _) = pay_and_return(ctx, &created).await?;
    ctx.check(
        "the returnUrl answers",
        "303 to the order page",
        format!("{s} {location}"),
        s == 303 && location.ends_with(&format!("/orders/{}", created.no)),
    );
    let order = env.until(Instance::Main, &created.no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    ctx.eq(
        "approval calls",
        1,
        r.calls.iter().filter(|c| c.api == "approval_v2").count(),
    );
    ctx.check(
        "the timeline says",
        "msgAuthValue valid",
        r.causes()
            .lines()
            .find(|c| c.contains("msgAuthValue"))
            .unwrap_or("(nothing about msgAuthValue)"),
        r.causes().contains("msgAuthValue valid"),
    );
    ctx.eq("times marked paid", 1, r.entered("paid"));
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC's trade status",
        "TS01".to_owned(),
        text(&trade["statusCode"]),
    );
    ctx.eq(
        "KICC approved",
        created.amount,
        trade["approvedAmount"].as_i64().unwrap_or(-1),
    );
    let order_url = format!("{}/orders/{}", env.app(Instance::Main).base, created.no);
    let page = text_of(env.http.get(order_url), "the order page").await?;
    let paid_page = page.contains("Payment received") || page.contains("paid");
    ctx.check(
        "the shopper's page",
        "says paid",
        if paid_page { "says paid" } else { "does not" },
        paid_page,
    );
    Ok(())
}

fn timeout_30s(ctx: &mut Ctx<'_>) -> Step<()> {
    let defaults = crate::config::Config::from_lookup(|_| Ok(None))
        .map_err(|e| format!("the default configuration: {e}"))?;
    ctx.eq(
        "default gateway timeout (s)",
        30,
        defaults.gateway_timeout.as_secs(),
    );
    let main = &ctx.env.app(Instance::Main).state.config;
    ctx.eq(
        "the main instance's gateway timeout (s)",
        30,
        main.gateway_timeout.as_secs(),
    );
    Ok(())
}

/// A WeChat payment that must be cancelled on the returnUrl path (notifications refused).
async fn wechat_must_cancel(ctx: &mut Ctx<'_>, why: Cancel) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Quiet, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Quiet, &created.no);
    match why {
        Cancel::Scenario(name) => env.scenario(&created.no, name, None).await?,
        Cancel::DbFailure => env.inject(DbFault::PaidWrite).await?,
    }
    pay_and_return(ctx, &created).await?;
    if matches!(why, Cancel::DbFailure) {
        env.heal(DbFault::PaidWrite).await?;
    }
    let order = ends_cancelled(ctx, Instance::Quiet, &created.no).await?;
    ctx.eq(
        "cancelled amount",
        created.amount,
        order["cancelledAmount"].as_i64().unwrap_or(-1),
    );
    let r = records(env, &created.no).await?;
    ctx.eq("times marked paid", 0, r.entered("paid"));
    let cause = r
        .timeline
        .iter()
        .find(|t| t.event == "compensation_started")
        .map(|t| t.cause.clone())
        .unwrap_or_else(|| "(no compensation started)".into());
    let expected_words = match why {
        Cancel::Scenario("approval_amount_mismatch") => "differs from the order's",
        Cancel::Scenario(_) => "msgAuthValue",
        Cancel::DbFailure => DbFault::PaidWrite.message(),
    };
    ctx.check(
        "why the cancel started",
        format!("…{expected_words}…"),
        &cause,
        cause.contains(expected_words),
    );
    let trade = check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    if matches!(why, Cancel::Scenario("approval_amount_mismatch")) {
        ctx.eq(
            "KICC approved (one won more)",
            created.amount + 1,
            trade["approvedAmount"].as_i64().unwrap_or(-1),
        );
    }
    Ok(())
}

async fn approval_timeout(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Quiet, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Quiet, &created.no);
    env.scenario(&created.no, "approval_late", Some(2500))
        .await?;
    pay_and_return(ctx, &created).await?;
    ends_cancelled(ctx, Instance::Quiet, &created.no).await?;
    let r = records(env, &created.no).await?;
    let approval = r.calls.iter().find(|c| c.api == "approval_v2");
    ctx.eq(
        "the approval call ended",
        "timeout".to_owned(),
        approval.and_then(|c| c.outcome.clone()).unwrap_or_default(),
    );
    let apis = r.apis();
    let after = apis
        .iter()
        .position(|a| *a == "approval_v2")
        .map(|i| apis[i + 1..].join(", "))
        .unwrap_or_default();
    ctx.check(
        "calls after the timeout",
        "retrieve_transaction, then wechat_revise",
        &after,
        after.starts_with("retrieve_transaction, wechat_revise"),
    );
    check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    Ok(())
}

// ---- spec 03 ----------------------------------------------------------------------------

/// A KICC Pay order paid in KICC's window: (order, the returnUrl's answer).
async fn kiccpay_pay(
    ctx: &mut Ctx<'_>,
    instance: Instance,
    scenario: Option<(&str, Option<u64>)>,
) -> Step<Created> {
    let env = ctx.env;
    let created = env.create(instance, "kiccpay", "pc", "KRW").await?;
    ctx.track(instance, &created.no);
    if let Some((name, count)) = scenario {
        env.scenario(&created.no, name, count).await?;
    }
    let form = env.kiccpay_press(&created.payment_page_url, "pay").await?;
    env.submit(&env.http, &form).await?;
    Ok(created)
}

async fn kiccpay_paid(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = kiccpay_pay(ctx, Instance::Main, None).await?;
    let order = env.until(Instance::Main, &created.no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    ctx.eq("calls", "kiccpay_approve".to_owned(), r.apis().join(", "));
    let approve = r.calls.first();
    ctx.eq(
        "KICC's answer",
        "0000".to_owned(),
        approve.and_then(|c| c.res_cd.clone()).unwrap_or_default(),
    );
    let request = approve.map(|c| c.request_body.clone()).unwrap_or_default();
    let token_hidden =
        request.contains("tokenKey") && !request.contains(&text(&json!(r.order.authorization_id)));
    ctx.check(
        "tokenKey as stored",
        "redacted (no authorizationId in clear)",
        if token_hidden {
            "redacted (no authorizationId in clear)"
        } else {
            "in clear"
        },
        token_hidden,
    );
    let trade = check_trade(ctx, &created.no, "TS01", None).await?;
    ctx.eq(
        "KICC approved",
        created.amount,
        trade["approvedAmount"].as_i64().unwrap_or(-1),
    );
    Ok(())
}

async fn kiccpay_net_cancel(ctx: &mut Ctx<'_>, scenario: &str, count: Option<u64>) -> Step<()> {
    let env = ctx.env;
    let created = kiccpay_pay(ctx, Instance::Quiet, Some((scenario, count))).await?;
    ends_cancelled(ctx, Instance::Quiet, &created.no).await?;
    let r = records(env, &created.no).await?;
    ctx.eq(
        "calls",
        "kiccpay_approve, kiccpay_net_cancel".to_owned(),
        r.apis().join(", "),
    );
    ctx.eq(
        "the approval ended",
        if scenario == "approval_late" {
            "timeout"
        } else {
            "malformed"
        }
        .to_owned(),
        r.calls
            .first()
            .and_then(|c| c.outcome.clone())
            .unwrap_or_default(),
    );
    let (approve, net) = (
        r.requests("kiccpay_approve"),
        r.requests("kiccpay_net_cancel"),
    );
    let same = |field: &str| {
        approve.first().map(|a| &a[field]) == net.first().map(|n| &n[field])
            && approve.first().is_some_and(|a| !a[field].is_null())
    };
    let fields = ["mercTrxNo", "trxAmt", "tranDt", "tranTm", "tokenKey"];
    let differing: Vec<&str> = fields.iter().copied().filter(|f| !same(f)).collect();
    ctx.check(
        "net-cancel resends the approval's data",
        fields.join(", "),
        if differing.is_empty() {
            fields.join(", ")
        } else {
            format!("differs in {}", differing.join(", "))
        },
        differing.is_empty(),
    );
    check_trade(ctx, &created.no, "TS12", None).await?;
    Ok(())
}

async fn kiccpay_cancel(ctx: &mut Ctx<'_>, why: Cancel) -> Step<()> {
    let env = ctx.env;
    let scenario = match why {
        Cancel::Scenario(name) => Some((name, None)),
        Cancel::DbFailure => {
            env.inject(DbFault::PaidWrite).await?;
            None
        }
    };
    let created = kiccpay_pay(ctx, Instance::Quiet, scenario).await?;
    env.heal(DbFault::PaidWrite).await?;
    ends_cancelled(ctx, Instance::Quiet, &created.no).await?;
    let r = records(env, &created.no).await?;
    ctx.eq(
        "calls",
        "kiccpay_approve, kiccpay_cancel".to_owned(),
        r.apis().join(", "),
    );
    ctx.eq("times marked paid", 0, r.entered("paid"));
    let trade = env.trade(&created.no).await?;
    ctx.eq(
        "left at KICC",
        0,
        trade["remainingAmount"].as_i64().unwrap_or(-1),
    );
    Ok(())
}

// ---- spec 04 ----------------------------------------------------------------------------

async fn webhook_amount_mismatch(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    env.scenario(&created.no, "webhook_amount_mismatch", None)
        .await?;
    pay_and_return(ctx, &created).await?;
    let order = env
        .until(
            Instance::Main,
            &created.no,
            &["cancelled", "needs_attention"],
        )
        .await?;
    ctx.eq("order status", "cancelled".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    let notified = r.deliveries.iter().find(|d| d.route.ends_with("/payment"));
    ctx.eq(
        "the notification's ack",
        "0000".to_owned(),
        notified
            .and_then(|d| d.ack_res_cd.clone())
            .unwrap_or_default(),
    );
    let cause = r
        .timeline
        .iter()
        .find(|t| t.event == "compensation_started")
        .map(|t| t.cause.clone())
        .unwrap_or_default();
    ctx.check(
        "why the cancel started",
        "the notified amount differs",
        &cause,
        cause.contains(&(created.amount + 1).to_string()),
    );
    check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    Ok(())
}

async fn webhook_db_failure_cancel(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    env.scenario(&created.no, "return_lost", None).await?;
    env.inject(DbFault::WebhookNote).await?;
    env.wechat_press(&created.pg_cno, "pay").await?;
    let order = env
        .until(
            Instance::Main,
            &created.no,
            &["cancelled", "paid", "needs_attention"],
        )
        .await?;
    env.heal(DbFault::WebhookNote).await?;
    ctx.eq("order status", "cancelled".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    let first = r.deliveries.first();
    ctx.eq(
        "the first notification's ack",
        "5001".to_owned(),
        first.and_then(|d| d.ack_res_cd.clone()).unwrap_or_default(),
    );
    ctx.eq("times marked paid", 0, r.entered("paid"));
    check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    Ok(())
}

/// The ack KICC read on each attempt of the trade's first webhook: (resCd or error, acked).
fn attempts(trade: &Value) -> Vec<(String, bool)> {
    trade["webhooks"][0]["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|at| {
                    let said = at["body"]
                        .as_str()
                        .and_then(|b| serde_json::from_str::<Value>(b).ok())
                        .map(|b| text(&b["resCd"]))
                        .or_else(|| at["error"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "(nothing)".into());
                    (said, at["acked"] == true)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn webhook_db_failure_resend(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    env.scenario(&created.no, "return_lost", None).await?;
    env.inject(DbFault::DeliveryInsert).await?;
    env.wechat_press(&created.pg_cno, "pay").await?;
    // KICC's first attempt is answered (not stored); then the database recovers.
    let first = env
        .until_trade(&created.pg_cno, |t| !attempts(t).is_empty())
        .await;
    env.heal(DbFault::DeliveryInsert).await?;
    first?;
    let trade = env
        .until_trade(&created.pg_cno, |t| {
            attempts(t).iter().any(|(_, acked)| *acked)
        })
        .await?;
    let seen = attempts(&trade);
    ctx.eq(
        "KICC's first attempt was answered",
        "5001".to_owned(),
        seen.first().map(|(s, _)| s.clone()).unwrap_or_default(),
    );
    ctx.check(
        "a resend was acked",
        "0000 on attempt 2 or later",
        seen.iter()
            .enumerate()
            .map(|(i, (s, _))| format!("#{} {s}", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
        seen.iter().skip(1).any(|(s, acked)| *acked && s == "0000"),
    );
    let order = env.until(Instance::Main, &created.no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    ctx.eq(
        "deliveries applied",
        1,
        r.deliveries.iter().filter(|d| d.applied).count(),
    );
    ctx.eq("times marked paid", 1, r.entered("paid"));
    Ok(())
}

async fn webhook_duplicates(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    env.scenario(&created.no, "webhook_storm", Some(15)).await?;
    pay_and_return(ctx, &created).await?;
    env.until(Instance::Main, &created.no, &["paid"]).await?;
    let trade = env
        .until_trade(&created.pg_cno, |t| {
            t["webhooks"]
                .as_array()
                .is_some_and(|w| w.len() >= 15 && w.iter().all(|d| d["state"] == "acked"))
        })
        .await?;
    let sent = trade["webhooks"].as_array().map_or(0, Vec::len);
    ctx.eq("copies KICC sent", 15, sent);
    let r = records(env, &created.no).await?;
    let payment: Vec<_> = r
        .deliveries
        .iter()
        .filter(|d| d.route.ends_with("/payment"))
        .collect();
    ctx.eq("deliveries stored", 15, payment.len());
    ctx.eq(
        "deliveries applied",
        1,
        payment.iter().filter(|d| d.applied).count(),
    );
    let acks_ok = payment.iter().all(|d| {
        d.ack_res_cd.as_deref() == Some("0000")
            && d.ack_body
                .as_deref()
                .is_some_and(|b| b.contains(&created.pg_cno))
    });
    ctx.check(
        "every ack",
        "resCd 0000 echoing the pgCno",
        if acks_ok {
            "resCd 0000 echoing the pgCno".to_owned()
        } else {
            payment
                .iter()
                .map(|d| d.ack_body.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | ")
        },
        acks_ok,
    );
    ctx.eq("times marked paid", 1, r.entered("paid"));
    Ok(())
}

async fn webhook_before_return(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    env.scenario(&created.no, "webhook_first", None).await?;
    let form = env
        .wechat_press(&created.pg_cno, "pay")
        .await?
        .ok_or("the payment page did not send the shopper back")?;
    // The notification's first attempt is made before the page sends the browser back.
    let trade = env.trade(&created.pg_cno).await?;
    ctx.check(
        "KICC notified before the browser came back",
        "a notification attempt already made",
        format!("{} attempt(s)", attempts(&trade).len()),
        !attempts(&trade).is_empty(),
    );
    env.submit(&env.http, &form).await?;
    let order = env.until(Instance::Main, &created.no, &["paid"]).await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    ctx.eq("times marked paid", 1, r.entered("paid"));
    let applied = r.deliveries.iter().find(|d| d.applied);
    ctx.check(
        "the notification",
        "stored and applied",
        applied.map_or("not applied".to_owned(), |d| {
            format!("applied, ack {}", d.ack_res_cd.clone().unwrap_or_default())
        }),
        applied.is_some(),
    );
    let approvals = r.calls.iter().filter(|c| c.api == "approval_v2").count();
    ctx.check(
        "approval calls",
        "at most 1 (none needed once the notification is confirmed)",
        approvals,
        approvals <= 1,
    );
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC's trade status",
        "TS01".to_owned(),
        text(&trade["statusCode"]),
    );
    Ok(())
}

async fn return_lost_status_check(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let paid = env
        .create(Instance::Fallback, "wechat", "pc", "KRW")
        .await?;
    ctx.track(Instance::Fallback, &paid.no);
    env.scenario(&paid.no, "return_lost", None).await?;
    env.wechat_press(&paid.pg_cno, "pay").await?;
    let idle = env
        .create(Instance::Fallback, "wechat", "pc", "KRW")
        .await?;
    ctx.track(Instance::Fallback, &idle.no);
    // KICC's notification arrives and is refused here (not KICC's address).
    env.until_trade(&paid.pg_cno, |t| !attempts(t).is_empty())
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let app = env.app(Instance::Fallback);
    let mut passes = 0;
    loop {
        app.reconcile().await?;
        passes += 1;
        let a = status(&env.order(Instance::Fallback, &paid.no).await?);
        let b = status(&env.order(Instance::Fallback, &idle.no).await?);
        if (a != "pending" && b != "pending") || passes >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.note(format!("{passes} reconciler pass(es)"));
    let r = records(env, &paid.no).await?;
    ctx.eq(
        "the paid order",
        "paid".to_owned(),
        r.order.status.as_str().to_owned(),
    );
    ctx.eq(
        "the notification was",
        "refused".to_owned(),
        r.deliveries
            .first()
            .and_then(|d| d.outcome.clone())
            .unwrap_or_else(|| "(not received)".into()),
    );
    ctx.check(
        "how it was settled",
        "the reconciler's status check",
        r.causes()
            .lines()
            .find(|c| c.contains("status check"))
            .unwrap_or("(no status check)"),
        r.apis().contains(&"wechat_find") && r.causes().contains("status check"),
    );
    let idle = records(env, &idle.no).await?;
    ctx.eq(
        "the unpaid order",
        "expired".to_owned(),
        idle.order.status.as_str().to_owned(),
    );
    Ok(())
}

// ---- spec 05, 06: cancels ---------------------------------------------------------------

async fn cancel_webhook(ctx: &mut Ctx<'_>, partial: bool) -> Step<()> {
    let env = ctx.env;
    let created = env.paid_wechat(Instance::Main).await?;
    ctx.track(Instance::Main, &created.no);
    let part = created.amount / 2;
    let (amount, goal, left) = if partial {
        (
            part.to_string(),
            "partially_cancelled",
            created.amount - part,
        )
    } else {
        (String::new(), "cancelled", 0)
    };
    let answer = env
        .merchant_cancel(Instance::Main, &created.no, &amount)
        .await?;
    ctx.eq("the dashboard's answer", 303, answer);
    let order = env.until(Instance::Main, &created.no, &[goal]).await?;
    ctx.eq("order status", goal.to_owned(), status(&order));
    let cancelled = if partial { part } else { created.amount };
    ctx.eq(
        "cancelled amount",
        cancelled,
        order["cancelledAmount"].as_i64().unwrap_or(-1),
    );
    let r = records(env, &created.no).await?;
    let revise = r.requests("wechat_revise");
    let sent = revise.first().cloned().unwrap_or(Value::Null);
    ctx.eq(
        "reviseTypeCode sent",
        if partial { "32" } else { "40" }.to_owned(),
        text(&sent["reviseTypeCode"]),
    );
    if partial {
        ctx.eq(
            "totAmount sent",
            part,
            sent["amountInfo"]["totAmount"].as_i64().unwrap_or(-1),
        );
    }
    let cancel_delivery = r.deliveries.iter().find(|d| d.route.ends_with("/cancel"));
    ctx.eq(
        "the cancellation notification's ack",
        "0000".to_owned(),
        cancel_delivery
            .and_then(|d| d.ack_res_cd.clone())
            .unwrap_or_default(),
    );
    // KICC sends it again: acked, not counted twice.
    let trade = env.trade(&created.pg_cno).await?;
    let cancel_webhook = trade["webhooks"]
        .as_array()
        .and_then(|w| w.iter().find(|d| d["kind"] == "cancel"))
        .and_then(|d| d["id"].as_u64())
        .ok_or("KICC sent no cancellation notification")?;
    env.resend(cancel_webhook).await?;
    env.until_trade(&created.pg_cno, |t| {
        t["webhooks"].as_array().is_some_and(|w| {
            w.iter().filter(|d| d["kind"] == "cancel").count() >= 2
                && w.iter()
                    .all(|d| d["state"] != "sending" && d["state"] != "pending")
        })
    })
    .await?;
    let r = records(env, &created.no).await?;
    let cancels: Vec<_> = r
        .deliveries
        .iter()
        .filter(|d| d.route.ends_with("/cancel"))
        .collect();
    ctx.check(
        "the repeated notification",
        "stored, acked 0000, not applied",
        cancels
            .iter()
            .map(|d| {
                format!(
                    "{} applied={}",
                    d.ack_res_cd.clone().unwrap_or_default(),
                    d.applied
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        cancels.len() >= 2
            && cancels.iter().filter(|d| d.applied).count() == 1
            && cancels
                .iter()
                .all(|d| d.ack_res_cd.as_deref() == Some("0000")),
    );
    let order = env.order(Instance::Main, &created.no).await?;
    ctx.eq(
        "cancelled amount after the repeat",
        cancelled,
        order["cancelledAmount"].as_i64().unwrap_or(-1),
    );
    check_trade(
        ctx,
        &created.pg_cno,
        if partial { "TS06" } else { "TS02" },
        Some(left),
    )
    .await?;
    Ok(())
}

/// Pays a quiet-instance order whose paid write the database refuses, with the cancel scenario
/// set: the compensation starts on the returnUrl path.
async fn must_cancel_with(ctx: &mut Ctx<'_>, scenario: &str, count: u64) -> Step<Created> {
    let env = ctx.env;
    let created = env.create(Instance::Quiet, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Quiet, &created.no);
    env.scenario(&created.no, scenario, Some(count)).await?;
    env.inject(DbFault::PaidWrite).await?;
    let returned = pay_and_return(ctx, &created).await;
    env.heal(DbFault::PaidWrite).await?;
    returned?;
    Ok(created)
}

/// Reconciler passes on the quiet instance until the order leaves `compensating`.
async fn reconcile_until_settled(ctx: &mut Ctx<'_>, no: &str) -> Step<Value> {
    let env = ctx.env;
    let app = env.app(Instance::Quiet);
    let mut passes = 0;
    loop {
        let order = env.order(Instance::Quiet, no).await?;
        if status(&order) != "compensating" || passes >= 60 {
            ctx.note(format!("{passes} reconciler pass(es)"));
            return Ok(order);
        }
        app.reconcile().await?;
        passes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cancel_retry_original_date(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = must_cancel_with(ctx, "cancel_fails", 2).await?;
    let order = reconcile_until_settled(ctx, &created.no).await?;
    ctx.eq("order status", "cancelled".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    let revises: Vec<_> = r
        .calls
        .iter()
        .filter(|c| c.api == "wechat_revise")
        .collect();
    ctx.check(
        "revise calls",
        "3 or more",
        revises.len(),
        revises.len() >= 3,
    );
    let keys: HashSet<&str> = revises
        .iter()
        .map(|c| c.shop_transaction_id.as_str())
        .collect();
    ctx.eq("different shopTransactionIds", revises.len(), keys.len());
    let dates: Vec<String> = r
        .requests("wechat_revise")
        .iter()
        .map(|b| text(&b["cancelReqDate"]))
        .collect();
    let one_date = dates.windows(2).all(|w| w[0] == w[1]) && !dates.is_empty();
    ctx.check(
        "cancelReqDate on every attempt",
        "the first attempt's",
        dates.join(", "),
        one_date,
    );
    let trade = check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    ctx.eq(
        "cancels made at KICC",
        1,
        trade["cancels"].as_array().map_or(0, Vec::len),
    );
    Ok(())
}

async fn cancel_reply_lost_status_first(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = must_cancel_with(ctx, "cancel_reply_lost", 1).await?;
    let order = reconcile_until_settled(ctx, &created.no).await?;
    ctx.eq("order status", "cancelled".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    let apis = r.apis();
    let first_revise = apis.iter().position(|a| *a == "wechat_revise");
    ctx.eq(
        "the first cancel's outcome",
        "transport_error".to_owned(),
        r.calls
            .iter()
            .find(|c| c.api == "wechat_revise")
            .and_then(|c| c.outcome.clone())
            .unwrap_or_default(),
    );
    let after = first_revise
        .map(|i| apis[i + 1..].join(", "))
        .unwrap_or_default();
    ctx.check(
        "calls after the lost reply",
        "a status check (wechat_find), no second revise",
        &after,
        after.starts_with("wechat_find") && !after.contains("wechat_revise"),
    );
    let trade = check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    ctx.eq(
        "cancels made at KICC",
        1,
        trade["cancels"].as_array().map_or(0, Vec::len),
    );
    Ok(())
}

// ---- spec 06: the returnUrl -------------------------------------------------------------

async fn shopper_cancelled(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    let form = env
        .wechat_press(&created.pg_cno, "cancel")
        .await?
        .ok_or("the payment page did not send the shopper back")?;
    ctx.check(
        "resCd brought back",
        "not 0000",
        form.field("resCd").unwrap_or("(none)"),
        form.field("resCd").is_some_and(|c| c != "0000"),
    );
    env.submit(&env.http, &form).await?;
    // The browser's word is not KICC's: the order waits (the shopper may still pay) until
    // KICC's status check shows a payment or the order expires.
    let r = records(env, &created.no).await?;
    ctx.eq(
        "calls",
        "wechat_create, wechat_find".to_owned(),
        r.apis().join(", "),
    );
    let order = env.order(Instance::Main, &created.no).await?;
    ctx.eq("order status", "pending".to_owned(), status(&order));
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC's trade status",
        "TS00".to_owned(),
        text(&trade["statusCode"]),
    );
    Ok(())
}

async fn forged_return(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    let base = env.app(Instance::Main).base.clone();
    let forged = Form {
        action: format!("{base}/checkout/return"),
        fields: vec![
            ("resCd".into(), "0000".into()),
            ("resMsg".into(), "Success".into()),
            ("shopOrderNo".into(), created.no.clone()),
            (
                "authorizationId".into(),
                format!("forged-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("amount".into(), "1".into()),
        ],
    };
    env.submit(&env.http, &forged).await?;
    let order = env.order(Instance::Main, &created.no).await?;
    ctx.check(
        "order status",
        "not paid",
        status(&order),
        status(&order) != "paid",
    );
    let r = records(env, &created.no).await?;
    let approval = r.calls.iter().find(|c| c.api == "approval_v2");
    ctx.check(
        "KICC's answer to the approval",
        "refused (not 0000)",
        approval
            .map(|c| {
                format!(
                    "{} {}",
                    c.res_cd.clone().unwrap_or_default(),
                    c.res_msg.clone().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "(no approval sent)".into()),
        approval.is_none_or(|c| c.res_cd.as_deref() != Some("0000")),
    );
    ctx.eq("times marked paid", 0, r.entered("paid"));
    let trade = env.trade(&created.pg_cno).await?;
    ctx.eq(
        "KICC's trade status",
        "TS00".to_owned(),
        text(&trade["statusCode"]),
    );
    let unknown = Form {
        action: format!("{base}/checkout/return"),
        fields: vec![
            ("resCd".into(), "0000".into()),
            ("shopOrderNo".into(), "261121-0000-NOSUCHNO".into()),
            ("authorizationId".into(), "X".into()),
        ],
    };
    let (s, _, body) = env.submit(&env.http, &unknown).await?;
    ctx.check(
        "an unknown order's returnUrl",
        "404 HTML page",
        format!("HTTP {s}"),
        s == 404 && body.contains("<html"),
    );
    Ok(())
}

// ---- spec 01/04: source IPs -------------------------------------------------------------

async fn webhook_source_ip(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    // Spec 04's body, right in every field but its origin.
    let body = json!({
        "resCd": "0000", "resMsg": "Success", "mallId": crate::config::SANDBOX_MALL_ID,
        "shopOrderNo": created.no, "pgCno": created.pg_cno,
        "approvalDate": chrono::Utc::now().format("%Y%m%d%H%M%S").to_string(),
        "amountInfo": {"currency": created.currency, "amount": created.amount}
    });
    let (s, ack) = env
        .notify(Instance::Main, "/webhooks/kicc/payment", &body, STRANGER_IP)
        .await?;
    ctx.eq("a stranger's notification answered", 403, s);
    ctx.check(
        "its answer",
        "KICC-shaped, resCd not 0000",
        ack.to_string(),
        ack["resCd"].as_str().is_some_and(|c| c != "0000"),
    );
    let order = env.order(Instance::Main, &created.no).await?;
    ctx.eq(
        "order status after it",
        "pending".to_owned(),
        status(&order),
    );
    // The real payment and KICC's real notification (from the sandbox, an allowed address).
    pay_and_return(ctx, &created).await?;
    env.until(Instance::Main, &created.no, &["paid"]).await?;
    env.until_trade(&created.pg_cno, |t| {
        attempts(t).iter().any(|(_, acked)| *acked)
    })
    .await?;
    let r = records(env, &created.no).await?;
    let stranger: Vec<_> = r
        .deliveries
        .iter()
        .filter(|d| d.source_ip == STRANGER_IP)
        .collect();
    ctx.check(
        "the stranger's delivery",
        "stored as refused, not applied",
        stranger
            .iter()
            .map(|d| {
                format!(
                    "{} applied={}",
                    d.outcome.clone().unwrap_or_default(),
                    d.applied
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        stranger.len() == 1
            && stranger[0].outcome.as_deref() == Some("refused")
            && !stranger[0].applied,
    );
    let kicc: Vec<_> = r
        .deliveries
        .iter()
        .filter(|d| d.source_ip != STRANGER_IP && d.applied)
        .collect();
    ctx.eq("KICC's delivery applied", 1, kicc.len());
    ctx.eq(
        "order status",
        "paid".to_owned(),
        r.order.status.as_str().to_owned(),
    );
    ctx.note(format!(
        "The main instance accepts loopback (the sandbox) and KICC's {}; the quiet ones only {KICC_DEV_IP}.",
        crate::config::KICC_WEBHOOK_IPS
    ));
    Ok(())
}

// ---- run-wide ---------------------------------------------------------------------------

async fn idempotency_keys(ctx: &mut Ctx<'_>) -> Step<()> {
    let since = ctx.run_started.naive_utc();
    let calls = ctx
        .env
        .db
        .run(move |conn| gateway_calls::requested_since(conn, since))
        .await
        .map_err(|e: DbError| e.to_string())?;
    let keys: HashSet<&str> = calls
        .iter()
        .map(|c| c.shop_transaction_id.as_str())
        .collect();
    ctx.check(
        "gateway calls made",
        "more than 50",
        calls.len(),
        calls.len() > 50,
    );
    ctx.eq("different shopTransactionIds", calls.len(), keys.len());
    let longest = calls
        .iter()
        .map(|c| c.shop_transaction_id.len())
        .max()
        .unwrap_or_default();
    ctx.check(
        "longest key",
        "≤ 60 bytes",
        format!("{longest} bytes"),
        longest <= 60,
    );
    let duplicates = calls
        .iter()
        .filter(|c| c.res_cd.as_deref() == Some(DUPLICATE_KEY))
        .count();
    ctx.eq("duplicate-request errors from KICC", 0, duplicates);
    Ok(())
}

async fn webhook_ack_10s(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let trades: Vec<String> = env.trades.lock().expect("trades").clone();
    let (mut slowest, mut measured, mut unanswered) = (0u64, 0usize, Vec::new());
    for id in &trades {
        let Ok(trade) = env.trade(id).await else {
            continue;
        };
        for delivery in trade["webhooks"].as_array().into_iter().flatten() {
            for attempt in delivery["attempts"].as_array().into_iter().flatten() {
                if let Some(ms) = attempt["elapsedMs"].as_u64()
                    && attempt["status"].is_u64()
                {
                    slowest = slowest.max(ms);
                    measured += 1;
                } else if attempt["error"].is_string() {
                    unanswered.push(format!("{id}: {}", text(&attempt["error"])));
                }
            }
        }
    }
    ctx.check("attempts measured", "at least 30", measured, measured >= 30);
    ctx.check(
        "slowest answer (KICC's clock)",
        "< 10000 ms",
        format!("{slowest} ms"),
        measured > 0 && slowest < 10_000,
    );
    ctx.check(
        "attempts left unanswered",
        "none",
        if unanswered.is_empty() {
            "none".to_owned()
        } else {
            unanswered.join("; ")
        },
        unanswered.is_empty(),
    );
    ctx.acks_measured(slowest, measured);
    // The app's own clock, from receipt to ack.
    let since = ctx.run_started.naive_utc();
    let deliveries = env
        .db
        .run(move |conn| webhook_deliveries::received_since(conn, since))
        .await
        .map_err(|e: DbError| e.to_string())?;
    let app_slowest = deliveries
        .iter()
        .filter_map(|d| d.acked_at.map(|a| (a - d.received_at).num_milliseconds()))
        .max()
        .unwrap_or_default();
    ctx.check(
        "slowest ack (the app's clock)",
        "< 10000 ms",
        format!("{app_slowest} ms over {} deliveries", deliveries.len()),
        app_slowest < 10_000,
    );
    Ok(())
}
