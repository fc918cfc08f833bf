//! Web hardening against a hostile client, over real HTTP on both databases: a forged
//! first `X-Forwarded-For` line behind a proxy that appends its own, private pages kept out of
//! caches, `/metrics` behind its token (and loopback-only in live mode), spreadsheet formulas in
//! the CSV export, and request bodies trickled a byte a second.

use std::time::Duration;

use kicc_checkout::db::webhook_deliveries;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// KICC's production source IP (spec 04/05).
const KICC_IP: &str = "203.233.72.66";
/// A stranger's address.
const STRANGER: &str = "198.51.100.7";

/// A WeChat order created through the API with this customer name and mail; its number and pgCno.
async fn api_order(app: &TestApp, name: &str, mail: &str) -> (String, String) {
    let created: Value = app
        .client
        .post(format!("{}/api/orders", app.address))
        .json(&json!({"items": [{"sku": "CANVAS-TOTE", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                      "customer": {"name": name, "email": mail, "phone": "01012345678", "address": "Seoul"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let no = created["shopOrderNo"]
        .as_str()
        .unwrap_or_else(|| panic!("no order: {created}"));
    (no.to_owned(), created["pgCno"].as_str().unwrap().to_owned())
}

/// Spec 04's approval notification with the order's values.
fn approval_body(no: &str, pg_cno: &str) -> Value {
    let mut body: Value = serde_json::from_str(include_str!(
        "../fixtures/spec/04-notification-from-table.json"
    ))
    .unwrap();
    body["shopOrderNo"] = json!(no);
    body["pgCno"] = json!(pg_cno);
    body["amountInfo"] = json!({"currency": "KRW", "amount": 24000});
    body
}

fn deliveries(app: &TestApp) -> Vec<webhook_deliveries::Delivery> {
    webhook_deliveries::all(&mut app.db.get().unwrap()).unwrap()
}

both_backends! {
    async fn a_forged_first_forwarded_for_line_is_not_believed_behind_a_proxy_that_appends_its_own(test_db) {
        // The test client connects from loopback: it plays the trusted proxy (HAProxy appends
        // its own X-Forwarded-For line after whatever the client sent).
        let app = TestApp::spawn_with(test_db, &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("WEBHOOK_ALLOWED_IPS", KICC_IP),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ]).await;
        let (no, pg_cno) = api_order(&app, "Ann", "ann@example.com").await;
        let notify = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
            }
            let request = app
                .client
                .post(format!("{}/webhooks/kicc/payment", app.address))
                .headers(headers)
                .json(&approval_body(&no, &pg_cno));
            async move {
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        // The stranger's forged line first, the proxy's line with the real peer second.
        let (status, ack) = notify(&[KICC_IP, STRANGER]).await;
        assert_eq!((status, ack["resCd"].as_str()), (403, Some("9403")), "{ack}");
        let stored = deliveries(&app);
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].source_ip.as_str(), stored[0].outcome.as_deref()), (STRANGER, Some("refused")));
        assert!(!stored[0].applied);
        // Both lines are kept with the delivery, in order.
        assert!(stored[0].headers.contains(&format!("{KICC_IP}, {STRANGER}")), "{}", stored[0].headers);
        // The proxy's one line naming KICC: allowed.
        let (status, ack) = notify(&[KICC_IP]).await;
        assert_eq!((status, ack["resCd"].as_str()), (200, Some("0000")), "{ack}");
        let stored = deliveries(&app);
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1].source_ip, KICC_IP);
        assert_ne!(stored[1].outcome.as_deref(), Some("refused"));
    }

    async fn private_pages_are_never_cached_and_the_shop_may_be(test_db) {
        let app = TestApp::spawn_with(test_db, &[("ADMIN_PASSWORD", crate::admin::PASSWORD)]).await;
        let cache_control = |r: &reqwest::Response| {
            r.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned())
        };
        // Before signing in: the sign-in page, and the redirect a dashboard page answers.
        for path in ["/admin/login", "/admin", "/admin/orders.csv"] {
            let r = app.get(path).await;
            assert_eq!(cache_control(&r).as_deref(), Some("no-store"), "{path} ({})", r.status());
        }
        app.sign_in().await;
        let (no, _) = api_order(&app, "Ann", "ann@example.com").await;
        for path in [
            "/admin".to_owned(),
            "/admin/login".to_owned(),
            "/admin/orders".to_owned(),
            "/admin/orders.csv".to_owned(),
            format!("/admin/orders/{no}"),
            "/admin/webhooks/unmatched".to_owned(),
            format!("/orders/{no}"),
            format!("/orders/{no}/qr.svg"),
            "/checkout".to_owned(),
            format!("/checkout/return?resCd=W002&shopOrderNo={no}"),
            format!("/api/orders/{no}"),
        ] {
            let r = app.get(&path).await;
            assert!(r.status().as_u16() < 500, "{path}: {}", r.status());
            assert_eq!(cache_control(&r).as_deref(), Some("no-store"), "{path} ({})", r.status());
        }
        for path in ["/", "/products/CERAMIC-MUG", "/static/style.css", "/api/products"] {
            let r = app.get(path).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_ne!(cache_control(&r).as_deref(), Some("no-store"), "{path}");
        }
    }

    async fn with_a_metrics_token_metrics_need_it(test_db) {
        let app = TestApp::spawn_with(test_db, &[("METRICS_TOKEN", "scrape-3f9a1c77e2")]).await;
        let metrics = |authorization: Option<&'static str>| {
            let mut request = app.client.get(format!("{}/metrics", app.address));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            request.send()
        };
        for refused in [None, Some("Bearer wrong"), Some("Bearer scrape-3f9a1c77e"), Some("scrape-3f9a1c77e2")] {
            let r = metrics(refused).await.unwrap();
            assert_eq!(r.status(), 401, "{refused:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let error: Value = r.json().await.unwrap();
            assert_eq!(error["error"]["code"], "unauthorized", "{error}");
        }
        let r = metrics(Some("Bearer scrape-3f9a1c77e2")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("# TYPE"));
    }

    async fn in_live_mode_without_a_token_metrics_answer_loopback_clients_only(test_db) {
        let live = [
            ("KICC_API_BASE", "http://127.0.0.1:9"),
            ("KICC_MALL_ID", kicc_checkout::config::SANDBOX_MALL_ID),
            ("KICC_SECRET_KEY", kicc_checkout::config::SANDBOX_SECRET_KEY),
            ("ADMIN_PASSWORD", "correct horse"),
            // Loopback plays the proxy, forwarding for clients elsewhere.
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ];
        let app = TestApp::spawn_with(test_db, &live).await;
        let from = |client: Option<&str>| {
            let mut request = app.client.get(format!("{}/metrics", app.address));
            if let Some(ip) = client {
                request = request.header("x-forwarded-for", ip);
            }
            request.send()
        };
        let r = from(Some(STRANGER)).await.unwrap();
        assert_eq!(r.status(), 403);
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["code"], "forbidden", "{error}");
        // Forged loopback on the left of the proxy's line is not believed either.
        assert_eq!(from(Some(&format!("127.0.0.1, {STRANGER}"))).await.unwrap().status(), 403);
        // The proxy itself, or a client it saw on loopback.
        assert_eq!(from(None).await.unwrap().status(), 200);
        assert_eq!(from(Some("127.0.0.1")).await.unwrap().status(), 200);
    }

    async fn a_formula_in_a_customer_name_is_exported_as_text(test_db) {
        let app = TestApp::spawn_with(test_db, &[("ADMIN_PASSWORD", crate::admin::PASSWORD)]).await;
        // Both pass the customer checks (KICC's byte limits, no control characters, no `|`).
        let (formula, _) = api_order(&app, "=1+2", "+1@example.com").await;
        let (link, _) = api_order(&app, "=HYPERLINK(\"x\")", "ann@example.com").await;
        let (plain, _) = api_order(&app, "Kim Minsu", "minsu@example.kr").await;
        app.sign_in().await;
        let r = app.get("/admin/orders.csv").await;
        assert_eq!(r.status(), 200);
        let csv = r.text().await.unwrap();
        let mut rows = csv::Reader::from_reader(csv.as_bytes());
        let headers = rows.headers().unwrap().clone();
        let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let (no, name, mail) = (column("shopOrderNo"), column("customerName"), column("customerMail"));
        let cells: Vec<(String, String, String)> = rows
            .records()
            .map(|r| r.unwrap())
            .map(|r| (r[no].to_owned(), r[name].to_owned(), r[mail].to_owned()))
            .collect();
        let row = |order: &str| cells.iter().find(|(n, _, _)| n == order).unwrap_or_else(|| panic!("{order} not in {csv}"));
        assert_eq!(row(&formula).1, "'=1+2");
        assert_eq!(row(&formula).2, "'+1@example.com");
        assert_eq!(row(&link).1, "'=HYPERLINK(\"x\")");
        assert_eq!((row(&plain).1.as_str(), row(&plain).2.as_str()), ("Kim Minsu", "minsu@example.kr"));
        // Amounts are untouched numbers.
        assert!(!csv.contains(",'2"), "{csv}");
    }

    async fn a_body_trickled_a_byte_a_second_is_answered_408_and_the_connection_closed(test_db) {
        let app = TestApp::spawn_with(test_db, &[
            ("REQUEST_BODY_TIMEOUT_SECS", "1"),
            ("WEBHOOK_ALLOWED_IPS", "127.0.0.1"),
        ]).await;
        let host = app.local_address.trim_start_matches("http://").to_owned();
        let (webhook, api, form, return_url) = tokio::join!(
            trickle(&host, "/webhooks/kicc/payment", "application/json"),
            trickle(&host, "/api/orders", "application/json"),
            trickle(&host, "/cart/items", "application/x-www-form-urlencoded"),
            trickle(&host, "/checkout/return", "application/x-www-form-urlencoded"),
        );
        for (what, reply) in [("webhook", &webhook), ("api", &api), ("form", &form), ("returnUrl", &return_url)] {
            assert!(reply.starts_with("HTTP/1.1 408"), "{what}: {reply}");
            assert!(reply.to_ascii_lowercase().contains("connection: close"), "{what}: {reply}");
        }
        // Each in its route's shape.
        assert!(webhook.contains(r#""resCd":"9408""#), "{webhook}");
        assert!(api.contains(r#""code":"request_timeout""#), "{api}");
        assert!(form.contains("<html") && return_url.contains("<html"), "{form}");
        // The webhook's trickle stored nothing (KICC resends a notification it saw refused).
        assert!(deliveries(&app).is_empty());
        // The app still answers at once, and a whole body in time is read as before.
        let r = app.client.post(format!("{}/api/orders", app.address))
            .json(&json!({"items": [], "currency": "KRW", "payMethod": "wechat"}))
            .send().await.unwrap();
        assert_ne!(r.status(), 408);
    }
}

/// Sends `path` a head announcing 100 body bytes, then one byte a second; returns everything
/// the app answered before it closed the connection. Panics if it neither answers nor closes
/// within 30 s (the body alone would take 100 s).
async fn trickle(host: &str, path: &str, content_type: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: 100\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Until the app closes (or resets) the connection.
    let mut reply = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            reply.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    dribble.abort();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        closed.is_ok(),
        "{path}: no answer and no close within 30 s; got {reply:?}"
    );
    reply
}
