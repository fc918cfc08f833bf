//! The review's scenarios for late, repeated and forged events (money and order always agree):
//! a payment made after its order expired (kept on the main instance, refunded on the fallback
//! one, found there by the reconciler with its notification refused), a forged failure return, a
//! cancellation notification KICC never sent, and a forged `X-Forwarded-For` line.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Ctx;
use super::env::{Created, Instance, KICC_DEV_IP, SETTLE_LIMIT, STRANGER_IP, Step};
use super::evidence::records;
use super::scenarios::{check_trade, ends_cancelled, pay_and_return, status, text};
use crate::db::orders::{self, Due};

/// Makes the order's `due` clock come due now (its expiry, or its next late check), standing in
/// for the minutes a real order waits.
async fn bring_forward(ctx: &Ctx<'_>, instance: Instance, no: &str, due: Due) -> Step<()> {
    let id = records(ctx.env, no).await?.order.id;
    ctx.env
        .app(instance)
        .state
        .db
        .run(move |conn| orders::bring_forward(conn, id, due))
        .await
        .map_err(|e| format!("moving the order's clock: {e}"))
}

/// The order's life ends: a reconciler pass asks KICC (nothing paid) and closes it.
async fn expire(ctx: &mut Ctx<'_>, instance: Instance, no: &str) -> Step<()> {
    bring_forward(ctx, instance, no, Due::Expiry).await?;
    ctx.env.app(instance).reconcile().await?;
    let order = ctx.env.until(instance, no, &["expired"]).await?;
    ctx.eq(
        "order status before the payment",
        "expired".to_owned(),
        status(&order),
    );
    Ok(())
}

/// The shopper scans the code after the order expired and pays; KICC approves at once and
/// notifies (WeChat's asynchronous approval: the browser never comes back).
async fn pay_late(ctx: &mut Ctx<'_>, created: &Created) -> Step<()> {
    let env = ctx.env;
    env.scenario(&created.no, "return_lost", None).await?;
    env.wechat_press(&created.pg_cno, "pay").await?;
    env.until_trade(&created.pg_cno, |t| t["statusCode"] == "TS01")
        .await?;
    Ok(())
}

pub async fn late_payment_accepted(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    expire(ctx, Instance::Main, &created.no).await?;
    pay_late(ctx, &created).await?;
    let order = env
        .until(Instance::Main, &created.no, &["paid", "cancelled"])
        .await?;
    ctx.eq("order status", "paid".to_owned(), status(&order));
    let r = records(env, &created.no).await?;
    ctx.check(
        "timeline",
        "late_payment_accepted",
        r.events().join(", "),
        r.events().contains(&"late_payment_accepted"),
    );
    check_trade(ctx, &created.pg_cno, "TS01", Some(created.amount)).await?;
    Ok(())
}

pub async fn late_payment_refunded(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env
        .create(Instance::Fallback, "wechat", "pc", "KRW")
        .await?;
    ctx.track(Instance::Fallback, &created.no);
    expire(ctx, Instance::Fallback, &created.no).await?;
    pay_late(ctx, &created).await?;
    // This instance refuses KICC's notifications: only the reconciler's late check can find
    // the payment. Its first check is minutes after the expiry; here it is brought forward.
    let order = env.order(Instance::Fallback, &created.no).await?;
    ctx.eq(
        "order status with the notification refused",
        "expired".to_owned(),
        status(&order),
    );
    bring_forward(ctx, Instance::Fallback, &created.no, Due::LateCheck).await?;
    env.app(Instance::Fallback).reconcile().await?;
    ends_cancelled(ctx, Instance::Fallback, &created.no).await?;
    let r = records(env, &created.no).await?;
    let events = r.events();
    ctx.check(
        "timeline",
        "late_refund_started, then compensation_confirmed",
        events.join(", "),
        events.contains(&"late_refund_started") && events.contains(&"compensation_confirmed"),
    );
    check_trade(ctx, &created.pg_cno, "TS02", Some(0)).await?;
    let base = &env.app(Instance::Fallback).base;
    let page = super::env::text_of(
        env.http.get(format!("{base}/orders/{}", created.no)),
        "the order page",
    )
    .await?;
    ctx.check(
        "the shopper's page",
        "says the late payment was refunded, and why",
        if page.contains("arrived after this order had expired") {
            "it does"
        } else {
            "it does not"
        },
        page.contains("arrived after this order had expired"),
    );
    Ok(())
}

