//! Issue 21 over real HTTP on both databases: an idempotency key belongs to the client that
//! sent it (its address for the JSON API, its browser for the shop's form) and to the request
//! it first came with; orders have a bounded number of lines; refused webhook deliveries are
//! stored cut, limited per source, and purged after their retention.

use diesel::prelude::*;
use kicc_checkout::db::schema::{orders, webhook_deliveries};
use kicc_checkout::db::webhook_deliveries::{Answered, NewDelivery, insert_answered};
use serde_json::{Value, json};

use crate::helpers::{TestApp, hidden_field};

fn order_count(app: &TestApp) -> i64 {
    let mut conn = app.db.get().unwrap();
    orders::table.count().get_result(&mut *conn).unwrap()
}

/// An API order body of `quantity` sticker packs for `name`, with `key`.
fn order_body(key: &str, name: &str, quantity: i64) -> Value {
    json!({
        "items": [{"sku": "STICKER-PACK", "quantity": quantity}], "currency": "KRW",
        "payMethod": "wechat", "device": "pc", "idempotencyKey": key,
        "customer": {"name": name, "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
    })
}

impl TestApp {
    /// `POST /api/orders` as the client at `client` (through the trusted proxy 127.0.0.1).
    async fn order_from(&self, client: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/orders", self.address))
            .header("x-forwarded-for", client)
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// A second browser: its own cookies (cart, CSRF).
struct Browser {
    client: reqwest::Client,
    base: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Self {
            client,
            base: base.to_owned(),
        }
    }

    /// A shop form posted with this browser's CSRF token.
    async fn post_shop_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let page = self
            .client
            .get(format!("{}/products/STICKER-PACK", self.base))
            .send()
            .await
            .unwrap();
        let token = hidden_field(&page.text().await.unwrap(), "csrf").unwrap();
        let mut fields = form.to_vec();
        fields.push(("csrf", &token));
        self.client
            .post(format!("{}{path}", self.base))
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}

/// The app behind a trusted proxy on loopback: `X-Forwarded-For` names the client.
async fn behind_proxy(test_db: crate::helpers::TestDb) -> TestApp {
    TestApp::spawn_with(
        test_db,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ],
    )
    .await
}

both_backends! {
    async fn another_client_with_the_same_key_gets_its_own_order_never_the_first_clients(test_db) {
        let app = behind_proxy(test_db).await;
        let (status, first) = app.order_from("198.51.100.1", &order_body("order-1", "Kim", 1)).await;
        assert_eq!(status, 201, "{first}");
        // Another client sends the first client's key with another body.
        let (status, other) = app.order_from("198.51.100.2", &order_body("order-1", "Mallory", 9)).await;
        assert_eq!(status, 201, "{other}");
        assert_ne!(other["shopOrderNo"], first["shopOrderNo"]);
        assert_ne!(other["pgCno"], first["pgCno"]);
        assert_ne!(other["paymentPageUrl"], first["paymentPageUrl"]);
        assert_eq!((first["amount"].as_i64(), other["amount"].as_i64()), (Some(1000), Some(9000)));
        // Even with the very same body it is that client's own order, not the first one.
        let (status, same_body) = app.order_from("198.51.100.3", &order_body("order-1", "Kim", 1)).await;
        assert_eq!(status, 201);
        assert_ne!(same_body["shopOrderNo"], first["shopOrderNo"]);
        assert_eq!(order_count(&app), 3);
        // A client on loopback itself (no X-Forwarded-For) is one more client.
        let (status, direct) = {
            let response = app.client.post(format!("{}/api/orders", app.address))
                .json(&order_body("order-1", "Kim", 1)).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        };
        assert_eq!(status, 201, "{direct}");
        assert_ne!(direct["shopOrderNo"], first["shopOrderNo"]);
    }

    async fn the_same_client_reusing_a_key_with_another_body_gets_409_and_with_the_same_body_the_first_order(test_db) {
        let app = behind_proxy(test_db).await;
        let (status, first) = app.order_from("198.51.100.1", &order_body("retry-me", "Kim", 1)).await;
        assert_eq!(status, 201, "{first}");
        // A retry (same client, key and body): the first order, answered as it was (201).
        let (status, retry) = app.order_from("198.51.100.1", &order_body("retry-me", "Kim", 1)).await;
        assert_eq!(status, 201, "{retry}");
        for field in ["shopOrderNo", "pgCno", "paymentPageUrl", "amount", "currency"] {
            assert_eq!(retry[field], first[field], "{field}");
        }
        // The lines in another order are the same request.
        let two_lines = |items: Value| json!({
            "items": items, "currency": "KRW", "payMethod": "wechat", "idempotencyKey": "two-lines",
            "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
        });
        let (_, a) = app.order_from("198.51.100.1", &two_lines(json!([
            {"sku": "STICKER-PACK", "quantity": 1}, {"sku": "CERAMIC-MUG", "quantity": 2}]))).await;
        let (status, b) = app.order_from("198.51.100.1", &two_lines(json!([
            {"sku": "CERAMIC-MUG", "quantity": 2}, {"sku": "STICKER-PACK", "quantity": 1}]))).await;
        assert_eq!((status, &b["shopOrderNo"]), (201, &a["shopOrderNo"]));
        // Another body under the same key: 409, naming the field, and nothing placed.
        let count = order_count(&app);
        for changed in [order_body("retry-me", "Kim", 2), order_body("retry-me", "Someone else", 1),
                        json!({"items": [{"sku": "STICKER-PACK", "quantity": 1}], "currency": "USD", "payMethod": "wechat",
                               "device": "pc", "idempotencyKey": "retry-me",
                               "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}})] {
            let (status, error) = app.order_from("198.51.100.1", &changed).await;
            assert_eq!(status, 409, "{error}");
            assert_eq!(error["error"]["code"], "idempotency_key_reused");
            assert_eq!(error["error"]["field"], "idempotencyKey");
            assert!(error.get("shopOrderNo").is_none() && !error.to_string().contains(first["shopOrderNo"].as_str().unwrap()));
        }
        assert_eq!(order_count(&app), count);
    }

    async fn ten_concurrent_identical_requests_make_one_order_per_client(test_db) {
        let app = behind_proxy(test_db).await;
        let body = order_body("burst", "Kim", 1);
        let burst = |client: &'static str| {
            let requests: Vec<_> = (0..10).map(|_| app.order_from(client, &body)).collect();
            futures_util::future::join_all(requests)
        };
        let (one, two) = tokio::join!(burst("198.51.100.1"), burst("198.51.100.2"));
        for answers in [&one, &two] {
            for (status, order) in answers.iter() {
                assert_eq!(*status, 201, "{order}");
                assert_eq!(order["shopOrderNo"], answers[0].1["shopOrderNo"]);
            }
        }
        assert_ne!(one[0].1["shopOrderNo"], two[0].1["shopOrderNo"]);
        assert_eq!(order_count(&app), 2);
    }

    async fn a_checkout_forms_key_belongs_to_its_browser(test_db) {
        let app = TestApp::spawn_with(test_db, &[("SANDBOX_AUTO_APPROVE_MS", "0")]).await;
        app.post_shop_form("/cart/items", &[("sku", "CANVAS-TOTE"), ("quantity", "1")]).await;
        let key = hidden_field(&app.get("/checkout").await.text().await.unwrap(), "key").unwrap();
        fn form<'a>(key: &'a str, name: &'a str) -> [(&'static str, &'a str); 8] {
            [("key", key), ("currency", "KRW"), ("name", name), ("email", "ann@example.com"),
             ("phone", "01012345678"), ("address", "Seoul"), ("pay_method", "wechat"), ("device", "pc")]
        }
        let first = app.post_shop_form("/checkout", &form(&key, "Ann")).await;
        assert_eq!(first.status(), 303);
        let first_page = first.headers()["location"].to_str().unwrap().to_owned();
        // A double submit of the same form: the same order.
        let again = app.post_shop_form("/checkout", &form(&key, "Ann")).await;
        assert_eq!(again.headers()["location"].to_str().unwrap(), first_page);

        // Another browser (its own cookies) posting this browser's key: its own order.
        let other = Browser::new(&app.address);
        other.post_shop_form("/cart/items", &[("sku", "CANVAS-TOTE"), ("quantity", "1")]).await;
        let theirs = other.post_shop_form("/checkout", &form(&key, "Ann")).await;
        assert_eq!(theirs.status(), 303);
        assert_ne!(theirs.headers()["location"].to_str().unwrap(), first_page);
        assert_eq!(order_count(&app), 2);

        // The first browser, Back, another name, the same key: 409, the values kept and a
        // fresh key, so submitting again places the new order.
        let edited = app.post_shop_form("/checkout", &form(&key, "Ann Lee")).await;
        assert_eq!(edited.status(), 409);
        let html = edited.text().await.unwrap();
        assert!(html.contains("already sent with other details") && html.contains("value=\"Ann Lee\""), "{html}");
        let fresh = hidden_field(&html, "key").unwrap();
        assert_ne!(fresh, key);
        assert_eq!(order_count(&app), 2);
        let placed = app.post_shop_form("/checkout", &form(&fresh, "Ann Lee")).await;
        assert_eq!(placed.status(), 303);
        assert_eq!(order_count(&app), 3);
    }

    async fn an_api_order_has_at_most_50_lines(test_db) {
        let app = TestApp::spawn(test_db).await;
        let lines = |n: usize| json!({
            "items": (0..n).map(|_| json!({"sku": "STICKER-PACK", "quantity": 1})).collect::<Vec<_>>(),
            "currency": "KRW", "payMethod": "wechat",
            "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
        });
        let send = |body: Value| app.client.post(format!("{}/api/orders", app.address)).json(&body).send();
        let refused = send(lines(1000)).await.unwrap();
        assert_eq!(refused.status(), 422);
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["field"], "items", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("50"), "{error}");
        assert_eq!(send(lines(kicc_checkout::checkout::MAX_ORDER_LINES + 1)).await.unwrap().status(), 422);
        assert_eq!(order_count(&app), 0);
        let fifty = send(lines(kicc_checkout::checkout::MAX_ORDER_LINES)).await.unwrap();
        assert_eq!(fifty.status(), 201);
        assert_eq!(fifty.json::<Value>().await.unwrap()["amount"], 50_000);
    }
}

