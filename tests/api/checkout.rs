//! The shopper's journey over real HTTP: the app with its mounted sandbox gateway, on both
//! databases. Every path ends in a recorded order state, the sandbox's trade state agrees, and the
//! timeline tells the story.

use diesel::RunQueryDsl;
use kicc_checkout::db::{compensations, gateway_calls, orders};
use kicc_checkout::domain::ShopOrderNo;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb};

/// The app in sandbox mode, the sandbox approving nothing by itself and resending webhooks fast.
async fn app(test_db: TestDb) -> TestApp {
    app_with(test_db, &[]).await
}

async fn app_with(test_db: TestDb, extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = vec![
        ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(test_db, &vars).await
}

impl TestApp {
    async fn api_order(&self, pay_method: &str, device: &str, currency: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/api/orders", self.address))
            .json(&json!({
                "items": [{"sku": "CERAMIC-MUG", "quantity": 2}, {"sku": "STICKER-PACK", "quantity": 1}],
                "currency": currency, "payMethod": pay_method, "device": device,
                "customer": {"name": "John Doe", "email": "john@example.com", "phone": "010-1234-5678", "address": "Seoul, Korea"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn scenario(&self, shop_order_no: &str, name: &str, count: u64) {
        let r = self
            .client
            .post(format!("{}/sandbox/control/scenario", self.address))
            .json(&json!({"shopOrderNo": shop_order_no, "scenario": name, "count": count}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// The sandbox's view of a trade (by pgCno or shopOrderNo).
    pub async fn trade(&self, id: &str) -> Value {
        self.get(&format!("/sandbox/control/trades/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// The shopper presses a button on a payment page; returns the return form (action, fields).
    async fn press(&self, form_action: &str, button: &str) -> (String, Vec<(String, String)>) {
        let html = self
            .client
            .post(form_action)
            .form(&[("action", button)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse_form(&html)
    }

    /// Pay on the WeChat page of `pg_cno`.
    async fn pay_wechat(&self, pg_cno: &str, button: &str) -> (String, Vec<(String, String)>) {
        self.press(
            &format!("{}/sandbox/wechat/pay/{pg_cno}", self.address),
            button,
        )
        .await
    }

    /// The browser submits the return form to the returnUrl; returns (status, Location).
    async fn submit_return(&self, form: &(String, Vec<(String, String)>)) -> (u16, String) {
        let r = self
            .client
            .post(&form.0)
            .form(&form.1)
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (r.status().as_u16(), location)
    }

    async fn order(&self, no: &str) -> Value {
        self.get(&format!("/api/orders/{no}"))
            .await
            .json()
            .await
            .unwrap()
    }

    fn timeline(&self, no: &str) -> Vec<String> {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        // Transitions only (notes have no target status).
        orders::timeline(&mut conn, order.id)
            .unwrap()
            .into_iter()
            .filter(|t| t.to_status.is_some())
            .map(|t| t.event)
            .collect()
    }

    fn causes(&self, no: &str) -> String {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        orders::timeline(&mut conn, order.id)
            .unwrap()
            .into_iter()
            .map(|t| t.cause)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn api_calls(&self, no: &str) -> Vec<String> {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        gateway_calls::for_order(&mut conn, order.id)
            .unwrap()
            .into_iter()
            .map(|c| c.api)
            .collect()
    }

    fn compensation_states(&self, no: &str) -> Vec<(String, String)> {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        compensations::for_order(&mut conn, order.id)
            .unwrap()
            .into_iter()
            .map(|c| (c.api, c.status))
            .collect()
    }
}

/// The first form of a page: its action and its hidden/named inputs.
fn parse_form(html: &str) -> (String, Vec<(String, String)>) {
    let form = html
        .split("<form")
        .nth(1)
        .unwrap_or_else(|| panic!("no form in {html}"));
    let action = form
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let name = input.split("name=\"").nth(1)?.split('"').next()?;
            let value = input.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), value.replace("&amp;", "&")))
        })
        .collect();
    (action, fields)
}

fn field<'a>(form: &'a (String, Vec<(String, String)>), name: &str) -> &'a str {
    form.1
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

const PAID_TIMELINE: [&str; 5] = [
    "order_created",
    "payment_registered",
    "shopper_authenticated",
    "approval_requested",
    "payment_confirmed",
];

/// The timeline holds these transitions in this order, each exactly once. Notes (a webhook's
/// arrival, which may interleave with the returnUrl path) may stand between them.
fn assert_story(timeline: &[String], transitions: &[&str]) {
    let only_transitions: Vec<&str> = timeline
        .iter()
        .map(String::as_str)
        .filter(|e| {
            !e.starts_with("webhook_")
                && !e.starts_with("cancel_notified")
                && !e.starts_with("compensation_attempt")
        })
        .collect();
    assert_eq!(only_transitions, transitions, "timeline: {timeline:?}");
}

/// Decodes a PNG with a real QR decoder (ours is 1-bit greyscale: expanded to 8 bits first).
fn decode_qr_png(bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1);
    grids[0].decode().unwrap().1
}

both_backends! {
    async fn native_qr_payment_ends_paid(test_db) {
        let app = app(test_db).await;
        let created = app.api_order("wechat", "pc", "USD").await;
        let no = created["shopOrderNo"].as_str().unwrap().to_owned();
        let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
        let page_url = created["paymentPageUrl"].as_str().unwrap().to_owned();
        // 2 × $12.03 + $0.77, priced by the catalog.
        assert_eq!((created["status"].as_str(), created["amount"].as_i64(), created["currency"].as_str()), (Some("pending"), Some(2483), Some("USD")));
        // The QR decodes to exactly the paymentPageUrl.
        let png = app.get(&format!("/orders/{no}/qr.png")).await.bytes().await.unwrap();
        assert_eq!(decode_qr_png(&png), page_url);
        let svg = app.get(&format!("/orders/{no}/qr.svg")).await;
        assert_eq!(svg.headers()["content-type"], "image/svg+xml");
        let order_page = app.get(&format!("/orders/{no}")).await.text().await.unwrap();
        assert!(order_page.contains("Scan to pay with WeChat Pay") && order_page.contains("<svg") && order_page.contains("$24.83"));
        assert!(order_page.contains("id=\"countdown\"") && order_page.contains("/static/order.js"));
        let script = app.get("/static/order.js").await;
        assert_eq!(script.status(), 200, "the live-status script is served");
        assert!(script.text().await.unwrap().contains("/api/orders/"));

        let form = app.pay_wechat(&pg_cno, "pay").await;
        assert_eq!(form.0, format!("{}/checkout/return", app.address));
        assert_eq!(app.submit_return(&form).await, (303, format!("/orders/{no}")));
        assert_eq!(app.order(&no).await["status"], "paid");
        assert_story(&app.timeline(&no), &PAID_TIMELINE);
        let trade = app.trade(&pg_cno).await;
        assert_eq!((trade["statusCode"].as_str(), trade["approvedAmount"].as_i64()), (Some("TS01"), Some(2483)));
        let receipt = app.get(&format!("/orders/{no}")).await.text().await.unwrap();
        assert!(receipt.contains("your payment is complete") && receipt.contains(&pg_cno) && receipt.contains("Approval number"));
        // (A status check may follow: the approval notification's confirmation.)
        assert_eq!(app.api_calls(&no)[..2], ["wechat_create", "approval_v2"]);
    }

    async fn the_desktop_form_encodes_the_qr_before_its_page_is_asked_for(test_db) {
        // The QR is encoded on the blocking pool while the browser follows the 303, so the
        // order page finds it in the cache (no request pays the ~150 µs mask search).
        let app = app(test_db).await;
        app.post_shop_form("/cart/items", &[("sku", "CANVAS-TOTE"), ("quantity", "1")]).await;
        let (_, fields) = parse_form(&app.get("/checkout").await.text().await.unwrap());
        let key = fields.iter().find(|(k, _)| k == "key").unwrap().1.clone();
        let submit = [("key", key.as_str()), ("currency", "KRW"), ("name", "Ann"), ("email", "ann@example.com"),
                      ("phone", "01012345678"), ("address", "Seoul"), ("pay_method", "wechat"), ("device", "pc")];
        assert!(app.state.qr.is_empty());
        let placed = app.post_shop_form("/checkout", &submit).await;
        assert_eq!(placed.status(), 303);
        let page = placed.headers()["location"].to_str().unwrap().to_owned();
        assert!(page.starts_with("/orders/"), "{page}");
        for _ in 0..100 {
            if !app.state.qr.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(app.state.qr.len(), 1, "the QR was not encoded ahead of its page");
        let html = app.get(&page).await.text().await.unwrap();
        assert!(html.contains("Scan to pay with WeChat Pay") && html.contains("<svg"), "{html}");
        assert_eq!(app.state.qr.len(), 1);
        // A phone's checkout goes to WeChat's page: no QR is encoded for it.
        let (_, fields) = parse_form(&app.get("/checkout").await.text().await.unwrap());
        let key = fields.iter().find(|(k, _)| k == "key").unwrap().1.clone();
        let mut mobile = submit;
        mobile[0].1 = key.as_str();
        mobile[7].1 = "mobile";
        assert_eq!(app.post_shop_form("/checkout", &mobile).await.status(), 303);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(app.state.qr.len(), 1);
    }

    async fn mobile_checkout_form_redirects_and_ends_paid_and_a_double_submit_makes_one_order(test_db) {
        let app = app(test_db).await;
        app.post_shop_form("/cart/items", &[("sku", "CANVAS-TOTE"), ("quantity", "1")]).await;
        let form_page = app.get("/checkout").await.text().await.unwrap();
        let (action, fields) = parse_form(&form_page);
        assert_eq!(action, "/checkout");
        let key = fields.iter().find(|(k, _)| k == "key").unwrap().1.clone();
        let submit = [("key", key.as_str()), ("currency", "KRW"), ("name", "김민수"), ("email", "minsu@example.kr"),
                      ("phone", "01098765432"), ("address", "Busan"), ("pay_method", "wechat"), ("device", "mobile")];
        let first = app.post_shop_form("/checkout", &submit).await;
        assert_eq!(first.status(), 303);
        let page_url = first.headers()["location"].to_str().unwrap().to_owned();
        assert!(page_url.contains("/sandbox/wechat/mweb/"), "{page_url}");
        // The same form again: the same order, the same page.
        let second = app.post_shop_form("/checkout", &submit).await;
        assert_eq!(second.headers()["location"].to_str().unwrap(), page_url);
        let count: i64 = { let mut c = app.db.get().unwrap();
            diesel::QueryDsl::count(kicc_checkout::db::schema::orders::table).get_result(&mut *c).unwrap() };
        assert_eq!(count, 1);

        let mweb = app.get(&page_url.replace(&app.address, "")).await.text().await.unwrap();
        let pay_action = mweb.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let form = app.press(&format!("{}{pay_action}", app.address), "pay").await;
        let no = field(&form, "shopOrderNo").to_owned();
        app.submit_return(&form).await;
        let order = app.order(&no).await;
        assert_eq!((order["status"].as_str(), order["amount"].as_i64()), (Some("paid"), Some(24000)));
        assert_story(&app.timeline(&no), &PAID_TIMELINE);
        // The receipt empties the cart that was bought.
        assert!(!app.get("/cart").await.text().await.unwrap().contains("Your cart is empty"));
        assert!(app.get(&format!("/orders/{no}")).await.text().await.unwrap().contains("your payment is complete"));
        assert!(app.get("/cart").await.text().await.unwrap().contains("Your cart is empty"));
    }

    async fn kiccpay_payment_ends_paid(test_db) {
        let app = app(test_db).await;
        let created = app.api_order("kiccpay", "pc", "KRW").await;
        let no = created["shopOrderNo"].as_str().unwrap().to_owned();
        let window = created["paymentPageUrl"].as_str().unwrap().to_owned();
        assert!(window.contains("/sandbox/kiccpay/window?mercTrxNo="), "{window}");
        let html = app.client.get(&window).send().await.unwrap().text().await.unwrap();
        let pay_action = html.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let form = app.press(&format!("{}{pay_action}", app.address), "pay").await;
        app.submit_return(&form).await;
        assert_eq!(app.order(&no).await["status"], "paid");
        assert_story(&app.timeline(&no), &PAID_TIMELINE);
        assert_eq!(app.api_calls(&no), ["kiccpay_approve"]);
        assert_eq!(app.trade(&no).await["approvedAmount"].as_i64(), Some(25000));
    }

    async fn a_shopper_cancel_leaves_the_order_pending_and_a_decline_fails_it(test_db) {
        let app = app(test_db).await;
        let created = app.api_order("wechat", "pc", "KRW").await;
        let (no, pg_cno) = (created["shopOrderNo"].as_str().unwrap().to_owned(), created["pgCno"].as_str().unwrap().to_owned());
        let form = app.pay_wechat(&pg_cno, "cancel").await;
        assert_eq!(field(&form, "resCd"), "W002");
        app.submit_return(&form).await;
        // The browser's word alone changes nothing: KICC still shows TS00, so the
        // order waits (the shopper may still pay) until it is paid or expires.
        assert_eq!(app.order(&no).await["status"], "pending");
        assert!(app.causes(&no).contains("resCd W002"));
        assert!(app.causes(&no).contains("not confirmed by KICC"), "{}", app.causes(&no));
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS00");
        assert!(app.get(&format!("/orders/{no}")).await.text().await.unwrap().contains("Scan to pay"));

        let created = app.api_order("wechat", "pc", "KRW").await;
        let (no, pg_cno) = (created["shopOrderNo"].as_str().unwrap().to_owned(), created["pgCno"].as_str().unwrap().to_owned());
        app.scenario(&no, "decline", 1).await;
        app.submit_return(&app.pay_wechat(&pg_cno, "pay").await).await;
        assert_eq!(app.order(&no).await["status"], "failed");
        assert!(app.causes(&no).contains("approval declined (5101"), "{}", app.causes(&no));
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS00");
    }

    async fn amount_mismatch_bad_mac_and_a_reply_about_another_trade_are_cancelled(test_db) {
        let app = app(test_db).await;
        // `approval_other_trade`: a reply naming another trade and order (validly signed for
        // it) is not trusted with this order's money.
        for scenario in ["approval_amount_mismatch", "bad_mac", "approval_other_trade"] {
            let created = app.api_order("wechat", "pc", "KRW").await;
            let (no, pg_cno) = (created["shopOrderNo"].as_str().unwrap().to_owned(), created["pgCno"].as_str().unwrap().to_owned());
            app.scenario(&no, scenario, 1).await;
            app.submit_return(&app.pay_wechat(&pg_cno, "pay").await).await;
            // The sandbox's notification may come first and start the cancel: either way the
            // order ends cancelled (the notification's cancel runs after its ack). With
            // `bad_mac` the trade is approved for the right amount, so the notification's
            // status check (a reply that verifies) may mark the order paid before the approval
            // reply arrives; the reply, not trustworthy, then cancels it all the same.
            let order = app.until_status(&no, "cancelled").await;
            assert_eq!(order["cancelledAmount"], order["amount"]);
            let timeline = app.timeline(&no);
            let confirmed_first = scenario != "approval_amount_mismatch" && timeline.iter().any(|e| e == "payment_confirmed");
            let before = if confirmed_first { &PAID_TIMELINE[..] } else { &PAID_TIMELINE[..4] };
            assert_story(&timeline, &[before, &["compensation_started", "compensation_confirmed"]].concat());
            let trade = app.trade(&pg_cno).await;
            assert_eq!((trade["statusCode"].as_str(), trade["remainingAmount"].as_i64()), (Some("TS02"), Some(0)), "{scenario}");
            assert_eq!(app.compensation_states(&no), [("wechat_revise".to_owned(), "confirmed".to_owned())]);
            let page = app.get(&format!("/orders/{no}")).await.text().await.unwrap();
            assert!(page.contains("Your payment was reversed"), "{scenario}");
        }
    }

    async fn a_failed_database_write_after_approval_is_cancelled(test_db) {
        let is_postgres = test_db.is_postgres();
        let app = app(test_db).await;
        // A real failed write: the database itself refuses to mark an order paid.
        {
            let mut conn = app.db.get().unwrap();
            let sql: &[&str] = if is_postgres {
                &["CREATE FUNCTION fail_paid() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected: disk full'; END $$ LANGUAGE plpgsql",
                  "CREATE TRIGGER fail_paid BEFORE UPDATE OF status ON orders FOR EACH ROW WHEN (NEW.status = 'paid') EXECUTE FUNCTION fail_paid()"]
            } else {
                &["CREATE TRIGGER fail_paid BEFORE UPDATE OF status ON orders WHEN NEW.status = 'paid' BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END"]
            };
            for statement in sql {
                diesel::sql_query(*statement).execute(&mut *conn).unwrap();
            }
        }
        let created = app.api_order("wechat", "pc", "KRW").await;
        let (no, pg_cno) = (created["shopOrderNo"].as_str().unwrap().to_owned(), created["pgCno"].as_str().unwrap().to_owned());
        app.submit_return(&app.pay_wechat(&pg_cno, "pay").await).await;
        assert_eq!(app.order(&no).await["status"], "cancelled");
        assert!(app.causes(&no).contains("the database write after approval failed"), "{}", app.causes(&no));
        assert!(app.causes(&no).contains("injected: disk full"));
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS02");
    }

    async fn an_approval_timeout_is_checked_then_cancelled(test_db) {
        // The sandbox approves at once and notifies: with the notification accepted, the order
        // would be confirmed paid by the status check (also a right ending). Refusing
        // notifications here isolates the returnUrl path's rule (spec 02).
        let app = app_with(test_db, &[("KICC_TIMEOUT_SECS", "1"), ("WEBHOOK_ALLOWED_IPS", "203.233.72.66")]).await;
        let created = app.api_order("wechat", "pc", "KRW").await;
        let (no, pg_cno) = (created["shopOrderNo"].as_str().unwrap().to_owned(), created["pgCno"].as_str().unwrap().to_owned());
        app.scenario(&no, "approval_late", 2500).await;
        app.submit_return(&app.pay_wechat(&pg_cno, "pay").await).await;
        assert_eq!(app.order(&no).await["status"], "cancelled", "{}", app.causes(&no));
        assert_eq!(app.api_calls(&no), ["wechat_create", "approval_v2", "retrieve_transaction", "wechat_revise", "wechat_find"]);
        assert!(app.causes(&no).contains("approval ended timeout; the status check found pgCno"));
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS02");
    }

    async fn an_approval_reply_after_the_notification_won_is_still_on_the_timeline(test_db) {
        // The sandbox approves at once, notifies at once and replies 4 s later: the notification's
        // status check marks the order paid first. The approval reply, verified, then loses the
        // race; it must not move the order again, and what it proved still shows on the timeline.
        let app = app_with(test_db, &[("KICC_TIMEOUT_SECS", "10")]).await;
        let created = app.api_order("wechat", "pc", "KRW").await;
        let (no, pg_cno) = (created["shopOrderNo"].as_str().unwrap().to_owned(), created["pgCno"].as_str().unwrap().to_owned());
        app.scenario(&no, "approval_late", 4000).await;
        let form = app.pay_wechat(&pg_cno, "pay").await;
        let returning = {
            let (client, form) = (app.client.clone(), form.clone());
            tokio::spawn(async move { client.post(&form.0).form(&form.1).send().await.unwrap().status().as_u16() })
        };
        let mut paid_before_the_reply = false;
        for _ in 0..60 {
            if app.order(&no).await["status"] == "paid" {
                paid_before_the_reply = !returning.is_finished();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(paid_before_the_reply, "{}", app.causes(&no));
        assert_eq!(returning.await.unwrap(), 303);
        let causes = app.causes(&no);
        assert!(causes.contains("approval notification confirmed"), "{causes}");
        assert!(causes.contains("msgAuthValue valid; not applied: the order is already paid"), "{causes}");
        assert_eq!(app.timeline(&no).iter().filter(|e| *e == "payment_confirmed").count(), 1, "{causes}");
        assert_eq!(app.order(&no).await["status"], "paid");
        assert_eq!(app.trade(&pg_cno).await["statusCode"], "TS01");
        // The receipt still shows the approval number, which only the approval reply carries.
        let receipt = app.get(&format!("/orders/{no}")).await.text().await.unwrap();
        assert!(receipt.contains("Approval number"), "{receipt}");
    }

    async fn a_kiccpay_timeout_is_net_cancelled(test_db) {
        let app = app_with(test_db, &[("KICC_TIMEOUT_SECS", "1")]).await;
        let created = app.api_order("kiccpay", "pc", "KRW").await;
        let no = created["shopOrderNo"].as_str().unwrap().to_owned();
        app.scenario(&no, "approval_late", 2500).await;
        let window = created["paymentPageUrl"].as_str().unwrap().to_owned();
        let html = app.client.get(&window).send().await.unwrap().text().await.unwrap();
        let pay_action = html.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let form = app.press(&format!("{}{pay_action}", app.address), "pay").await;
        app.submit_return(&form).await;
        assert_eq!(app.order(&no).await["status"], "cancelled", "{}", app.causes(&no));
        assert_eq!(app.api_calls(&no), ["kiccpay_approve", "kiccpay_net_cancel"]);
        assert_eq!(app.compensation_states(&no), [("kiccpay_net_cancel".to_owned(), "confirmed".to_owned())]);
        assert_eq!(app.trade(&no).await["statusCode"], "TS12");
    }

    async fn forged_returns_cannot_mark_an_order_paid(test_db) {
        let app = app(test_db).await;
        // Unknown order.
        let unknown = app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", "NO-SUCH-ORDER"), ("authorizationId", "X")]).await;
        assert_eq!(unknown.status(), 404);
        assert!(unknown.text().await.unwrap().contains("<html"));

        // A made-up authorizationId: KICC refuses it, the order is not paid.
        let a = app.api_order("wechat", "pc", "KRW").await;
        let a_no = a["shopOrderNo"].as_str().unwrap().to_owned();
        app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", &a_no), ("authorizationId", "FORGED-AUTH-ID")]).await;
        assert_ne!(app.order(&a_no).await["status"], "paid");
        assert_eq!(app.trade(&a_no).await["statusCode"], "TS00");

        // B is paid properly; its authorizationId replayed onto C does not pay C, and replayed
        // onto B does not approve twice.
        let b = app.api_order("wechat", "pc", "KRW").await;
        let b_no = b["shopOrderNo"].as_str().unwrap().to_owned();
        let b_form = app.pay_wechat(b["pgCno"].as_str().unwrap(), "pay").await;
        app.submit_return(&b_form).await;
        assert_eq!(app.order(&b_no).await["status"], "paid");
        let c = app.api_order("wechat", "pc", "KRW").await;
        let c_no = c["shopOrderNo"].as_str().unwrap().to_owned();
        let auth = field(&b_form, "authorizationId").to_owned();
        app.post_form("/checkout/return", &[("resCd", "0000"), ("shopOrderNo", &c_no), ("authorizationId", &auth)]).await;
        assert_ne!(app.order(&c_no).await["status"], "paid");
        app.submit_return(&b_form).await;
        let approvals = app.api_calls(&b_no).iter().filter(|api| *api == "approval_v2").count();
        assert_eq!(approvals, 1, "a replay sends no second approval");
        // A "cancelled" return after payment changes nothing.
        app.post_form("/checkout/return", &[("resCd", "W002"), ("shopOrderNo", &b_no)]).await;
        assert_eq!(app.order(&b_no).await["status"], "paid");
        // resCd 0000 without an authorizationId: the status check decides, and finds no payment.
        let d = app.api_order("wechat", "pc", "KRW").await;
        let d_no = d["shopOrderNo"].as_str().unwrap().to_owned();
        app.get(&format!("/checkout/return?resCd=0000&shopOrderNo={d_no}")).await;
        assert_eq!(app.order(&d_no).await["status"], "pending");
        assert_eq!(app.api_calls(&d_no), ["wechat_create", "wechat_find"]);
    }

    async fn prices_and_currencies_come_from_the_catalog(test_db) {
        let app = app(test_db).await;
        app.post_shop_form("/cart/items", &[("sku", "ZIP-HOODIE"), ("quantity", "1")]).await;
        let (_, fields) = parse_form(&app.get("/checkout").await.text().await.unwrap());
        let key = fields.iter().find(|(k, _)| k == "key").unwrap().1.clone();
        // A posted price, amount or total is ignored; the catalog's price is charged.
        let tampered = app.post_shop_form("/checkout", &[("key", &key), ("currency", "USD"), ("name", "Eve"), ("email", "eve@example.com"),
            ("phone", "01011112222"), ("address", "Seoul"), ("pay_method", "wechat"), ("device", "pc"),
            ("price", "1"), ("amount", "1"), ("total", "1"), ("unit_price", "1")]).await;
        assert_eq!(tampered.status(), 303);
        let no = tampered.headers()["location"].to_str().unwrap().trim_start_matches("/orders/").to_owned();
        let order = app.order(&no).await;
        assert_eq!((order["amount"].as_i64(), order["currency"].as_str()), (Some(3760), Some("USD")));
        assert_eq!(app.trade(&no).await["amount"].as_i64(), Some(3760));
        // A currency the catalog has no price in: refused, field by field, values kept, no order.
        let (_, fields) = parse_form(&app.get("/checkout").await.text().await.unwrap());
        let key = fields.iter().find(|(k, _)| k == "key").unwrap().1.clone();
        let refused = app.post_shop_form("/checkout", &[("key", &key), ("currency", "JPY"), ("name", "Eve"), ("email", "not-an-email"),
            ("phone", "01011112222"), ("address", "Seoul"), ("pay_method", "wechat")]).await;
        assert_eq!(refused.status(), 422);
        let html = refused.text().await.unwrap();
        assert!(html.contains("`JPY` is not supported") && html.contains("Email is not an email address") && html.contains("value=\"Eve\""), "{html}");
        let count: i64 = { let mut c = app.db.get().unwrap();
            diesel::QueryDsl::count(kicc_checkout::db::schema::orders::table).get_result(&mut *c).unwrap() };
        assert_eq!(count, 1);
        // The API prices from the catalog too, and says what is wrong as JSON.
        let bad = app.client.post(format!("{}/api/orders", app.address))
            .json(&json!({"items": [{"sku": "ZIP-HOODIE", "quantity": 1, "price": 1}], "currency": "EUR", "payMethod": "wechat",
                          "customer": {"name": "Eve", "email": "eve@example.com", "phone": "01011112222", "address": "Seoul"}}))
            .send().await.unwrap();
        assert_eq!(bad.status(), 422);
        let body: Value = bad.json().await.unwrap();
        assert_eq!((body["error"]["code"].as_str(), body["error"]["field"].as_str()), (Some("invalid"), Some("currency")));
    }
}

/// The app in live mode against a standalone sandbox that does not know its merchant: the create
/// is declined, the shopper sees KICC's message on the checkout form and can try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_create_shows_kiccs_message_and_lets_the_shopper_retry() {
    let sandbox_config = kicc_checkout::sandbox::SandboxConfig::from_lookup(|_| Ok(None)).unwrap();
    let sandbox = kicc_checkout::sandbox::SandboxServer::build(
        sandbox_config,
        "127.0.0.1:0".parse().unwrap(),
        None,
    )
    .unwrap();
    let base = sandbox.base_url().to_owned();
    tokio::spawn(sandbox.run_until_stopped());
    let app = TestApp::spawn_with(
        TestDb::sqlite(),
        &[
            ("KICC_API_BASE", &base),
            ("KICC_MALL_ID", "T9999999"),
            ("KICC_SECRET_KEY", "k"),
            ("ADMIN_PASSWORD", "correct horse"),
        ],
    )
    .await;
    app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG")])
        .await;
    let (_, fields) = parse_form(&app.get("/checkout").await.text().await.unwrap());
    let key = fields.iter().find(|(k, _)| k == "key").unwrap().1.clone();
    let submit = [
        ("key", key.as_str()),
        ("currency", "KRW"),
        ("name", "John"),
        ("email", "john@example.com"),
        ("phone", "01012345678"),
        ("address", "Seoul"),
        ("pay_method", "wechat"),
        ("device", "pc"),
    ];
    let declined = app.post_shop_form("/checkout", &submit).await;
    assert_eq!(declined.status(), 502);
    let html = declined.text().await.unwrap();
    assert!(
        html.contains("The payment could not be started") && html.contains("You can try again"),
        "{html}"
    );
    assert!(html.contains("value=\"John\""), "values are kept");
    // A fresh form key: trying again makes a new order rather than finding the failed one.
    let (_, retry) = parse_form(&html);
    assert_ne!(retry.iter().find(|(k, _)| k == "key").unwrap().1, key);
    let mut conn = app.db.get().unwrap();
    let rows = gateway_calls::all(&mut conn).unwrap();
    assert_eq!(
        (rows[0].api.as_str(), rows[0].res_cd.as_deref()),
        ("wechat_create", Some("2001"))
    );
    let order = orders::find_by_id(&mut conn, rows[0].order_id.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(order.status.as_str(), "failed");
    // No sandbox in live mode.
    drop(conn);
    assert_eq!(app.get("/sandbox/").await.status(), 404);
}

/// The database goes away after the approval was sent: the paid write and the compensation job
/// both fail, so the app cancels in-process at once and records it all when the database is back.
/// (PostgreSQL only: a SQLite file cannot be taken from a process that holds it open.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_after_approval_cancels_in_process_and_records_later() {
    let Some(test_db) = TestDb::postgres() else {
        return;
    };
    let name = test_db.postgres_name().unwrap().to_owned();
    let app = app_with(test_db, &[("KICC_TIMEOUT_SECS", "10")]).await;
    let created = app.api_order("wechat", "pc", "KRW").await;
    let (no, pg_cno) = (
        created["shopOrderNo"].as_str().unwrap().to_owned(),
        created["pgCno"].as_str().unwrap().to_owned(),
    );
    // The approval is made at once but answered 1.5 s later: time to take the database away.
    app.scenario(&no, "approval_late", 1500).await;
    let form = app.pay_wechat(&pg_cno, "pay").await;
    let returning = {
        let (client, form) = (app.client.clone(), form.clone());
        tokio::spawn(async move {
            client
                .post(&form.0)
                .form(&form.1)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let admin = |sql: String| {
        let mut conn = <diesel::PgConnection as diesel::Connection>::establish(
            &crate::helpers::postgres_admin_url(),
        )
        .unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap();
    };
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ));

    // The shopper gets an error page (nothing more can be said without the database)…
    let status = returning.await.unwrap();
    assert!(status >= 500, "{status}");
    // …but the money already went back.
    let trade = app.trade(&pg_cno).await;
    assert_eq!(trade["statusCode"], "TS02", "{trade}");

    // The database returns; the recorder writes what happened.
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let mut status = String::new();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let response = app.get(&format!("/api/orders/{no}")).await;
        if response.status() == 200 {
            status = response.json::<Value>().await.unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned();
            // The approval notification may have confirmed the order paid before the database
            // went away; the cancellation notification then closes it too. Either way it ends
            // cancelled, and the in-process cancel is written once the recorder runs.
            if status == "cancelled" && app.causes(&no).contains("cancelled in-process") {
                break;
            }
        }
    }
    assert_eq!(status, "cancelled", "{}", app.causes(&no));
    assert!(
        app.causes(&no)
            .contains("cancelled in-process while the database was unreachable"),
        "{}",
        app.causes(&no)
    );
    // The in-process cancel's revise and its status check, recorded once the database
    // returned; the cancellation notification's own status check (`wechat_find_cancel`, which
    // confirms it before it counts) may be recorded in between.
    let calls: Vec<String> = app
        .api_calls(&no)
        .into_iter()
        .filter(|c| c != "wechat_find_cancel")
        .collect();
    assert!(
        calls.ends_with(&["wechat_revise".to_owned(), "wechat_find".to_owned()]),
        "{calls:?}"
    );
    assert_eq!(
        app.compensation_states(&no),
        [("wechat_revise".to_owned(), "confirmed".to_owned())]
    );
}
