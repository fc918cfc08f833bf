//! KICC's notifications (spec 04, 05) over real HTTP, on both databases: processed into the same
//! orders as the returnUrl, deduplicated under storms, refused from strangers, and never lost
//! when the database fails.

use std::time::Duration;

use diesel::RunQueryDsl;
use kicc_checkout::db::webhook_deliveries;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb};

/// KICC's development source IP (spec 04/05).
const KICC_IP: &str = "61.33.205.151";

/// The app behind a trusted proxy (loopback) that admits only KICC's address: the test's own
/// deliveries carry `X-Forwarded-For: KICC_IP`; the sandbox's own (no header) are refused, so the
/// test decides exactly what arrives.
async fn app(test_db: TestDb) -> TestApp {
    TestApp::spawn_with(
        test_db,
        &[
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
            ("WEBHOOK_ALLOWED_IPS", KICC_IP),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await
}

/// Spec 04's body with a real order's values.
fn approval_body(no: &str, pg_cno: &str, amount: i64, currency: &str) -> Value {
    crate::helpers::approval_notification(no, pg_cno, amount, currency)
}

/// Spec 05's body with a real order's values, in KRW.
fn cancel_body(no: &str, pg_cno: &str, cancel_pg_cno: &str, amount: i64) -> Value {
    crate::helpers::cancel_notification(no, pg_cno, cancel_pg_cno, amount, "KRW")
}

impl TestApp {
    async fn notify(&self, route: &str, body: &Value, forwarded_for: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{route}", self.address))
            .json(body);
        if let Some(ip) = forwarded_for {
            request = request.header("X-Forwarded-For", ip);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A ₩25,000 WeChat order; with `approved`, KICC has approved it (the shopper paid and the
    /// sandbox approved at once), so a status check finds it.
    async fn wechat_order(&self, approved: bool) -> (String, String) {
        let created: Value = self
            .client
            .post(format!("{}/api/orders", self.address))
            .json(&json!({"items": [{"sku": "CANVAS-TOTE", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                          "customer": {"name": "Ann", "email": "ann@example.com", "phone": "01012345678", "address": "Seoul"}}))
            .send().await.unwrap().json().await.unwrap();
        let no = created["shopOrderNo"].as_str().unwrap().to_owned();
        let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
        if approved {
            self.client
                .post(format!("{}/sandbox/control/scenario", self.address))
                .json(&json!({"shopOrderNo": no, "scenario": "return_lost"}))
                .send()
                .await
                .unwrap();
            self.press_pay(&pg_cno).await;
        }
        (no, pg_cno)
    }

    /// KICC cancels `amount` of the order's payment (the sandbox's revise, as KICC's console or
    /// a merchant's own call would): a real cancel whose status check confirms it. Its own
    /// notification goes to a notifyUrl nothing answers, so the test decides what arrives.
    /// Returns its cancelPgCno.
    async fn kicc_cancels(&self, no: &str, pg_cno: &str, amount: i64) -> String {
        use kicc_checkout::kicc::{CancelAmount, Outcome};
        let kicc = crate::helpers::kicc_client(
            &self.db,
            &format!("{}/sandbox", self.address),
            Duration::from_secs(10),
        );
        let order = self.stored_order(no);
        let how = if amount >= order.amount.minor() {
            CancelAmount::Full
        } else {
            CancelAmount::Partial(amount)
        };
        let call = kicc
            .wechat_revise(&order, pg_cno, how, "http://127.0.0.1:9/nowhere", None)
            .await
            .unwrap();
        match call.outcome {
            Outcome::Accepted(accepted) => accepted.cancel_pg_cno.expect("a cancelPgCno"),
            other => panic!("the sandbox refused the cancel: {other:?}"),
        }
    }

    async fn status_of(&self, no: &str) -> Value {
        self.get(&format!("/api/orders/{no}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// Waits until the order has `status` (follow-ups run after the ack).
    pub async fn until_status(&self, no: &str, status: &str) -> Value {
        for _ in 0..100 {
            let order = self.status_of(no).await;
            if order["status"] == status {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "order {no} never became {status}: {}",
            self.status_of(no).await
        );
    }

    fn deliveries(&self) -> Vec<webhook_deliveries::Delivery> {
        webhook_deliveries::all(&mut self.db.get().unwrap()).unwrap()
    }

    fn kicc_deliveries(&self) -> Vec<webhook_deliveries::Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.source_ip == KICC_IP)
            .collect()
    }

    /// The order numbered `no`, read from the database.
    fn stored_order(&self, no: &str) -> kicc_checkout::domain::Order {
        kicc_checkout::db::orders::find_by_shop_order_no(
            &mut self.db.get().unwrap(),
            &kicc_checkout::domain::ShopOrderNo::parse(no).unwrap(),
        )
        .unwrap()
        .unwrap()
    }

    fn events(&self, no: &str) -> Vec<String> {
        use kicc_checkout::db::orders;
        let order = self.stored_order(no);
        orders::timeline(&mut self.db.get().unwrap(), order.id)
            .unwrap()
            .into_iter()
            .map(|t| t.event)
            .collect()
    }

    async fn sandbox_status(&self, pg_cno: &str) -> String {
        let trade: Value = self
            .get(&format!("/sandbox/control/trades/{pg_cno}"))
            .await
            .json()
            .await
            .unwrap();
        trade["statusCode"].as_str().unwrap().to_owned()
    }
}

both_backends! {
    async fn spec_bodies_approval_then_cancellation_ends_cancelled(test_db) {
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        let (status, ack) = app.notify("/webhooks/kicc/payment", &approval_body(&no, &pg_cno, 24000, "KRW"), Some(KICC_IP)).await;
        assert_eq!(status, 200);
        assert_eq!(ack, json!({"resCd": "0000", "resMsg": "Success", "pgCno": pg_cno}));
        // Confirmed by the status check after the ack, then paid.
        app.until_status(&no, "paid").await;
        assert_eq!(app.events(&no).iter().filter(|e| *e == "payment_confirmed").count(), 1);

        // One notifyUrl serves both: the cancellation arrives on the payment route, and is
        // applied once KICC's status check confirms it.
        let cancel = app.kicc_cancels(&no, &pg_cno, 24000).await;
        let (_, ack) = app.notify("/webhooks/kicc/payment", &cancel_body(&no, &pg_cno, &cancel, 24000), Some(KICC_IP)).await;
        assert_eq!((ack["resCd"].as_str(), ack["pgCno"].as_str()), (Some("0000"), Some(pg_cno.as_str())));
        let order = app.until_status(&no, "cancelled").await;
        assert_eq!((order["status"].as_str(), order["cancelledAmount"].as_i64()), (Some("cancelled"), Some(24000)));
        let kinds: Vec<_> = app.kicc_deliveries().iter().map(|d| (d.kind.clone(), d.outcome.clone().unwrap(), d.applied)).collect();
        assert_eq!(kinds, [("payment".into(), "accepted".into(), true), ("cancel".into(), "accepted".into(), true)]);
    }

    async fn two_partial_cancels_add_up_and_a_repeat_counts_once(test_db) {
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        app.notify("/webhooks/kicc/payment", &approval_body(&no, &pg_cno, 24000, "KRW"), Some(KICC_IP)).await;
        app.until_status(&no, "paid").await;
        let first = app.kicc_cancels(&no, &pg_cno, 10000).await;
        app.notify("/webhooks/kicc/cancel", &cancel_body(&no, &pg_cno, &first, 10000), Some(KICC_IP)).await;
        let order = app.until_status(&no, "partially_cancelled").await;
        assert_eq!((order["status"].as_str(), order["cancelledAmount"].as_i64()), (Some("partially_cancelled"), Some(10000)));
        // KICC resends the first: acked, not counted again.
        let (_, ack) = app.notify("/webhooks/kicc/cancel", &cancel_body(&no, &pg_cno, &first, 10000), Some(KICC_IP)).await;
        assert_eq!(ack["resCd"], "0000");
        assert_eq!(app.status_of(&no).await["cancelledAmount"], 10000);
        let second = app.kicc_cancels(&no, &pg_cno, 14000).await;
        app.notify("/webhooks/kicc/cancel", &cancel_body(&no, &pg_cno, &second, 14000), Some(KICC_IP)).await;
        let order = app.until_status(&no, "cancelled").await;
        assert_eq!((order["status"].as_str(), order["cancelledAmount"].as_i64()), (Some("cancelled"), Some(24000)));
        let outcomes: Vec<_> = app.kicc_deliveries().iter().skip(1).map(|d| d.outcome.clone().unwrap()).collect();
        assert_eq!(outcomes, ["accepted", "duplicate", "accepted"]);
    }

    async fn a_notified_amount_that_differs_is_cancelled_at_kicc(test_db) {
        // Here the sandbox's own notification is what arrives (loopback allowed by default).
        let app = TestApp::spawn_with(test_db, &[("SANDBOX_AUTO_APPROVE_MS", "0"), ("SANDBOX_WEBHOOK_BACKOFF_MS", "1")]).await;
        let (no, pg_cno) = app.wechat_order(false).await;
        app.client.post(format!("{}/sandbox/control/scenario", app.address))
            .json(&json!({"shopOrderNo": no, "scenario": "webhook_amount_mismatch"})).send().await.unwrap();
        app.client.post(format!("{}/sandbox/control/scenario", app.address)).send().await.unwrap();
        // The shopper pays and comes back: the approval is right, the notification is not.
        let html = app.press_pay(&pg_cno).await;
        let auth = crate::helpers::hidden_field(&html, "authorizationId").expect("an authorizationId");
        app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", &no), ("authorizationId", &auth)]).await;
        app.until_status(&no, "cancelled").await;
        assert_eq!(app.sandbox_status(&pg_cno).await, "TS02");
        let events = app.events(&no);
        assert!(events.contains(&"compensation_started".to_owned()) && events.contains(&"compensation_confirmed".to_owned()), "{events:?}");
    }

    async fn a_stranger_is_refused_with_403_and_nothing_changes(test_db) {
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        let body = approval_body(&no, &pg_cno, 24000, "KRW");
        // Straight from loopback, and with a forged X-Forwarded-For from an untrusted address
        // (here: a proxy list that does not include loopback).
        let (status, ack) = app.notify("/webhooks/kicc/payment", &body, None).await;
        assert_eq!(status, 403);
        assert_eq!((ack["resCd"].as_str(), ack["pgCno"].as_str()), (Some("9403"), Some(pg_cno.as_str())));
        let refused = app.deliveries().into_iter().filter(|d| d.outcome.as_deref() == Some("refused") && d.pg_cno.as_deref() == Some(&pg_cno)).count();
        assert!(refused >= 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.status_of(&no).await["status"], "pending");
        assert!(app.deliveries().iter().all(|d| !d.applied));
    }

    async fn malformed_deliveries_get_a_clear_ack_and_change_nothing(test_db) {
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        let url = format!("{}/webhooks/kicc/payment", app.address);
        let send = |body: Vec<u8>, content_type: &'static str| {
            let request = app.client.post(&url).header("Content-Type", content_type).header("X-Forwarded-For", KICC_IP).body(body);
            async move {
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let (s, ack) = send(b"{not json".to_vec(), "application/json").await;
        assert_eq!((s, ack["resCd"].as_str()), (200, Some("9001")));
        let (s, ack) = send(serde_json::to_vec(&json!({"resCd": "0000", "shopOrderNo": no})).unwrap(), "application/json").await;
        assert_eq!((s, ack["resCd"].as_str()), (200, Some("9001")), "missing pgCno");
        assert!(ack["resMsg"].as_str().unwrap().contains("pgCno"));
        let (s, ack) = send(serde_json::to_vec(&approval_body(&no, &pg_cno, 24000, "KRW")).unwrap(), "text/plain").await;
        assert_eq!((s, ack["resCd"].as_str()), (415, Some("9002")));
        let mut huge = serde_json::to_vec(&approval_body(&no, &pg_cno, 24000, "KRW")).unwrap();
        huge.extend(std::iter::repeat_n(b' ', 70 * 1024));
        let (s, ack) = send(huge, "application/json").await;
        assert_eq!((s, ack["resCd"].as_str()), (413, Some("9003")));
        let outcomes: Vec<_> = app.kicc_deliveries().iter().map(|d| d.outcome.clone().unwrap()).collect();
        assert_eq!(outcomes, ["rejected"; 4]);
        assert!(app.kicc_deliveries().iter().all(|d| !d.applied && d.order_id.is_none()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.status_of(&no).await["status"], "pending");
    }

    async fn a_failed_write_is_not_acked_and_the_resend_is_applied_once(test_db) {
        let is_postgres = test_db.is_postgres();
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        // A real failure: the database refuses to store deliveries.
        let (create, drop): (&[&str], &[&str]) = if is_postgres {
            (&["CREATE FUNCTION no_deliveries() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected: disk full'; END $$ LANGUAGE plpgsql",
               "CREATE TRIGGER no_deliveries BEFORE INSERT ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION no_deliveries()"],
             &["DROP TRIGGER no_deliveries ON webhook_deliveries"])
        } else {
            (&["CREATE TRIGGER no_deliveries BEFORE INSERT ON webhook_deliveries BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END"],
             &["DROP TRIGGER no_deliveries"])
        };
        let run = |statements: &[&str]| {
            let mut conn = app.db.get().unwrap();
            for s in statements {
                diesel::sql_query(*s).execute(&mut *conn).unwrap();
            }
        };
        run(create);
        let body = approval_body(&no, &pg_cno, 24000, "KRW");
        let (status, ack) = app.notify("/webhooks/kicc/payment", &body, Some(KICC_IP)).await;
        assert_eq!((status, ack["resCd"].as_str(), ack["resMsg"].as_str()), (200, Some("5001"), Some("Internal DB Error")));
        assert_eq!(app.status_of(&no).await["status"], "pending");
        run(drop);
        // KICC resends: now it is applied — once.
        for _ in 0..2 {
            let (_, ack) = app.notify("/webhooks/kicc/payment", &body, Some(KICC_IP)).await;
            assert_eq!(ack["resCd"], "0000");
        }
        app.until_status(&no, "paid").await;
        let applied = app.kicc_deliveries().iter().filter(|d| d.applied).count();
        assert_eq!(applied, 1);
        assert_eq!(app.events(&no).iter().filter(|e| *e == "payment_confirmed").count(), 1);
    }

    async fn an_approval_racing_one_of_its_key_still_committing_is_acked_as_a_duplicate(test_db) {
        // Another transaction (another instance) holds an applied delivery of the same pgCno,
        // not yet committed: the insert that claims the key waits for it and, once it commits,
        // fails on the unique index before any effect. Acked 0000 and kept as a duplicate.
        let is_postgres = test_db.is_postgres();
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        let sql = |conn: &mut kicc_checkout::db::AnyConnection, s: &str| {
            diesel::sql_query(s).execute(conn).unwrap();
        };
        let mut other = app.db.get().unwrap();
        sql(&mut other, if is_postgres { "BEGIN" } else { "BEGIN IMMEDIATE" });
        sql(&mut other, &format!(
            "INSERT INTO webhook_deliveries (kind, route, source_ip, headers, body, received_at, \
             dedupe_key, pg_cno, applied, outcome) VALUES ('payment', '/webhooks/kicc/payment', \
             '10.0.0.2', '{{}}', '{{}}', '2026-11-22 00:00:00', '{pg_cno}', '{pg_cno}', TRUE, 'applied')"));
        let body = approval_body(&no, &pg_cno, 24000, "KRW");
        let delivered = app.notify("/webhooks/kicc/payment", &body, Some(KICC_IP));
        let commit = async {
            if is_postgres {
                // Until the delivery's insert waits on the other transaction's claim.
                let mut watch = app.db.get().unwrap();
                #[derive(diesel::QueryableByName)]
                struct Waiting {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let mut waiting = 0;
                for _ in 0..200 {
                    waiting = diesel::sql_query(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                         AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO webhook_deliveries%'",
                    )
                    .get_result::<Waiting>(&mut *watch)
                    .unwrap()
                    .n;
                    if waiting > 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                assert_eq!(waiting, 1, "the delivery never waited on the other claim");
            } else {
                // SQLite has one writer: the delivery waits for the other transaction to end
                // and then finds its key applied.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            sql(&mut other, "COMMIT");
        };
        let ((status, ack), ()) = tokio::join!(delivered, commit);
        assert_eq!((status, ack["resCd"].as_str()), (200, Some("0000")), "{ack}");
        let mine: Vec<_> = app.kicc_deliveries();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!((mine[0].outcome.as_deref(), mine[0].applied, mine[0].order_id), (Some("duplicate"), false, None));
        assert_eq!(app.deliveries().iter().filter(|d| d.applied).count(), 1);
        assert_eq!(app.status_of(&no).await["status"], "pending");
        assert!(!app.events(&no).iter().any(|e| e.starts_with("webhook_")), "{:?}", app.events(&no));
    }

    async fn an_approval_notified_but_not_written_is_cancelled(test_db) {
        // The delivery is stored, but the order's update fails (spec 04 "DB Failure").
        approval_lost_is_cancelled(test_db, &[
            "CREATE FUNCTION no_notes() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected: lock timeout'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER no_notes BEFORE INSERT ON order_events FOR EACH ROW WHEN (NEW.event = 'webhook_approval') EXECUTE FUNCTION no_notes()",
        ], &[
            "CREATE TRIGGER no_notes BEFORE INSERT ON order_events WHEN NEW.event = 'webhook_approval' BEGIN SELECT RAISE(ABORT, 'injected: lock timeout'); END",
        ]).await;
    }

    async fn an_approval_applied_but_not_committed_is_cancelled(test_db) {
        // Every statement of the delivery succeeds, but its commit fails (a foreign key checked
        // only at COMMIT): the order update is lost all the same (spec 04 "DB Failure").
        approval_lost_is_cancelled(test_db, &[
            "CREATE TABLE commit_guard (parent BIGINT REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE FUNCTION break_commit() RETURNS trigger AS $$ BEGIN INSERT INTO commit_guard VALUES (-1); RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER break_commit AFTER INSERT ON order_events FOR EACH ROW WHEN (NEW.event = 'webhook_approval') EXECUTE FUNCTION break_commit()",
        ], &[
            "CREATE TABLE commit_guard (parent INTEGER REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER break_commit AFTER INSERT ON order_events WHEN NEW.event = 'webhook_approval' BEGIN INSERT INTO commit_guard VALUES (-1); END",
        ]).await;
    }
}

/// Injects a failure (`postgres` or `sqlite` statements) into writing an approval notification,
/// delivers one, and expects a non-0000 ack and the payment cancelled at KICC (spec 04 "DB
/// Failure").
async fn approval_lost_is_cancelled(test_db: TestDb, postgres: &[&str], sqlite: &[&str]) {
    let sql = if test_db.is_postgres() {
        postgres
    } else {
        sqlite
    };
    let app = app(test_db).await;
    let (no, pg_cno) = app.wechat_order(true).await;
    {
        let mut conn = app.db.get().unwrap();
        for s in sql {
            diesel::sql_query(*s).execute(&mut *conn).unwrap();
        }
    }
    let (_, ack) = app
        .notify(
            "/webhooks/kicc/payment",
            &approval_body(&no, &pg_cno, 24000, "KRW"),
            Some(KICC_IP),
        )
        .await;
    assert_eq!(ack["resCd"], "5001");
    // The delivery is on record all the same, with how it ended and what was answered.
    let stored: Vec<_> = app
        .kicc_deliveries()
        .into_iter()
        .map(|d| (d.outcome, d.ack_res_cd, d.applied))
        .collect();
    assert_eq!(
        stored,
        [(Some("failed".into()), Some("5001".into()), false)]
    );
    app.until_status(&no, "cancelled").await;
    assert_eq!(app.sandbox_status(&pg_cno).await, "TS02");
}

/// 15 copies of the same approval notification at once, plus the shopper's returnUrl at the same
/// moment: one paid transition, one timeline entry for it, 15 deliveries stored, every ack 0000.
/// Twenty rounds.
async fn storm(app: &TestApp, other: Option<&TestApp>) {
    for round in 0..20 {
        let (no, pg_cno) = app.wechat_order(false).await;
        let html = app.press_pay(&pg_cno).await;
        let auth =
            crate::helpers::hidden_field(&html, "authorizationId").expect("an authorizationId");
        let before = app.kicc_deliveries().len();
        let body = approval_body(&no, &pg_cno, 24000, "KRW");
        let mut tasks = Vec::new();
        for copy in 0..15 {
            // With a second instance, the copies alternate between the two.
            let target = match other {
                Some(other) if copy % 2 == 1 => other,
                _ => app,
            };
            let (client, url, body) = (
                app.client.clone(),
                format!("{}/webhooks/kicc/payment", target.address),
                body.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("X-Forwarded-For", KICC_IP)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                r.json::<Value>().await.unwrap()["resCd"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }));
        }
        let returning = {
            let (client, url) = (
                app.client.clone(),
                format!("{}/checkout/return", app.address),
            );
            let form = [
                ("resCd".to_owned(), "0000".to_owned()),
                ("shopOrderNo".to_owned(), no.clone()),
                ("authorizationId".to_owned(), auth),
            ];
            tokio::spawn(async move {
                client
                    .post(url)
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        };
        for task in tasks {
            assert_eq!(task.await.unwrap(), "0000", "round {round}");
        }
        assert_eq!(returning.await.unwrap(), 303);
        app.until_status(&no, "paid").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let events = app.events(&no);
        assert_eq!(
            events.iter().filter(|e| *e == "payment_confirmed").count(),
            1,
            "round {round}: {events:?}"
        );
        let deliveries: Vec<_> = app.kicc_deliveries().into_iter().skip(before).collect();
        assert_eq!(deliveries.len(), 15, "round {round}");
        // Never two applied. These copies may arrive before KICC's approval (the return is
        // racing them): one whose status check still finds no approval is kept as unmatched
        // and releases its key, so then none is applied and the return pays.
        assert!(
            deliveries.iter().filter(|d| d.applied).count() <= 1,
            "round {round}"
        );
        assert!(
            deliveries
                .iter()
                .all(|d| d.applied
                    || matches!(d.outcome.as_deref(), Some("duplicate" | "unmatched"))),
            "round {round}: {:?}",
            deliveries
                .iter()
                .map(|d| (d.outcome.clone(), d.applied))
                .collect::<Vec<_>>()
        );
        assert!(
            deliveries
                .iter()
                .all(|d| d.ack_res_cd.as_deref() == Some("0000")),
            "round {round}"
        );
    }
}

both_backends! {
    async fn a_storm_of_duplicates_and_the_return_pay_once(test_db) {
        let app = app(test_db).await;
        storm(&app, None).await;
    }

    async fn approvals_naming_no_order_or_another_pg_cno_are_kept_as_unmatched(test_db) {
        // The order is read with the delivery's insert (one statement on PostgreSQL), and the
        // handling's note is written with its ack: here the cases where there is no order, or
        // an order that is not the notification's.
        let is_postgres = test_db.is_postgres();
        let app = app(test_db).await;
        let (no, pg_cno) = app.wechat_order(true).await;
        // Which acks rewrite the claim (applied, outcome, order): a trigger on those columns
        // fires only when they are set, which a handling that ends as expected does not do.
        let statements: &[&str] = if is_postgres {
            &["CREATE TABLE full_finishes (id BIGINT)",
              "CREATE FUNCTION full_finish() RETURNS trigger AS $$ BEGIN INSERT INTO full_finishes VALUES (NEW.id); RETURN NEW; END $$ LANGUAGE plpgsql",
              "CREATE TRIGGER full_finish AFTER UPDATE OF applied, outcome, order_id ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION full_finish()"]
        } else {
            &["CREATE TABLE full_finishes (id BIGINT)",
              "CREATE TRIGGER full_finish AFTER UPDATE OF applied, outcome, order_id ON webhook_deliveries BEGIN INSERT INTO full_finishes VALUES (NEW.id); END"]
        };
        for s in statements {
            diesel::sql_query(*s).execute(&mut *app.db.get().unwrap()).unwrap();
        }
        let full_finishes = || {
            #[derive(diesel::QueryableByName)]
            struct Id {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                id: i64,
            }
            diesel::sql_query("SELECT id FROM full_finishes ORDER BY id")
                .load::<Id>(&mut *app.db.get().unwrap()).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>()
        };
        let (status, ack) = app.notify("/webhooks/kicc/payment", &approval_body("NO-SUCH-ORDER", "11111111111111111111", 24000, "KRW"), Some(KICC_IP)).await;
        assert_eq!((status, ack["resCd"].as_str(), ack["pgCno"].as_str()), (200, Some("0000"), Some("11111111111111111111")));
        let (status, ack) = app.notify("/webhooks/kicc/payment", &approval_body(&no, "22222222222222222222", 24000, "KRW"), Some(KICC_IP)).await;
        assert_eq!((status, ack["resCd"].as_str()), (200, Some("0000")));
        let stored: Vec<_> = app.kicc_deliveries().into_iter().map(|d| (d.outcome, d.applied, d.order_id, d.ack_res_cd)).collect();
        let unmatched = (Some("unmatched".to_owned()), false, None, Some("0000".to_owned()));
        assert_eq!(stored, [unmatched.clone(), unmatched]);
        // Unmatched: not what their insert expected, so both were finished in full.
        let ids: Vec<i64> = app.kicc_deliveries().iter().map(|d| d.id).collect();
        assert_eq!(full_finishes(), ids);
        assert_eq!(app.events(&no).iter().filter(|e| *e == "webhook_unmatched").count(), 1, "{:?}", app.events(&no));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.status_of(&no).await["status"], "pending");
        // The order's own notification is then applied, its note on the timeline, once.
        let (_, ack) = app.notify("/webhooks/kicc/payment", &approval_body(&no, &pg_cno, 24000, "KRW"), Some(KICC_IP)).await;
        assert_eq!(ack["resCd"], "0000");
        app.until_status(&no, "paid").await;
        let events = app.events(&no);
        assert_eq!(events.iter().filter(|e| *e == "webhook_approval").count(), 1, "{events:?}");
        let last = app.kicc_deliveries().pop().unwrap();
        assert_eq!((last.outcome.as_deref(), last.applied), (Some("accepted"), true));
        assert!(last.order_id.is_some());
        // Accepted for the order its insert found: only its ack was written after it.
        assert_eq!(full_finishes(), ids, "the expected handling rewrote its claim");
        // A resend after it was paid: a duplicate, no second note.
        let (_, ack) = app.notify("/webhooks/kicc/payment", &approval_body(&no, &pg_cno, 24000, "KRW"), Some(KICC_IP)).await;
        assert_eq!(ack["resCd"], "0000");
        assert_eq!(app.kicc_deliveries().pop().unwrap().outcome.as_deref(), Some("duplicate"));
        assert_eq!(app.events(&no).iter().filter(|e| *e == "webhook_approval").count(), 1);
    }

    async fn an_unknown_cancellation_is_acked_and_kept_as_unmatched(test_db) {
        let app = app(test_db).await;
        let (status, ack) = app.notify("/webhooks/kicc/cancel", &cancel_body("NO-SUCH-ORDER", "99999999999999999999", "C-9", 1000), Some(KICC_IP)).await;
        assert_eq!((status, ack["resCd"].as_str(), ack["pgCno"].as_str()), (200, Some("0000"), Some("99999999999999999999")));
        let unmatched = webhook_deliveries::unmatched(&mut app.db.get().unwrap(), 10).unwrap();
        assert_eq!(unmatched.len(), 1);
        assert_eq!((unmatched[0].kind.as_str(), unmatched[0].dedupe_key.as_deref()), ("cancel", Some("C-9")));
    }
}

/// Two app instances on one PostgreSQL database, both talking to one KICC (the first's
/// sandbox): the storm's copies alternate between them and still apply once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_across_two_instances_pays_once() {
    let Some(test_db) = TestDb::postgres() else {
        return;
    };
    let first = app(test_db).await;
    let sandbox = format!("{}/sandbox", first.address);
    let second = TestApp::spawn_beside(
        &first,
        &[
            ("KICC_API_BASE", &sandbox),
            ("KICC_MALL_ID", kicc_checkout::config::SANDBOX_MALL_ID),
            ("KICC_SECRET_KEY", kicc_checkout::config::SANDBOX_SECRET_KEY),
            ("ADMIN_PASSWORD", "correct horse"),
            ("WEBHOOK_ALLOWED_IPS", KICC_IP),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    storm(&first, Some(&second)).await;
}

impl TestApp {
    /// `webhook_one_statement_acks_total` from `/metrics`.
    async fn one_statement_acks(&self) -> u64 {
        let metrics = self.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("webhook_one_statement_acks_total "))
            .unwrap_or_else(|| panic!("no one-statement counter in {metrics}"))
            .parse()
            .unwrap()
    }

    /// What an order's deliveries from KICC and its timeline hold, its own numbers replaced by
    /// `NO` and `PGCNO` and without ids or times, so that two orders handled alike compare
    /// equal.
    fn handled(&self, no: &str, pg_cno: &str) -> (Vec<String>, Vec<String>) {
        use kicc_checkout::db::orders;
        let order = self.stored_order(no);
        let mut conn = self.db.get().unwrap();
        let own = |s: &str| s.replace(no, "NO").replace(pg_cno, "PGCNO");
        let deliveries = webhook_deliveries::all(&mut conn)
            .unwrap()
            .into_iter()
            .filter(|d| d.shop_order_no.as_deref() == Some(no) && d.source_ip == KICC_IP)
            .map(|d| {
                // Headers as a JSON object, whatever order they were stored in.
                let headers: Value = serde_json::from_str(&d.headers).unwrap();
                assert!(d.order_id.is_none_or(|id| id == order.id), "{d:?}");
                assert!(d.acked_at.is_some_and(|at| at >= d.received_at), "{d:?}");
                own(&format!(
                    "{} {} {} {} {} {:?} {:?} {:?} {:?} {} {:?} {:?}",
                    d.kind,
                    d.route,
                    d.source_ip,
                    headers,
                    d.body,
                    d.dedupe_key,
                    d.pg_cno,
                    d.order_id.is_some(),
                    d.outcome,
                    d.applied,
                    d.ack_res_cd,
                    d.ack_body
                ))
            })
            .collect();
        let timeline = orders::timeline(&mut conn, order.id)
            .unwrap()
            .into_iter()
            .map(|t| {
                own(&format!(
                    "{} {:?} {:?} {}",
                    t.event, t.from_status, t.to_status, t.cause
                ))
            })
            .collect();
        (deliveries, timeline)
    }
}

both_backends! {
    async fn an_expected_approval_and_its_resend_are_acked_by_one_statement_writing_what_the_transaction_writes(test_db) {
        // PostgreSQL acks an approval that finds its order as notified, and its resends, by one
        // statement instead of the transaction (a round trip instead of four); SQLite always
        // uses the transaction. On two orders alike, the statement and the transaction
        // (switched to by a test-build switch) must leave the same rows and answers.
        let postgres = test_db.is_postgres();
        let app = app(test_db).await;
        let deliver_twice = |no: String, pg_cno: String| {
            let app = &app;
            async move {
                let body = approval_body(&no, &pg_cno, 24000, "KRW");
                let mut acks = Vec::new();
                for _ in 0..2 {
                    let (status, ack) = app.notify("/webhooks/kicc/payment", &body, Some(KICC_IP)).await;
                    acks.push((status, ack.to_string().replace(&pg_cno, "PGCNO")));
                }
                app.until_status(&no, "paid").await;
                acks
            }
        };
        let (one, one_pg) = app.wechat_order(true).await;
        let (two, two_pg) = app.wechat_order(true).await;
        assert_eq!(app.one_statement_acks().await, 0);
        let acks_one = deliver_twice(one.clone(), one_pg.clone()).await;
        assert_eq!(app.one_statement_acks().await, if postgres { 2 } else { 0 });
        kicc_checkout::faults::webhooks_in_transaction(true);
        let acks_two = deliver_twice(two.clone(), two_pg.clone()).await;
        kicc_checkout::faults::webhooks_in_transaction(false);
        assert_eq!(app.one_statement_acks().await, if postgres { 2 } else { 0 }, "the switch did not hold");
        assert_eq!(acks_one, acks_two);
        assert_eq!(acks_one[0].0, 200);
        assert!(acks_one[0].1.contains(r#""resCd":"0000""#), "{acks_one:?}");
        // The follow-up (a status check, then `paid`) wrote its last note after the test saw
        // `paid`: wait for both timelines to end with it.
        for (no, pg_cno) in [(&one, &one_pg), (&two, &two_pg)] {
            for _ in 0..100 {
                if app.handled(no, pg_cno).1.last().is_some_and(|e| !e.starts_with("webhook_")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (deliveries_one, timeline_one) = app.handled(&one, &one_pg);
        let (deliveries_two, timeline_two) = app.handled(&two, &two_pg);
        assert_eq!(deliveries_one, deliveries_two);
        assert_eq!(timeline_one, timeline_two);
        assert_eq!(deliveries_one.len(), 2);
        assert!(deliveries_one[0].contains(r#"true Some("accepted") true Some("0000")"#), "{deliveries_one:#?}");
        assert!(deliveries_one[1].contains(r#"false Some("duplicate") false Some("0000")"#), "{deliveries_one:#?}");
        assert_eq!(timeline_one.iter().filter(|e| e.starts_with("webhook_approval")).count(), 1, "{timeline_one:#?}");
        assert!(timeline_one.iter().any(|e| e.starts_with("webhook_approval None None approval notification (pgCno PGCNO, amount ")), "{timeline_one:#?}");
    }

    async fn approvals_the_one_statement_does_not_expect_are_left_to_the_transaction(test_db) {
        // Whatever differs from what the statement expects (amount, currency or none, pgCno,
        // order, pay method, an order no longer waiting, a failed payment) is handled by the
        // transaction, with the transaction's outcome, on both backends alike.
        let app = app(test_db).await;
        let kiccpay: Value = app.client.post(format!("{}/api/orders", app.address))
            .json(&json!({"items": [{"sku": "CANVAS-TOTE", "quantity": 1}], "currency": "KRW", "payMethod": "kiccpay",
                          "customer": {"name": "Ann", "email": "ann@example.com", "phone": "01012345678", "address": "Seoul"}}))
            .send().await.unwrap().json().await.unwrap();
        let kiccpay_no = kiccpay["shopOrderNo"].as_str().unwrap_or_else(|| panic!("{kiccpay}")).to_owned();
        // Paid through its returnUrl: no longer waiting when its notification arrives.
        let (paid_no, paid_pg) = app.wechat_order(false).await;
        let html = app.press_pay(&paid_pg).await;
        let auth = crate::helpers::hidden_field(&html, "authorizationId").expect("an authorizationId");
        app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", &paid_no), ("authorizationId", &auth)]).await;
        app.until_status(&paid_no, "paid").await;
        let mut cases: Vec<(&str, Value, &str, bool)> = Vec::new();
        let (no, pg) = app.wechat_order(true).await;
        cases.push(("amount differs", approval_body(&no, &pg, 24001, "KRW"), "applied", true));
        let (no, pg) = app.wechat_order(true).await;
        cases.push(("currency differs", approval_body(&no, &pg, 24000, "USD"), "applied", true));
        let (no, pg) = app.wechat_order(true).await;
        let mut no_currency = approval_body(&no, &pg, 24000, "KRW");
        no_currency["amountInfo"] = json!({"amount": 24000});
        cases.push(("no currency", no_currency, "accepted", true));
        let (no, _) = app.wechat_order(true).await;
        cases.push(("pgCno differs", approval_body(&no, "33333333333333333333", 24000, "KRW"), "unmatched", false));
        cases.push(("no such order", approval_body("NO-SUCH-ORDER", "44444444444444444444", 24000, "KRW"), "unmatched", false));
        cases.push(("KICC Pay order", approval_body(&kiccpay_no, "55555555555555555555", 24000, "KRW"), "unmatched", false));
        cases.push(("already paid", approval_body(&paid_no, &paid_pg, 24000, "KRW"), "applied", true));
        let (no, pg) = app.wechat_order(true).await;
        let mut failed = approval_body(&no, &pg, 24000, "KRW");
        failed["resCd"] = json!("3001");
        // A failure is noted and checked with KICC, and never claims the pgCno.
        cases.push(("payment failed", failed, "failure_noted", false));
        for (case, body, outcome, applied) in cases {
            let (status, ack) = app.notify("/webhooks/kicc/payment", &body, Some(KICC_IP)).await;
            assert_eq!((status, ack["resCd"].as_str()), (200, Some("0000")), "{case}: {ack}");
            let last = app.kicc_deliveries().pop().unwrap();
            assert_eq!((last.outcome.as_deref(), last.applied), (Some(outcome), applied), "{case}");
            assert_eq!(app.one_statement_acks().await, 0, "{case}: acked by the one statement");
        }
    }
}
