//! Hardening (issue 10) over real HTTP on both databases: security headers on every kind of
//! response, CSRF on the shop's forms, body limits and content types, the checkout rate limit,
//! escaped hostile input and inert SQL metacharacters.

use crate::helpers::TestApp;

fn order_count(app: &TestApp) -> i64 {
    use diesel::RunQueryDsl;
    let mut conn = app.db.get().unwrap();
    diesel::QueryDsl::count(kicc_checkout::db::schema::orders::table)
        .get_result(&mut *conn)
        .unwrap()
}

/// The checkout form's fields for a valid order (without the CSRF token).
const CHECKOUT: &[(&str, &str)] = &[
    ("currency", "KRW"),
    ("name", "Kim Minsu"),
    ("email", "minsu@example.kr"),
    ("phone", "01012345678"),
    ("address", "Seoul"),
    ("pay_method", "wechat"),
    ("device", "pc"),
];

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
        // The shop's token cookie is Secure and __Host- prefixed. A client keeps Secure cookies
        // for https, so this one is sent back by hand, as a browser behind TLS would.
        let page = app.get("/products/CERAMIC-MUG").await;
        let set = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.starts_with("__Host-shop_csrf=") && set.contains("Secure") && set.contains("Path=/"), "{set}");
        let token = crate::helpers::hidden_field(&page.text().await.unwrap(), "csrf").unwrap();
        let added = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/cart/items", app.address))
            .header("cookie", set.split(';').next().unwrap())
            .form(&[("sku", "CERAMIC-MUG"), ("csrf", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 303);
        let cart = added.headers()["set-cookie"].to_str().unwrap();
        assert!(cart.starts_with("cart=") && cart.contains("Secure"), "{cart}");
        // Over plain http: no Secure (the browser would drop the cookie) and no HSTS.
        let plain = TestApp::spawn(crate::helpers::TestDb::sqlite()).await;
        let login = plain.get("/admin/login").await;
        assert!(!login.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
        assert!(login.headers().get("strict-transport-security").is_none());
    }
}

both_backends! {
    async fn shop_forms_without_this_browsers_csrf_token_are_refused_and_change_nothing(test_db) {
        let app = TestApp::spawn(test_db).await;
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG"), ("quantity", "2")]).await;
        let cart_before = app.get("/cart").await.text().await.unwrap();
        assert!(cart_before.contains("CERAMIC-MUG"));
        // Another browser's token (valid there, with its own cookie) is no good here.
        let stranger = TestApp::spawn(crate::helpers::TestDb::sqlite()).await;
        let foreign = stranger.csrf_token().await;
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("/cart/items", vec![("sku", "STICKER-PACK")]),
            ("/cart/items", vec![("sku", "STICKER-PACK"), ("csrf", "")]),
            ("/cart/items", vec![("sku", "STICKER-PACK"), ("csrf", "forged")]),
            ("/cart/items", vec![("sku", "STICKER-PACK"), ("csrf", &foreign)]),
            ("/cart/items/CERAMIC-MUG/remove", vec![]),
            ("/cart/items/CERAMIC-MUG/remove", vec![("csrf", &foreign)]),
            ("/checkout", CHECKOUT.to_vec()),
            ("/checkout", [CHECKOUT, &[("csrf", &foreign)]].concat()),
        ];
        for (path, form) in cases {
            let response = app.post_form(path, &form).await;
            assert_eq!(response.status(), 403, "{path} {form:?}");
            assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
            let html = response.text().await.unwrap();
            assert!(html.contains("<html") && html.contains("Reload the page and try again"), "{html}");
        }
        // Nothing changed: the cart is as it was and no order was made.
        assert_eq!(app.get("/cart").await.text().await.unwrap(), cart_before);
        assert_eq!(order_count(&app), 0);
        // With the token the same forms work.
        assert_eq!(app.post_shop_form("/cart/items", &[("sku", "STICKER-PACK")]).await.status(), 303);
        assert_eq!(app.post_shop_form("/checkout", CHECKOUT).await.status(), 303);
        assert_eq!(order_count(&app), 1);
    }

    async fn a_first_visit_gets_a_token_cookie_and_the_api_needs_none(test_db) {
        let app = TestApp::spawn(test_db).await;
        let page = app.get("/products/CERAMIC-MUG").await;
        let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.starts_with("shop_csrf=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        // The same browser keeps its token.
        let html = page.text().await.unwrap();
        assert_eq!(crate::helpers::hidden_field(&html, "csrf"), Some(app.csrf_token().await));
        // The JSON API sets no cookie and needs no token.
        let api = app.get("/api/products").await;
        assert!(api.headers().get("set-cookie").is_none());
        let created = reqwest::Client::new()
            .post(format!("{}/api/orders", app.address))
            .json(&serde_json::json!({
                "items": [{"sku": "CERAMIC-MUG", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert!(created.headers().get("set-cookie").is_none());
    }
}

/// The body of an API error.
async fn api_error(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    (status, response.json().await.unwrap())
}

both_backends! {
    async fn oversized_bodies_get_413_in_the_shape_of_the_route(test_db) {
        let app = TestApp::spawn(test_db).await;
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG")]).await;
        let cart_before = app.get("/cart").await.text().await.unwrap();
        let huge = "x".repeat(70 * 1024);
        // Shop forms: an HTML page, nothing changed.
        for path in ["/cart/items", "/checkout", "/cart/items/CERAMIC-MUG/remove", "/checkout/return"] {
            let response = app.post_shop_form(path, &[("sku", "STICKER-PACK"), ("name", &huge)]).await;
            assert_eq!(response.status(), 413, "{path}");
            let html = response.text().await.unwrap();
            assert!(html.contains("<html") && html.contains("We accept at most"), "{path}: {html}");
        }
        assert_eq!(app.get("/cart").await.text().await.unwrap(), cart_before);
        assert_eq!(order_count(&app), 0);
        // The API: its JSON error.
        let body = serde_json::json!({"items": [], "currency": "KRW", "payMethod": "wechat",
            "customer": {"name": huge, "email": "", "phone": "", "address": ""}});
        let (status, error) = api_error(app.client.post(format!("{}/api/orders", app.address)).json(&body).send().await.unwrap()).await;
        assert_eq!((status, error["error"]["code"].as_str()), (413, Some("payload_too_large")), "{error}");
        // Webhooks: KICC's shape, their own code (9003).
        let response = app.client.post(format!("{}/webhooks/kicc/payment", app.address))
            .header("content-type", "application/json")
            .body(format!("{{\"pgCno\":\"{huge}\"}}"))
            .send().await.unwrap();
        assert_eq!(response.status(), 413);
        let ack: serde_json::Value = response.json().await.unwrap();
        assert_eq!(ack["resCd"], "9003", "{ack}");
        assert!(ack["resMsg"].is_string());
        assert_eq!(order_count(&app), 0);
    }

    async fn wrong_content_types_get_415_and_malformed_bodies_400(test_db) {
        let app = TestApp::spawn(test_db).await;
        let order = r#"{"items":[{"sku":"CERAMIC-MUG","quantity":1}],"currency":"KRW","payMethod":"wechat",
            "customer":{"name":"Kim","email":"kim@example.com","phone":"01012345678","address":"Seoul"}}"#;
        let post_api = |content_type: Option<&str>, body: &str| {
            let mut request = app
                .client
                .post(format!("{}/api/orders", app.address))
                .body(body.to_owned());
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            request.send()
        };
        for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("text/json"), Some("application/vnd.api+json")] {
            let (status, error) = api_error(post_api(content_type, order).await.unwrap()).await;
            assert_eq!((status, error["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{content_type:?}: {error}");
        }
        let (status, error) = api_error(post_api(Some("application/json"), "{\"items\": [").await.unwrap()).await;
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("bad_request")), "{error}");
        assert_eq!(order_count(&app), 0);
        let created = post_api(Some("application/json; charset=utf-8"), order).await.unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(order_count(&app), 1);

        // Webhooks: KICC's shape with their own code (9002).
        let response = app.client.post(format!("{}/webhooks/kicc/payment", app.address))
            .header("content-type", "text/plain")
            .body(r#"{"pgCno":"PG1"}"#)
            .send().await.unwrap();
        assert_eq!(response.status(), 415);
        let ack: serde_json::Value = response.json().await.unwrap();
        assert_eq!(ack["resCd"], "9002", "{ack}");

        // Shop forms: an HTML page, never actix's plain text.
        let token = app.csrf_token().await;
        let json_form = app.client.post(format!("{}/cart/items", app.address))
            .json(&serde_json::json!({"sku": "CERAMIC-MUG", "csrf": token}))
            .send().await.unwrap();
        assert_eq!(json_form.status(), 415);
        assert!(json_form.text().await.unwrap().contains("<html"));
        let no_sku = app.post_shop_form("/cart/items", &[("quantity", "1")]).await;
        assert_eq!(no_sku.status(), 400);
        assert!(no_sku.text().await.unwrap().contains("The form could not be read"));
        let query = app.get("/cart?currency=KRW&currency=USD").await;
        assert_eq!(query.status(), 400);
        assert!(query.text().await.unwrap().contains("<html"));
    }
}

both_backends! {
    async fn checkouts_over_the_limit_get_429_with_retry_after(test_db) {
        let app = TestApp::spawn_with(test_db, &[("CHECKOUT_RATE_LIMIT", "3")]).await;
        let api_order = |forwarded_for: Option<&'static str>| {
            let mut request = app.client.post(format!("{}/api/orders", app.address)).json(&serde_json::json!({
                "items": [{"sku": "STICKER-PACK", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
            }));
            if let Some(ip) = forwarded_for {
                request = request.header("x-forwarded-for", ip);
            }
            request.send()
        };
        // Form and API share the address's budget: 2 + 1, then both refused.
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG")]).await;
        for _ in 0..2 {
            assert_eq!(app.post_shop_form("/checkout", CHECKOUT).await.status(), 303);
        }
        assert_eq!(api_order(None).await.unwrap().status(), 201);
        let page = app.post_shop_form("/checkout", CHECKOUT).await;
        assert_eq!(page.status(), 429);
        let wait: u64 = page.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        let html = page.text().await.unwrap();
        assert!(html.contains("<html") && html.contains("Please wait"), "{html}");
        let api = api_order(None).await.unwrap();
        assert_eq!(api.status(), 429);
        assert!(api.headers().contains_key("retry-after"));
        let (_, error) = api_error(api).await;
        assert_eq!(error["error"]["code"], "too_many_requests");
        // A made-up X-Forwarded-For from a peer that is no trusted proxy changes nothing.
        assert_eq!(api_order(Some("203.0.113.9")).await.unwrap().status(), 429);
        assert_eq!(order_count(&app), 3);
        // The cart, the order pages and the returnUrl are not limited.
        assert_eq!(app.get("/cart").await.status(), 200);
    }

    async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(test_db) {
        let app = TestApp::spawn_with(test_db, &[("CHECKOUT_RATE_LIMIT", "1"), ("TRUSTED_PROXIES", "127.0.0.1")]).await;
        let from = |client: &'static str| {
            app.client.post(format!("{}/api/orders", app.address))
                .header("x-forwarded-for", client)
                .json(&serde_json::json!({
                    "items": [{"sku": "STICKER-PACK", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                    "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
                }))
                .send()
        };
        assert_eq!(from("198.51.100.1").await.unwrap().status(), 201);
        assert_eq!(from("198.51.100.1").await.unwrap().status(), 429);
        assert_eq!(from("198.51.100.2").await.unwrap().status(), 201);
        // A client-supplied left part is not believed: the proxy's rightmost entry counts.
        assert_eq!(from("198.51.100.9, 198.51.100.2").await.unwrap().status(), 429);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_log_shows_the_configuration_with_secrets_masked() {
    let capture = crate::helpers::capture_logs();
    let secrets = [
        ("KICC_SECRET_KEY", "msgauth-key-5f1e0c"),
        ("KICCPAY_SECRET_KEY", "kiccpay-hmac-9a8b7c"),
        (
            "KICCPAY_AES_KEY",
            "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        ),
        ("KICCPAY_AES_IV", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        ("ADMIN_PASSWORD", "correct-horse-battery-staple"),
    ];
    let mut vars = secrets.to_vec();
    vars.push(("CHECKOUT_RATE_LIMIT", "45"));
    let app = TestApp::spawn_with(crate::helpers::TestDb::sqlite(), &vars).await;
    // The app works with them (the sandbox shares the merchant's keys): a KICC Pay order.
    let order: serde_json::Value = app
        .client
        .post(format!("{}/api/orders", app.address))
        .json(&serde_json::json!({
            "items": [{"sku": "STICKER-PACK", "quantity": 1}], "currency": "KRW", "payMethod": "kiccpay",
            "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(order["shopOrderNo"].is_string(), "{order}");

    let logged = capture.text();
    let line = logged
        .lines()
        .find(|l| l.starts_with("INFO ") && l.contains("configuration: mode=sandbox"))
        .unwrap_or_else(|| panic!("no configuration line at info level in {logged}"));
    for (var, _) in secrets {
        assert!(
            line.contains(&format!("{var}=***")),
            "{var} not masked in {line}"
        );
    }
    assert!(line.contains("CHECKOUT_RATE_LIMIT=45/min"), "{line}");
    assert!(
        line.contains(&format!("PUBLIC_BASE_URL={}", app.address)),
        "{line}"
    );
    for (var, secret) in secrets {
        assert!(!logged.contains(secret), "{var}'s value is in the log");
    }
}

const XSS: [&str; 2] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
];

/// No payload appears raw (as markup); each appears escaped (as text).
fn assert_escaped(html: &str, what: &str) {
    for payload in XSS {
        assert!(!html.contains(payload), "{what}: {payload} raw in the page");
    }
    assert!(
        !html.contains("<script>alert") && !html.contains("<img src=x"),
        "{what}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
            || html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{what}: the payload is not shown as text"
    );
}

/// The dashboard's order list searched for `q`.
fn search_url(app: &TestApp, q: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    format!("{}/admin/orders?q={q}", app.address)
}

/// Rows of the dashboard's order list.
fn rows(html: &str) -> usize {
    html.matches("<tr class=\"status-").count()
}

both_backends! {
    async fn hostile_text_comes_back_escaped_everywhere_it_is_shown(test_db) {
        let app = TestApp::spawn_with(test_db, &[("ADMIN_PASSWORD", crate::admin::PASSWORD)]).await;
        // The checkout form shown again with its errors keeps the values, escaped.
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG")]).await;
        let refused = app.post_shop_form("/checkout", &[
            ("currency", "KRW"), ("name", XSS[0]), ("email", XSS[1]), ("phone", "01012345678"),
            ("address", XSS[1]), ("pay_method", "wechat"),
        ]).await;
        assert_eq!(refused.status(), 422);
        assert_escaped(&refused.text().await.unwrap(), "checkout form");
        assert_eq!(order_count(&app), 0);

        // An order whose stored name and address are hostile (as if imported: the form's
        // 20-byte limit keeps these payloads out of new orders).
        let created: serde_json::Value = app.client.post(format!("{}/api/orders", app.address))
            .json(&serde_json::json!({"items": [{"sku": "CERAMIC-MUG", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                "customer": {"name": "Placeholder", "email": "x@example.com", "phone": "01012345678", "address": "Seoul"}}))
            .send().await.unwrap().json().await.unwrap();
        let no = created["shopOrderNo"].as_str().unwrap().to_owned();
        {
            use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
            use kicc_checkout::db::schema::orders;
            let mut conn = app.db.get().unwrap();
            diesel::update(orders::table.filter(orders::shop_order_no.eq(&no)))
                .set((
                    orders::customer_name.eq(XSS[0]),
                    orders::customer_addr.eq(XSS[1]),
                    // The goods name comes from the catalog; a hostile one is shown escaped too.
                    orders::goods_name.eq(XSS[1]),
                ))
                .execute(&mut *conn)
                .unwrap();
        }
        let order_page = app.get(&format!("/orders/{no}")).await;
        assert_eq!(order_page.status(), 200);
        let html = order_page.text().await.unwrap();
        assert!(!html.contains(XSS[0]) && !html.contains(XSS[1]), "order page");
        assert!(html.contains("&#34;&#62;&#60;img src=x onerror=alert(1)&#62;"), "the goods name is shown, escaped: {html}");

        app.sign_in().await;
        let admin_order = app.get(&format!("/admin/orders/{no}")).await.text().await.unwrap();
        assert_escaped(&admin_order, "dashboard order page");
        let list = app.get("/admin/orders").await.text().await.unwrap();
        assert_escaped(&list, "dashboard order list");
        // The search field reflects what was searched, escaped.
        for payload in XSS {
            let search = app.client.get(search_url(&app, payload)).send().await.unwrap();
            assert_eq!(search.status(), 200);
            let html = search.text().await.unwrap();
            assert!(!html.contains(payload), "search field: {payload} raw");
            assert!(!html.contains("<script>alert") && !html.contains("<img src=x"));
        }
        let search = app.client.get(search_url(&app, XSS[0])).send().await.unwrap();
        let html = search.text().await.unwrap();
        assert_escaped(&html, "search for the payload");
        assert_eq!(rows(&html), 1, "the hostile name is found as text");
    }

    async fn sql_metacharacters_in_the_dashboard_search_are_only_text(test_db) {
        let app = TestApp::spawn_with(test_db, &[("ADMIN_PASSWORD", crate::admin::PASSWORD)]).await;
        for name in ["Kim Minsu", "Lee 50%_off\\", "O'Brien", "Park Jiwoo"] {
            let r = app.client.post(format!("{}/api/orders", app.address))
                .json(&serde_json::json!({"items": [{"sku": "STICKER-PACK", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                    "customer": {"name": name, "email": "buyer@example.com", "phone": "01012345678", "address": "Seoul"}}))
                .send().await.unwrap();
            assert_eq!(r.status(), 201, "{name}");
        }
        app.sign_in().await;
        let search = |q: &'static str| {
            app.client.get(search_url(&app, q)).send()
        };
        // (query, rows): metacharacters match themselves, never everything, never an error.
        for (q, expected) in [
            ("' OR 1=1 --", 0),
            ("' OR '1'='1", 0),
            ("x'; DROP TABLE orders; --", 0),
            ("%", 1),
            ("_", 1),
            ("\\", 1),
            ("50%_off\\", 1),
            ("%%", 0),
            ("__", 0),
            ("'", 1),
            ("O'Brien", 1),
            ("Kim", 1),
        ] {
            let response = search(q).await.unwrap();
            assert_eq!(response.status(), 200, "{q}");
            let html = response.text().await.unwrap();
            assert_eq!(rows(&html), expected, "search {q:?}");
        }
        // Everything is still there.
        assert_eq!(order_count(&app), 4);
        assert_eq!(rows(&search("").await.unwrap().text().await.unwrap()), 4);
        assert_eq!(rows(&app.get("/admin/orders?q=%25%27%20OR%201%3D1%20--&status=paid%27--").await.text().await.unwrap()), 0);
    }
}
