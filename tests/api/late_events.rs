//! Money and order always agree (README, "How a payment is kept safe"), on both databases,
//! over real HTTP with the mounted sandbox deciding whether money was taken: payments that
//! arrive after the order
//! expired or failed, failures and cancellations a browser or a notification claims but KICC
//! does not confirm, and status checks an outsider tries to multiply.

use std::time::Duration;

use diesel::RunQueryDsl;

use kicc_checkout::db::{gateway_calls, orders};
use kicc_checkout::domain::{Order, OrderEvent, OrderStatus, ShopOrderNo};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, approval_notification, cancel_notification};

/// The app in sandbox mode: the sandbox approves a paid trade by itself at once and notifies
/// (WeChat's asynchronous model: the shopper pays and never comes back), orders live `expiry`
/// seconds, and the reconciler runs only when the test says.
async fn app(test_db: TestDb, expiry: &str, extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = vec![
        ("SANDBOX_AUTO_APPROVE_MS", "1"),
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
        ("ORDER_EXPIRY_SECS", expiry),
        ("RECONCILE_INTERVAL_SECS", "3600"),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(test_db, &vars).await
}

fn stored(app: &TestApp, no: &str) -> Order {
    orders::find_by_shop_order_no(&mut app.db.get().unwrap(), &ShopOrderNo::parse(no).unwrap())
        .unwrap()
        .unwrap()
}

fn events(app: &TestApp, no: &str) -> Vec<String> {
    let order = stored(app, no);
    orders::timeline(&mut app.db.get().unwrap(), order.id)
        .unwrap()
        .into_iter()
        .map(|t| format!("{}: {}", t.event, t.cause))
        .collect()
}

fn has_event(app: &TestApp, no: &str, event: &str) -> bool {
    events(app, no)
        .iter()
        .any(|e| e.starts_with(&format!("{event}:")))
}

/// Status checks of this order's payment recorded in `gateway_calls`.
fn status_checks(app: &TestApp, no: &str) -> usize {
    let order = stored(app, no);
    gateway_calls::for_order(&mut app.db.get().unwrap(), order.id)
        .unwrap()
        .iter()
        .filter(|c| c.api == "wechat_find")
        .count()
}

/// Waits (up to ~10 s) until the order is `status`; panics with its timeline otherwise.
async fn until(app: &TestApp, no: &str, status: OrderStatus) -> Order {
    for _ in 0..200 {
        let order = stored(app, no);
        if order.status == status {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "order {no} never became {status}: it is {}\n{}",
        stored(app, no).status,
        events(app, no).join("\n")
    );
}

/// The sandbox's view of the trade: its status code and what it holds.
async fn kicc(app: &TestApp, pg_cno: &str) -> (String, i64) {
    let trade: Value = app
        .get(&format!("/sandbox/control/trades/{pg_cno}"))
        .await
        .json()
        .await
        .unwrap();
    (
        trade["statusCode"].as_str().unwrap().to_owned(),
        trade["remainingAmount"].as_i64().unwrap_or_default(),
    )
}

/// Money taken at KICC ⇔ the order is paid or partially cancelled.
async fn assert_money_and_order_agree(app: &TestApp, no: &str, pg_cno: &str) {
    let (code, held) = kicc(app, pg_cno).await;
    let order = stored(app, no);
    let holds = matches!(
        order.status,
        OrderStatus::Paid | OrderStatus::PartiallyCancelled
    );
    assert_eq!(
        held > 0,
        holds,
        "KICC says {code} holding {held}, the order is {}:\n{}",
        order.status,
        events(app, no).join("\n")
    );
}

/// The order left to expire: past its life, the reconciler asks KICC (nothing paid) and closes it.
async fn expire(app: &TestApp, no: &str) {
    tokio::time::sleep(Duration::from_millis(1300)).await;
    app.reconcile().await;
    until(app, no, OrderStatus::Expired).await;
}

/// Posts a notification from loopback (allowed in sandbox mode); returns the ack's resCd.
async fn notify(app: &TestApp, route: &str, body: &Value) -> String {
    let ack: Value = app
        .client
        .post(format!("{}{route}", app.address))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ack["resCd"].as_str().unwrap().to_owned()
}

both_backends! {
    async fn a_payment_after_the_order_expired_makes_it_paid_by_default(test_db) {
        let app = app(test_db, "1", &[]).await;
        let (no, pg_cno) = app.tote_order().await;
        expire(&app, &no).await;
        // Its late checks have run out (a payment a day later, say).
        let id = stored(&app, &no).id;
        diesel::sql_query(format!("UPDATE orders SET late_check_at = NULL WHERE id = {id}"))
            .execute(&mut *app.db.get().unwrap()).unwrap();
        // The shopper scans the still-valid QR and pays; KICC approves and notifies.
        app.press_pay(&pg_cno).await;
        let order = until(&app, &no, OrderStatus::Paid).await;
        // The accepted notification also scheduled a late check, in case its follow-up had
        // been lost.
        let late_check: Option<chrono::NaiveDateTime> = {
            use kicc_checkout::db::schema::orders::dsl;
            diesel::QueryDsl::select(diesel::QueryDsl::find(dsl::orders, id), dsl::late_check_at)
                .get_result(&mut *app.db.get().unwrap())
                .unwrap()
        };
        assert!(late_check.is_some());
        assert!(order.paid_at.is_some());
        assert!(has_event(&app, &no, "late_payment_accepted"), "{:#?}", events(&app, &no));
        assert_eq!(kicc(&app, &pg_cno).await.0, "TS01");
        assert_money_and_order_agree(&app, &no, &pg_cno).await;
    }

    async fn a_payment_after_the_order_expired_is_refunded_under_late_payments_refund(test_db) {
        let app = app(test_db, "1", &[("LATE_PAYMENTS", "refund")]).await;
        let (no, pg_cno) = app.tote_order().await;
        expire(&app, &no).await;
        app.press_pay(&pg_cno).await;
        let order = until(&app, &no, OrderStatus::Cancelled).await;
        assert_eq!(order.cancelled, order.amount);
        assert!(has_event(&app, &no, "late_refund_started"), "{:#?}", events(&app, &no));
        assert_eq!(kicc(&app, &pg_cno).await, ("TS02".to_owned(), 0));
        assert_money_and_order_agree(&app, &no, &pg_cno).await;
        // The shopper's page says the payment was refunded, and why.
        let page = app.get(&format!("/orders/{no}")).await.text().await.unwrap();
        assert!(page.contains("arrived after this order had expired"), "{page}");
    }

    async fn a_late_payment_whose_notification_never_arrives_is_found_by_the_reconciler(test_db) {
        // KICC's notifications are refused here (only another address is allowed).
        let app = app(test_db, "1", &[("WEBHOOK_ALLOWED_IPS", "203.233.72.66"), ("LATE_PAYMENTS", "refund")]).await;
        let (no, pg_cno) = app.tote_order().await;
        expire(&app, &no).await;
        app.press_pay(&pg_cno).await;
        for _ in 0..100 {
            if kicc(&app, &pg_cno).await.0 == "TS01" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(kicc(&app, &pg_cno).await.0, "TS01", "the sandbox approved by itself");
        assert_eq!(stored(&app, &no).status, OrderStatus::Expired);
        // The order's late check comes due (minutes later, here brought forward).
        diesel::sql_query(format!("UPDATE orders SET late_check_at = created_at WHERE id = {}", stored(&app, &no).id))
            .execute(&mut *app.db.get().unwrap()).unwrap();
        app.reconcile().await;
        until(&app, &no, OrderStatus::Cancelled).await;
        assert!(has_event(&app, &no, "late_refund_started"), "{:#?}", events(&app, &no));
        assert_money_and_order_agree(&app, &no, &pg_cno).await;
    }

    async fn a_payment_for_a_failed_order_is_kept_or_refunded_never_only_noted(test_db) {
        let accepting = app(test_db, "600", &[]).await;
        let refunding = TestApp::spawn_beside(&accepting, &[
            ("SANDBOX_AUTO_APPROVE_MS", "1"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
            ("RECONCILE_INTERVAL_SECS", "3600"),
            ("LATE_PAYMENTS", "refund"),
        ]).await;
        for (app, want) in [(&accepting, OrderStatus::Paid), (&refunding, OrderStatus::Cancelled)] {
            let (no, pg_cno) = app.tote_order().await;
            // The order was closed as failed (by whatever path); the shopper pays anyway.
            let order = stored(app, &no);
            let t = orders::Transition::new(order.id, OrderStatus::Pending, OrderEvent::PaymentFailed, "test: failed");
            orders::transition(&mut app.db.get().unwrap(), &t).unwrap();
            app.press_pay(&pg_cno).await;
            until(app, &no, want).await;
            assert_money_and_order_agree(app, &no, &pg_cno).await;
        }
    }

    async fn a_forged_failure_return_does_not_fail_the_order(test_db) {
        let app = app(test_db, "600", &[]).await;
        let (no, pg_cno) = app.tote_order().await;
        // A stranger, with no cookie, who knows the order number.
        let stranger = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = stranger
            .post(format!("{}/checkout/return", app.address))
            .form(&[("resCd", "W002"), ("resMsg", "cancelled"), ("shopOrderNo", no.as_str())])
            .send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(stored(&app, &no).status, OrderStatus::Pending);
        // The shopper then pays: the order is paid, not an order marked failed holding money.
        app.press_pay(&pg_cno).await;
        until(&app, &no, OrderStatus::Paid).await;
        assert_money_and_order_agree(&app, &no, &pg_cno).await;
    }

    async fn a_failure_notification_kicc_does_not_confirm_leaves_the_order_waiting(test_db) {
        let app = app(test_db, "600", &[]).await;
        let (no, pg_cno) = app.tote_order().await;
        let mut body = approval_notification(&no, &pg_cno, 24000, "KRW");
        body["resCd"] = json!("W002");
        assert_eq!(notify(&app, "/webhooks/kicc/payment", &body).await, "0000");
        // The status check after the ack says TS00: nothing is failed on the notification's word.
        for _ in 0..200 {
            if has_event(&app, &no, "failure_unconfirmed") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(has_event(&app, &no, "failure_unconfirmed"), "{:#?}", events(&app, &no));
        assert_eq!(stored(&app, &no).status, OrderStatus::Pending);
    }

    async fn cancellation_notifications_kicc_does_not_confirm_change_nothing(test_db) {
        let app = app(test_db, "600", &[]).await;
        let (no, pg_cno) = app.tote_order().await;
        app.press_pay(&pg_cno).await;
        until(&app, &no, OrderStatus::Paid).await;
        let (_, other_pg_cno) = app.tote_order().await;
        let forged = [
            ("a billion on a ₩25,000 order", cancel_notification(&no, &pg_cno, "C-BIG", 1_000_000_000, "KRW")),
            ("a negative amount", cancel_notification(&no, &pg_cno, "C-NEG", -5000, "KRW")),
            ("USD on a KRW order", cancel_notification(&no, &pg_cno, "C-USD", 5000, "USD")),
            ("an unknown pgCno with the right shopOrderNo", cancel_notification(&no, &other_pg_cno, "C-PGCNO", 5000, "KRW")),
            ("a plausible cancel KICC never made", cancel_notification(&no, &pg_cno, "C-FAKE", 5000, "KRW")),
        ];
        for (what, body) in &forged {
            assert_eq!(notify(&app, "/webhooks/kicc/cancel", body).await, "0000", "{what}");
        }
        // The last is checked with KICC after its ack: wait for its verdict.
        for _ in 0..200 {
            if has_event(&app, &no, "cancel_unconfirmed") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(has_event(&app, &no, "cancel_unconfirmed"), "{:#?}", events(&app, &no));
        let order = stored(&app, &no);
        assert_eq!((order.status, order.cancelled.minor()), (OrderStatus::Paid, 0), "{:#?}", events(&app, &no));
        assert_eq!(kicc(&app, &pg_cno).await, ("TS01".to_owned(), order.amount.minor()));
        // Every one is kept, as unmatched, for the dashboard.
        let unmatched = kicc_checkout::db::webhook_deliveries::unmatched(&mut app.db.get().unwrap(), 100).unwrap();
        assert_eq!(unmatched.iter().filter(|d| d.kind == "cancel").count(), forged.len());
    }

    async fn forty_bare_returns_ask_kicc_once(test_db) {
        let app = app(test_db, "600", &[]).await;
        let (no, _) = app.tote_order().await;
        let stranger = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let url = format!("{}/checkout/return?resCd=0000&shopOrderNo={no}", app.address);
        let answers = futures_util::future::join_all((0..40).map(|_| stranger.get(&url).send())).await;
        assert!(answers.iter().all(|r| r.as_ref().unwrap().status() == 303));
        assert_eq!(status_checks(&app, &no), 1);
        assert_eq!(stored(&app, &no).status, OrderStatus::Pending);
    }

    async fn the_status_check_cooldown_holds_across_instances(test_db) {
        let first = app(test_db, "600", &[]).await;
        let second = TestApp::spawn_beside(&first, &[("SANDBOX_AUTO_APPROVE_MS", "1"), ("RECONCILE_INTERVAL_SECS", "3600")]).await;
        let (no, _) = first.tote_order().await;
        let stranger = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let returns = (0..40).map(|i| {
            let base = if i % 2 == 0 { &first.address } else { &second.address };
            stranger.get(format!("{base}/checkout/return?resCd=0000&shopOrderNo={no}")).send()
        });
        let answers = futures_util::future::join_all(returns).await;
        assert!(answers.iter().all(|r| r.as_ref().unwrap().status() == 303));
        // The database decides, not either process's memory: one check in all.
        assert_eq!(status_checks(&first, &no), 1);
    }
}