pub async fn forged_failure_return(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    // A stranger with no cookie, who knows the order number.
    let stranger = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let base = &env.app(Instance::Main).base;
    let r = stranger
        .post(format!("{base}/checkout/return"))
        .form(&[
            ("resCd", "W002"),
            ("resMsg", "Cancelled by the shopper"),
            ("shopOrderNo", created.no.as_str()),
        ])
        .send()
        .await
        .map_err(|e| format!("posting the forged return: {e}"))?;
    ctx.eq("the forged return answered", 303, r.status().as_u16());
    let order = env.order(Instance::Main, &created.no).await?;
    ctx.eq(
        "order status after it",
        "pending".to_owned(),
        status(&order),
    );
    let r = records(env, &created.no).await?;
    ctx.eq(
        "calls",
        "wechat_create, wechat_find".to_owned(),
        r.apis().join(", "),
    );
    // The shopper then pays: paid, not a failed order holding money.
    pay_and_return(ctx, &created).await?;
    let order = env
        .until(Instance::Main, &created.no, &["paid", "failed"])
        .await?;
    ctx.eq(
        "order status after paying",
        "paid".to_owned(),
        status(&order),
    );
    check_trade(ctx, &created.pg_cno, "TS01", Some(created.amount)).await?;
    Ok(())
}

pub async fn unconfirmed_cancel_notification(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let paid = env.paid_wechat(Instance::Main).await?;
    ctx.track(Instance::Main, &paid.no);
    let cancel = |cancel_pg_cno: &str, amount: i64| {
        json!({
            "resCd": "0000", "resMsg": "Success", "mallId": crate::config::SANDBOX_MALL_ID,
            "shopOrderNo": paid.no, "pgCno": paid.pg_cno, "cancelPgCno": cancel_pg_cno,
            "cancelDate": chrono::Utc::now().format("%Y%m%d%H%M%S").to_string(),
            "amountInfo": {"currency": paid.currency, "amount": amount}
        })
    };
    let plausible = format!("RV{}", &uuid::Uuid::new_v4().simple().to_string()[..18]);
    let huge = format!("RV{}", &uuid::Uuid::new_v4().simple().to_string()[..18]);
    for (key, amount) in [(&plausible, paid.amount / 2), (&huge, 1_000_000_000)] {
        let (s, ack) = env
            .notify(
                Instance::Main,
                "/webhooks/kicc/cancel",
                &cancel(key, amount),
                KICC_DEV_IP,
            )
            .await?;
        ctx.eq(
            format!("cancel of {amount} acked"),
            "200 0000".to_owned(),
            format!("{s} {}", text(&ack["resCd"])),
        );
    }
    // The plausible one is checked with KICC after its ack: wait for its verdict.
    let start = Instant::now();
    let unmatched = loop {
        let r = records(env, &paid.no).await?;
        let outcomes: Vec<String> = r
            .deliveries
            .iter()
            .filter(|d| d.kind == "cancel")
            .map(|d| d.outcome.clone().unwrap_or_default())
            .collect();
        if outcomes.iter().filter(|o| *o == "unmatched").count() == 2
            || start.elapsed() > SETTLE_LIMIT
        {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ctx.eq(
        "both cancellation deliveries",
        "unmatched, unmatched".to_owned(),
        unmatched.join(", "),
    );
    let order = env.order(Instance::Main, &paid.no).await?;
    ctx.eq(
        "order status and cancelled amount",
        "paid 0".to_owned(),
        format!("{} {}", status(&order), text(&order["cancelledAmount"])),
    );
    check_trade(ctx, &paid.pg_cno, "TS01", Some(paid.amount)).await?;
    Ok(())
}

pub async fn forwarded_for_two_lines(ctx: &mut Ctx<'_>) -> Step<()> {
    let env = ctx.env;
    let created = env.create(Instance::Main, "wechat", "pc", "KRW").await?;
    ctx.track(Instance::Main, &created.no);
    let body: Value = json!({
        "resCd": "0000", "resMsg": "Success", "mallId": crate::config::SANDBOX_MALL_ID,
        "shopOrderNo": created.no, "pgCno": created.pg_cno,
        "approvalDate": chrono::Utc::now().format("%Y%m%d%H%M%S").to_string(),
        "amountInfo": {"currency": created.currency, "amount": created.amount}
    });
    // The stranger writes KICC's address in its own header line; the trusted proxy (loopback,
    // this runner) appends the address it really saw in a second line, as HAProxy does.
    let r = env
        .http
        .post(format!(
            "{}/webhooks/kicc/payment",
            env.app(Instance::Main).base
        ))
        .header("X-Forwarded-For", KICC_DEV_IP)
        .header("X-Forwarded-For", STRANGER_IP)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("posting the notification: {e}"))?;
    let code = r.status().as_u16();
    let ack: Value = r.json().await.unwrap_or(Value::Null);
    ctx.eq(
        "answered",
        "403 9403".to_owned(),
        format!("{code} {}", text(&ack["resCd"])),
    );
    let order = env.order(Instance::Main, &created.no).await?;
    ctx.eq(
        "order status after it",
        "pending".to_owned(),
        status(&order),
    );
    let r = records(env, &created.no).await?;
    let sources: Vec<String> = r
        .deliveries
        .iter()
        .map(|d| format!("{} {}", d.source_ip, d.outcome.clone().unwrap_or_default()))
        .collect();
    ctx.eq(
        "stored as",
        format!("{STRANGER_IP} refused"),
        sources.join("; "),
    );
    Ok(())
}
