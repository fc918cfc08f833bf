//! The merchant dashboard over real HTTP: nothing without a session, no POST without its CSRF
//! token, sign-in failures limited; cancels from the order page against the sandbox.

use kicc_checkout::db::{gateway_calls, orders};
use kicc_checkout::domain::ShopOrderNo;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb};

pub const PASSWORD: &str = "correct horse battery";

async fn app(test_db: TestDb) -> TestApp {
    TestApp::spawn_with(
        test_db,
        &[
            ("ADMIN_PASSWORD", PASSWORD),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
        ],
    )
    .await
}

fn hidden(html: &str, name: &str) -> String {
    crate::helpers::hidden_field(html, name).unwrap_or_default()
}

impl TestApp {
    /// Signs in; returns the session's CSRF token.
    pub async fn sign_in(&self) -> String {
        let form = self.get("/admin/login").await.text().await.unwrap();
        let token = hidden(&form, "csrf");
        let r = self
            .post_form(
                "/admin/login",
                &[
                    ("csrf", &token),
                    ("user", "admin"),
                    ("password", PASSWORD),
                    ("next", "/admin"),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/admin");
        let home = self.get("/admin").await.text().await.unwrap();
        hidden(&home, "csrf")
    }

    /// A paid ₩24,000 WeChat order.
    pub async fn paid_order(&self) -> (String, String) {
        let created: Value = self.client.post(format!("{}/api/orders", self.address))
            .json(&json!({"items": [{"sku": "CANVAS-TOTE", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                          "customer": {"name": "Dana", "email": "dana@example.com", "phone": "01012345678", "address": "Seoul"}}))
            .send().await.unwrap().json().await.unwrap();
        let no = created["shopOrderNo"].as_str().unwrap().to_owned();
        let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
        let page = self.press_pay(&pg_cno).await;
        let auth = hidden(&page, "authorizationId");
        self.post_form(
            "/checkout/return",
            &[
                ("resCd", "0000"),
                ("shopOrderNo", &no),
                ("authorizationId", &auth),
            ],
        )
        .await;
        self.until_status(&no, "paid").await;
        (no, pg_cno)
    }

    fn revise_calls(&self, no: &str) -> usize {
        let mut conn = self.db.get().unwrap();
        let order = orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(no).unwrap())
            .unwrap()
            .unwrap();
        gateway_calls::for_order(&mut conn, order.id)
            .unwrap()
            .iter()
            .filter(|c| c.api == "wechat_revise")
            .count()
    }
}

both_backends! {
    async fn nothing_without_a_session_and_no_post_without_its_token(test_db) {
        let app = app(test_db).await;
        let (no, _) = app.paid_order().await;
        for path in ["/admin", "/admin/orders", &format!("/admin/orders/{no}"), "/admin/orders.csv", "/admin/webhooks/unmatched"] {
            let r = app.get(path).await;
            assert_eq!(r.status(), 303, "{path}");
            assert!(r.headers()["location"].to_str().unwrap().starts_with("/admin/login?next="), "{path}");
        }
        for path in [format!("/admin/orders/{no}/cancel"), format!("/admin/orders/{no}/sync"), "/admin/logout".to_owned()] {
            let r = app.post_form(&path, &[("csrf", "x")]).await;
            assert_eq!(r.status(), 403, "{path}");
            // A page for a person, not plain text.
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
            assert!(r.text().await.unwrap().contains("Sign in first."), "{path}");
        }
        let csrf = app.sign_in().await;
        assert!(!csrf.is_empty());
        // Signed in, but without (or with a wrong) token: refused, nothing changes.
        assert_eq!(app.post_form(&format!("/admin/orders/{no}/cancel"), &[]).await.status(), 403);
        let forged = app.post_form(&format!("/admin/orders/{no}/cancel"), &[("csrf", "forged")]).await;
        assert_eq!(forged.status(), 403);
        assert!(forged.text().await.unwrap().contains("<html"), "the 403 is an HTML page");
        assert_eq!(app.post_form("/admin/logout", &[]).await.status(), 403);
        assert_eq!(app.revise_calls(&no), 0);
        assert_eq!(app.until_status(&no, "paid").await["status"], "paid");
        // The session cookie is HttpOnly and SameSite=Strict; signing out ends it.
        assert_eq!(app.post_form("/admin/logout", &[("csrf", &csrf)]).await.status(), 303);
        assert_eq!(app.get("/admin").await.status(), 303);
    }

    async fn wrong_passwords_are_limited(test_db) {
        let app = app(test_db).await;
        let form = app.get("/admin/login").await;
        let cookie = form.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        let mut token = hidden(&form.text().await.unwrap(), "csrf");
        for _ in 0..5 {
            let r = app.post_form("/admin/login", &[("csrf", &token), ("user", "admin"), ("password", "guess")]).await;
            assert_eq!(r.status(), 401);
            // Each answer is a fresh form with a fresh token.
            token = hidden(&r.text().await.unwrap(), "csrf");
        }
        // The sixth try is refused even with the right password.
        let token = hidden(&app.get("/admin/login").await.text().await.unwrap(), "csrf");
        let r = app.post_form("/admin/login", &[("csrf", &token), ("user", "admin"), ("password", PASSWORD)]).await;
        assert_eq!(r.status(), 429);
        assert!(r.text().await.unwrap().contains("Too many failed attempts"));
        // And a sign-in form posted without its token is refused outright.
        assert_eq!(app.post_form("/admin/login", &[("user", "admin"), ("password", PASSWORD)]).await.status(), 403);
    }

    async fn partial_then_full_cancel_from_the_dashboard(test_db) {
        let app = app(test_db).await;
        let (no, pg_cno) = app.paid_order().await;
        let csrf = app.sign_in().await;
        let page = app.get(&format!("/admin/orders/{no}")).await.text().await.unwrap();
        assert!(page.contains("Cancel payment") && page.contains("₩24,000"));

        let r = app.post_form(&format!("/admin/orders/{no}/cancel"), &[("csrf", &csrf), ("amount", "10,000")]).await;
        assert_eq!(r.status(), 303);
        let after = app.until_status(&no, "partially_cancelled").await;
        assert_eq!(after["cancelledAmount"], 10000);

        // The rest, clicked twice at once: one cancel is sent.
        let path = format!("/admin/orders/{no}/cancel");
        let form = [("csrf", csrf.as_str()), ("amount", "")];
        let (a, b) = tokio::join!(app.post_form(&path, &form), app.post_form(&path, &form));
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (303, 303));
        let flashes: Vec<String> = [a, b].iter().map(|r| r.headers()["location"].to_str().unwrap().to_owned()).collect();
        assert!(flashes.iter().any(|f| f.contains("Not+cancelled")), "{flashes:?}");
        let done = app.until_status(&no, "cancelled").await;
        assert_eq!(done["cancelledAmount"], 24000);
        assert_eq!(app.revise_calls(&no), 2, "one partial and one full cancel were sent, no more");
        let trade = app.trade(&pg_cno).await;
        assert_eq!((trade["statusCode"].as_str(), trade["cancelledAmount"].as_i64()), (Some("TS02"), Some(24000)));
        // The order page shows the whole story: both cancellation notifications included.
        let page = app.get(&format!("/admin/orders/{no}")).await.text().await.unwrap();
        assert_eq!(page.matches("notification cancel from").count(), 2, "{page}");
        assert!(page.contains("cancel_requested → partially_cancelled") && page.contains("cancel_requested → cancelled"));
        assert!(page.contains("KICC wechat_revise → accepted"));
        // The list finds it by pgCno, and the CSV carries it.
        let list = app.get(&format!("/admin/orders?q={pg_cno}")).await.text().await.unwrap();
        assert!(list.contains(&no));
        let csv = app.get("/admin/orders.csv?status=cancelled").await.text().await.unwrap();
        assert!(csv.starts_with("shopOrderNo,createdAt,status,payMethod,currency,amount,cancelledAmount,pgCno,customerName,customerMail"));
        assert!(csv.contains(&format!("{no},")) && csv.contains(",cancelled,wechat,KRW,24000,24000,"), "{csv}");
    }
}

both_backends! {
    fn keyset_pages_walk_every_order_once_in_both_orders(test_db) {
        use kicc_checkout::db::admin::{self as list, OrderFilter};
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        let made: Vec<i64> = (0..7).map(|_| crate::helpers::sample_order(&mut conn).id).collect();
        for oldest_first in [false, true] {
            let filter = OrderFilter { oldest_first, ..Default::default() };
            let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
            loop {
                let (page, next) = list::list(&mut conn, &filter, cursor, 3).unwrap();
                pages += 1;
                seen.extend(page.iter().map(|o| o.id));
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut expected = made.clone();
            if !oldest_first {
                expected.reverse();
            }
            assert_eq!((seen, pages), (expected, 3), "oldest_first = {oldest_first}");
        }
        // A cursor survives its URL form.
        let (_, next) = list::list(&mut conn, &OrderFilter::default(), None, 3).unwrap();
        let next = next.unwrap();
        assert_eq!(list::Cursor::decode(&next.encode()), Some(next));
    }
}