// Refused webhook deliveries.

fn deliveries(app: &TestApp) -> Vec<kicc_checkout::db::webhook_deliveries::Delivery> {
    let mut conn = app.db.get().unwrap();
    kicc_checkout::db::webhook_deliveries::all(&mut conn).unwrap()
}

/// A notification-shaped body of about `size` bytes (a padding field).
fn padded_notification(size: usize) -> String {
    json!({"resCd": "0000", "resMsg": "ok", "mallId": "T5102001", "pgCno": "21000000000001",
           "shopOrderNo": "X", "amount": 1000, "padding": "A".repeat(size)})
    .to_string()
}

both_backends! {
    async fn refused_webhook_posts_are_stored_cut_and_at_most_20_a_minute_per_source(test_db) {
        let app = TestApp::spawn_with(test_db, &[
            ("WEBHOOK_ALLOWED_IPS", "203.233.72.66"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ]).await;
        let post = |source: &'static str, size: usize| {
            app.client.post(format!("{}/webhooks/kicc/payment", app.address))
                .header("x-forwarded-for", source)
                .header("content-type", "application/json")
                .header("x-padding", "B".repeat(4096))
                .body(padded_notification(size))
                .send()
        };
        // 200 posts from one source, 60 to 80 KiB each (some over the 64 KiB body limit).
        let mut answers = Vec::new();
        for round in 0..20 {
            let posts: Vec<_> = (0..10).map(|i| post("198.51.100.7", 60 * 1024 + (round * 10 + i) % 2 * 20 * 1024)).collect();
            for response in futures_util::future::join_all(posts).await {
                let response = response.unwrap();
                answers.push((response.status().as_u16(), response.text().await.unwrap()));
            }
        }
        let stored = deliveries(&app);
        assert_eq!(stored.len(), 20, "at most 20 a minute from one source");
        // Every one refused with the same KICC-shaped answer, stored or not.
        for (status, body) in &answers {
            assert_eq!(*status, 403);
            assert_eq!(body, &answers[0].1);
        }
        let ack: Value = serde_json::from_str(&answers[0].1).unwrap();
        assert_eq!(ack["resCd"], "9403");
        let keep = 2048;
        for d in &stored {
            assert_eq!(d.outcome.as_deref(), Some("refused"));
            assert!(d.body.len() <= keep && d.body.contains("[truncated:"), "{} bytes", d.body.len());
            assert!(d.headers.len() <= keep, "{} bytes of headers", d.headers.len());
            let headers: Value = serde_json::from_str(&d.headers).expect("stored headers are JSON");
            assert!(headers["(truncated)"].as_str().unwrap().contains("bytes of headers received"), "{headers}");
            assert_eq!(headers["content-type"], "application/json");
        }
        // Another source has its own budget.
        assert_eq!(post("198.51.100.8", 100).await.unwrap().status(), 403);
        assert_eq!(deliveries(&app).len(), 21);
        // The ones not stored are counted.
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("webhook_refused_unstored_total 180"), "{metrics}");
        // A small refused body is kept whole.
        let small = deliveries(&app).pop().unwrap();
        assert_eq!(small.body, padded_notification(100));
    }

    async fn refused_and_rejected_deliveries_are_purged_after_their_retention_and_accepted_ones_kept(test_db) {
        let db = test_db.connect(2);
        let old = kicc_checkout::db::now() - chrono::TimeDelta::days(31);
        let recent = kicc_checkout::db::now() - chrono::TimeDelta::days(29);
        {
            let mut conn = db.get().unwrap();
            let new = NewDelivery { kind: "payment", route: "/webhooks/kicc/payment", source_ip: "198.51.100.7",
                headers: "{}", body: "{}", dedupe_key: None, pg_cno: None, shop_order_no: None };
            conn.transaction(|conn| {
                let mut insert = |outcome: &str, at: chrono::NaiveDateTime| {
                    let id = insert_answered(conn, &new,
                        Answered { outcome, ack_res_cd: "9403", ack_body: "{}" }).unwrap();
                    diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq(id)))
                        .set(webhook_deliveries::received_at.eq(at)).execute(conn).unwrap();
                };
                for (outcome, at) in [("refused", old), ("rejected", old), ("refused", recent), ("accepted", old),
                                      ("duplicate", old), ("unmatched", old), ("applied", old)] {
                    insert(outcome, at);
                }
                // Many old refused rows: the purge deletes them batch by batch.
                for _ in 0..1200 {
                    insert("refused", old);
                }
                diesel::QueryResult::Ok(())
            }).unwrap();
        }
        let outcomes = |db: &kicc_checkout::db::Db| -> Vec<String> {
            let mut conn = db.get().unwrap();
            let mut all: Vec<String> = webhook_deliveries::table.select(webhook_deliveries::outcome)
                .load::<Option<String>>(&mut *conn).unwrap().into_iter().flatten().collect();
            all.sort();
            all
        };
        let deleted = kicc_checkout::startup::purge_refused_deliveries(&db, std::time::Duration::from_secs(30 * 86_400)).await.unwrap();
        assert_eq!(deleted, 1202);
        assert_eq!(outcomes(&db), ["accepted", "applied", "duplicate", "refused", "unmatched"]);
        // The app purges at start with WEBHOOK_REFUSED_RETENTION_DAYS (then every hour).
        drop(db);
        let app = TestApp::spawn_with(test_db, &[("WEBHOOK_REFUSED_RETENTION_DAYS", "7")]).await;
        for _ in 0..100 {
            if !outcomes(&app.db).contains(&"refused".to_owned()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(outcomes(&app.db), ["accepted", "applied", "duplicate", "unmatched"]);
    }
}
