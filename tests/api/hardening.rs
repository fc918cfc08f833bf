//! Hardening (issue 10) over real HTTP on both databases: security headers on every kind of
//! response, CSRF on the shop's forms, body limits and content types, the checkout rate limit,
//! escaped hostile input and inert SQL metacharacters.

use crate::helpers::TestApp;

/// The security headers every response must carry; returns the CSP.
fn assert_security_headers(response: &reqwest::Response, what: &str) -> String {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "same-origin", "{what}");
    let csp = header("content-security-policy");
    let directive = |name: &str| {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{what}: no {name} in {csp}"))
            .to_owned()
    };
    assert_eq!(directive("script-src"), "script-src 'self'", "{what}");
    assert_eq!(
        directive("frame-ancestors"),
        "frame-ancestors 'none'",
        "{what}"
    );
    assert!(
        directive("form-action").starts_with("form-action 'self'"),
        "{what}: {csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    csp
}

both_backends! {
    async fn every_kind_of_response_carries_the_security_headers(test_db) {
        let app = TestApp::spawn(test_db).await;
        let html = app.get("/products/CERAMIC-MUG").await;
        assert!(html.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let csp = assert_security_headers(&html, "product page");
        // The sandbox's return form posts to the returnUrl under PUBLIC_BASE_URL.
        assert!(csp.contains(&format!("form-action 'self' {}", app.address)), "{csp}");
        assert_security_headers(&app.get("/api/products").await, "JSON API");
        assert_security_headers(&app.get("/static/order.js").await, "static file");
        assert_security_headers(&app.get("/no/such/page").await, "404 page");
        assert_security_headers(&app.get("/admin/login").await, "dashboard sign-in");
        assert_security_headers(&app.get("/healthz").await, "health");
        assert_security_headers(&app.get("/sandbox/").await, "sandbox console");
        let webhook = app
            .client
            .post(format!("{}/webhooks/kicc/payment", app.address))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_security_headers(&webhook, "webhook ack");
        // A sandbox payment page (what the shopper sees at KICC's place in sandbox mode).
        let order: serde_json::Value = app
            .client
            .post(format!("{}/api/orders", app.address))
            .json(&serde_json::json!({
                "items": [{"sku": "CERAMIC-MUG", "quantity": 1}], "currency": "KRW",
                "payMethod": "wechat", "device": "mobile",
                "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = order["paymentPageUrl"].as_str().unwrap();
        let page = app.client.get(page).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_security_headers(&page, "sandbox payment page");
    }

    async fn pages_have_no_inline_script_or_style(test_db) {
        let app = TestApp::spawn(test_db).await;
        for path in ["/", "/products/CERAMIC-MUG", "/cart", "/admin/login", "/sandbox/", "/no/such/page"] {
            let html = app.get(path).await.text().await.unwrap().to_ascii_lowercase();
            for script in html.split("<script").skip(1) {
                let tag = script.split('>').next().unwrap();
                assert!(tag.contains("src="), "{path}: inline <script{tag}>");
            }
            assert!(!html.contains(" style=") && !html.contains("<style"), "{path}: inline style");
            assert!(!html.contains(" onclick=") && !html.contains(" onload=") && !html.contains("javascript:"), "{path}");
        }
    }

    async fn cookies_are_secure_when_the_public_base_is_https(test_db) {
        let mut app = TestApp::spawn_with(test_db, &[("PUBLIC_BASE_URL", "https://shop.example.com")]).await;
        // Behind a TLS proxy in real life: here, straight to the bound address.
        app.address = app.local_address.clone();
        let login = app.get("/admin/login").await;
        let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("Secure"), "{cookie}");
        assert!(login.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
        let added = app.post_form("/cart/items", &[("sku", "CERAMIC-MUG")]).await;
        let cookies: Vec<String> = added.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert!(!cookies.is_empty() && cookies.iter().all(|c| c.contains("Secure")), "{cookies:?}");
        // Over plain http: no Secure (the browser would drop the cookie) and no HSTS.
        let plain = TestApp::spawn(crate::helpers::TestDb::sqlite()).await;
        let login = plain.get("/admin/login").await;
        assert!(!login.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
        assert!(login.headers().get("strict-transport-security").is_none());
    }
}
