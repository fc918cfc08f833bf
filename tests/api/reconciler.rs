//! The reconciler, over real HTTP and real databases: cancels retried to success or left for a
//! person, orders nobody settled, two instances sharing the work, and a crash mid-approval.

use std::time::Duration;

use diesel::RunQueryDsl;
use kicc_checkout::db::{compensations, orders};
use kicc_checkout::domain::ShopOrderNo;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb};

const KICC_IP: &str = "61.33.205.151";

/// The app with notifications refused (only the reconciler and the returnUrl settle orders) and
/// the background worker effectively idle (passes are run by the test).
async fn app(test_db: TestDb, extra: &[(&'static str, &str)]) -> TestApp {
    // The first setting of a variable wins: the test's own come first.
    let mut vars = extra.to_vec();
    vars.extend_from_slice(&[
        ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
        ("WEBHOOK_ALLOWED_IPS", KICC_IP),
        ("RECONCILE_INTERVAL_SECS", "86400"),
    ]);
    TestApp::spawn_with(test_db, &vars).await
}

impl TestApp {
    async fn new_order(&self) -> (String, String) {
        let created: Value = self
            .client
            .post(format!("{}/api/orders", self.address))
            .json(&json!({"items": [{"sku": "STICKER-PACK", "quantity": 3}], "currency": "KRW", "payMethod": "wechat",
                          "customer": {"name": "Bo", "email": "bo@example.com", "phone": "01012345678", "address": "Seoul"}}))
            .send().await.unwrap().json().await.unwrap();
        (
            created["shopOrderNo"].as_str().unwrap().to_owned(),
            created["pgCno"].as_str().unwrap().to_owned(),
        )
    }

    async fn set_scenario(&self, no: &str, name: &str, count: u64) {
        self.client
            .post(format!("{}/sandbox/control/scenario", self.address))
            .json(&json!({"shopOrderNo": no, "scenario": name, "count": count}))
            .send()
            .await
            .unwrap();
    }

    async fn pay_page(&self, pg_cno: &str) -> String {
        let html = self.press_pay(pg_cno).await;
        crate::helpers::hidden_field(&html, "authorizationId").unwrap_or_default()
    }

    async fn status(&self, no: &str) -> String {
        let order: Value = self
            .get(&format!("/api/orders/{no}"))
            .await
            .json()
            .await
            .unwrap();
        order["status"].as_str().unwrap().to_owned()
    }

    fn order_notes(&self, no: &str) -> Vec<(String, String)> {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        orders::timeline(&mut conn, order.id)
            .unwrap()
            .into_iter()
            .map(|t| (t.event, t.cause))
            .collect()
    }

    fn jobs(&self, no: &str) -> Vec<compensations::Compensation> {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        compensations::for_order(&mut conn, order.id).unwrap()
    }

    /// Makes the database refuse to mark orders paid (a real failed write): every approval then
    /// needs a compensating cancel.
    fn refuse_paid_writes(&self, postgres: bool) {
        let mut conn = self.db.get().unwrap();
        let sql: &[&str] = if postgres {
            &[
                "CREATE FUNCTION fail_paid() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected: disk full'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER fail_paid BEFORE UPDATE OF status ON orders FOR EACH ROW WHEN (NEW.status = 'paid') EXECUTE FUNCTION fail_paid()",
            ]
        } else {
            &[
                "CREATE TRIGGER fail_paid BEFORE UPDATE OF status ON orders WHEN NEW.status = 'paid' BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END",
            ]
        };
        for statement in sql {
            diesel::sql_query(*statement).execute(&mut *conn).unwrap();
        }
    }
}

both_backends! {
    async fn a_cancel_failing_three_times_is_retried_to_success(test_db) {
        let postgres = test_db.is_postgres();
        let app = app(test_db, &[("COMPENSATION_BACKOFF_MS", "1"), ("COMPENSATION_MAX_ATTEMPTS", "8")]).await;
        app.refuse_paid_writes(postgres);
        let (no, pg_cno) = app.new_order().await;
        app.set_scenario(&no, "cancel_fails", 3).await;
        let auth = app.pay_page(&pg_cno).await;
        app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", &no), ("authorizationId", &auth)]).await;
        // The inline attempt failed (1 of 3); the reconciler retries until KICC confirms.
        assert_eq!(app.status(&no).await, "compensating");
        for _ in 0..20 {
            if app.status(&no).await == "cancelled" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            app.reconcile().await;
        }
        assert_eq!(app.status(&no).await, "cancelled");
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS02");
        let attempts: Vec<String> = app.order_notes(&no).into_iter().filter(|(e, _)| e == "compensation_attempt").map(|(_, c)| c).collect();
        assert_eq!(attempts.len(), 4, "{attempts:#?}");
        for (i, note) in attempts[..3].iter().enumerate() {
            assert!(note.starts_with(&format!("compensation attempt {} of 8 failed (declined (5102", i + 1)), "{note}");
        }
        assert!(attempts[3].starts_with("compensation attempt 4: KICC accepted the cancel"), "{}", attempts[3]);
        let jobs = app.jobs(&no);
        assert_eq!((jobs.len(), jobs[0].status.as_str(), jobs[0].attempts), (1, "confirmed", 4));
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("compensations{status=\"confirmed\"} 1"), "{metrics}");
        assert!(metrics.contains("compensations{status=\"pending\"} 0"));
        let passes: u64 = metrics.lines().find(|l| l.starts_with("reconciler_passes_total ")).unwrap()
            .rsplit(' ').next().unwrap().parse().unwrap();
        assert!(passes >= 3, "{passes}");
        assert!(metrics.contains("reconciler_items_claimed_total 3"), "{metrics}");
    }

    async fn a_cancel_that_always_fails_ends_needing_attention(test_db) {
        let postgres = test_db.is_postgres();
        let app = app(test_db, &[("COMPENSATION_BACKOFF_MS", "1"), ("COMPENSATION_MAX_ATTEMPTS", "3")]).await;
        app.refuse_paid_writes(postgres);
        let (no, pg_cno) = app.new_order().await;
        app.set_scenario(&no, "cancel_fails", 1000).await;
        let auth = app.pay_page(&pg_cno).await;
        app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", &no), ("authorizationId", &auth)]).await;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            app.reconcile().await;
        }
        assert_eq!(app.status(&no).await, "needs_attention");
        let notes = app.order_notes(&no);
        let attempts = notes.iter().filter(|(e, _)| e == "compensation_attempt").count();
        let stuck: Vec<_> = notes.iter().filter(|(e, _)| e == "compensation_stuck").collect();
        assert_eq!(attempts, 2, "attempts 1 and 2 noted, the 3rd ends it: {notes:#?}");
        assert_eq!(stuck.len(), 1);
        assert!(stuck[0].1.starts_with("compensation attempt 3 of 3 failed"), "{}", stuck[0].1);
        let jobs = app.jobs(&no);
        assert_eq!((jobs[0].status.as_str(), jobs[0].attempts), ("failed", 3));
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS01", "the money is still held: a person must act");
    }

    async fn a_notified_approval_whose_follow_up_was_lost_is_confirmed_after_its_grace(test_db) {
        let app = app(test_db, &[]).await;
        // Paid at KICC; the return is lost and the notification was acked as `accepted`, but the
        // instance stopped before its follow-up (the status check) ran: the state a crash leaves.
        let (no, pg_cno) = app.new_order().await;
        app.set_scenario(&no, "return_lost", 1).await;
        app.pay_page(&pg_cno).await;
        let order_id = {
            let mut conn = app.db.get().unwrap();
            orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(&no).unwrap()).unwrap().unwrap().id
        };
        let received = |seconds_ago: i64| {
            let at = chrono::Utc::now().naive_utc() - chrono::TimeDelta::seconds(seconds_ago);
            at.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
        };
        let mut conn = app.db.get().unwrap();
        diesel::sql_query(format!(
            "INSERT INTO webhook_deliveries (kind, route, source_ip, headers, body, received_at, \
             dedupe_key, pg_cno, shop_order_no, order_id, applied, outcome, ack_res_cd, ack_body, acked_at) \
             VALUES ('payment', '/webhooks/kicc/payment', '{KICC_IP}', '{{}}', '{{}}', '{at}', '{pg_cno}', \
             '{pg_cno}', '{no}', {order_id}, TRUE, 'accepted', '0000', '{{}}', '{at}')",
            at = received(5)))
        .execute(&mut *conn)
        .unwrap();
        // Received 5 s ago: its follow-up may still be queued or waiting for KICC (the client's
        // timeout and a margin), so a pass leaves it alone.
        let report = app.reconcile().await;
        assert_eq!((report.claimed, app.status(&no).await.as_str()), (0, "pending"));
        // Past that, the pass confirms it with the status check.
        diesel::sql_query(format!(
            "UPDATE webhook_deliveries SET received_at = '{}' WHERE order_id = {order_id}", received(40)))
        .execute(&mut *conn)
        .unwrap();
        let report = app.reconcile().await;
        assert_eq!((report.claimed, report.orders_settled), (1, 1), "{report:?}");
        assert_eq!(app.status(&no).await, "paid");
        // Once paid, it is no longer claimed.
        assert_eq!(app.reconcile().await.claimed, 0);
    }

    async fn orders_nobody_settles_are_settled_after_expiry(test_db) {
        let app = app(test_db, &[("ORDER_EXPIRY_SECS", "1"), ("RECONCILE_INTERVAL_SECS", "1")]).await;
        // Paid, but the shopper never comes back and the notification never arrives.
        let (paid, paid_pg) = app.new_order().await;
        app.set_scenario(&paid, "return_lost", 1).await;
        app.pay_page(&paid_pg).await;
        // Never paid at all.
        let (idle, _) = app.new_order().await;
        // Expiry (1 s) plus one interval (1 s), with room for a loaded machine.
        for _ in 0..60 {
            if app.status(&paid).await != "pending" && app.status(&idle).await != "pending" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(app.status(&paid).await, "paid");
        assert_eq!(app.status(&idle).await, "expired");
        assert!(app.order_notes(&paid).iter().any(|(_, c)| c.contains("reconciler: past its expiry: the status check found")));
    }
}

/// Two instances on one PostgreSQL database, one KICC: 200 expired orders are each checked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_handle_each_order_once() {
    let Some(test_db) = TestDb::postgres() else {
        return;
    };
    let first = app(test_db, &[("ORDER_EXPIRY_SECS", "1")]).await;
    let sandbox = format!("{}/sandbox", first.address);
    let second = TestApp::spawn_beside(
        &first,
        &[
            ("KICC_API_BASE", &sandbox),
            ("KICC_MALL_ID", kicc_checkout::config::SANDBOX_MALL_ID),
            ("KICC_SECRET_KEY", kicc_checkout::config::SANDBOX_SECRET_KEY),
            ("ADMIN_PASSWORD", "correct horse"),
            ("RECONCILE_INTERVAL_SECS", "86400"),
            ("ORDER_EXPIRY_SECS", "1"),
        ],
    )
    .await;
    let mut orders = Vec::new();
    for _ in 0..200 {
        orders.push(first.new_order().await);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Both instances pass at the same time, again and again, until nothing is left.
    let (mut first_claimed, mut second_claimed) = (0, 0);
    for _ in 0..20 {
        let (a, b) = tokio::join!(first.reconcile(), second.reconcile());
        first_claimed += a.claimed;
        second_claimed += b.claimed;
        if a.claimed + b.claimed == 0 {
            break;
        }
    }
    assert!(
        first_claimed > 0 && second_claimed > 0,
        "both did part: {first_claimed} + {second_claimed}"
    );
    assert_eq!(first_claimed + second_claimed, 200);
    for (no, pg_cno) in &orders {
        assert_eq!(first.status(no).await, "expired");
        let calls = first.trade(pg_cno).await["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["api"].as_str().is_some_and(|a| a.contains("find")))
            .count();
        assert_eq!(calls, 1, "order {no} checked {calls} times");
    }
}

/// Each pass claims its work through indexes, not by reading a table that only grows. SQLite
/// plans without statistics, so its plans are checked here: the notified approvals' claim once
/// read every accepted delivery for each waiting order (`(outcome, received_at)`), holding the
/// write lock for seconds in a load run, and the unanswered calls' claim read every call.
#[test]
fn on_sqlite_the_claims_search_their_indexes() {
    use kicc_checkout::db::claims::{Work, claim_sql};
    #[derive(diesel::QueryableByName)]
    struct Step {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    let test_db = TestDb::sqlite();
    let db = test_db.connect(1);
    let mut conn = db.get().unwrap();
    for work in Work::ALL {
        let sql = claim_sql(work, false).replace('?', "NULL");
        let plan: Vec<String> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load::<Step>(&mut *conn)
            .unwrap()
            .into_iter()
            .map(|s| s.detail)
            .collect();
        for table in [
            "orders",
            "webhook_deliveries",
            "d",
            "compensations",
            "gateway_calls",
        ] {
            assert!(
                !plan.iter().any(|l| l == &format!("SCAN {table}")),
                "{work:?} scans {table}: {plan:?}"
            );
        }
        if work == Work::NotifiedApprovals {
            assert!(
                plan.iter().any(|l| l.starts_with("SEARCH d ")
                    && l.contains("USING INDEX webhook_deliveries_order (order_id=?)")),
                "{plan:?}"
            );
        }
    }
}
