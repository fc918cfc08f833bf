//! The cart over real HTTP: add, change quantity, remove, priced from the database in either
//! currency; bad input gets a clear page and changes nothing.

use crate::helpers::TestApp;

fn cart_total(html: &str) -> String {
    let start = html.find("id=\"cart-total\">").expect("a total") + "id=\"cart-total\">".len();
    html[start..].split('<').next().unwrap().to_owned()
}

both_backends! {
    async fn add_change_remove_and_price_in_both_currencies(test_db) {
        let app = TestApp::spawn(test_db).await;
        let empty = app.get("/cart").await.text().await.unwrap();
        assert!(empty.contains("Your cart is empty"));

        let added = app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG"), ("quantity", "2")]).await;
        assert_eq!(added.status(), 303);
        assert_eq!(added.headers()["location"], "/cart");
        let cookie = added.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        app.post_shop_form("/cart/items", &[("sku", "STICKER-PACK")]).await;
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG"), ("quantity", "1")]).await;

        let html = app.get("/cart").await.text().await.unwrap();
        // 3 × ₩12,000 + ₩1,000
        assert_eq!(cart_total(&html), "₩37,000");
        let usd = app.get("/cart?currency=USD").await.text().await.unwrap();
        // 3 × $12.03 + $0.77
        assert_eq!(cart_total(&usd), "$36.86");

        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG"), ("quantity", "1"), ("mode", "set")]).await;
        assert_eq!(cart_total(&app.get("/cart").await.text().await.unwrap()), "₩13,000");
        app.post_shop_form("/cart/items/STICKER-PACK/remove", &[]).await;
        assert_eq!(cart_total(&app.get("/cart").await.text().await.unwrap()), "₩12,000");
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG"), ("quantity", "0"), ("mode", "set")]).await;
        assert!(app.get("/cart").await.text().await.unwrap().contains("Your cart is empty"));
    }

    async fn bad_input_is_refused_with_a_page(test_db) {
        let app = TestApp::spawn(test_db).await;
        app.post_shop_form("/cart/items", &[("sku", "CERAMIC-MUG")]).await;
        for (form, status) in [
            (vec![("sku", "NO-SUCH-THING")], 404),
            (vec![("sku", "CERAMIC-MUG"), ("quantity", "-1")], 400),
            (vec![("sku", "CERAMIC-MUG"), ("quantity", "100")], 400),
            (vec![("sku", "CERAMIC-MUG"), ("quantity", "2.5")], 400),
            (vec![("sku", "CERAMIC-MUG"), ("quantity", "0")], 400),
        ] {
            let response = app.post_shop_form("/cart/items", &form).await;
            assert_eq!(response.status(), status, "{form:?}");
            let html = response.text().await.unwrap();
            assert!(html.contains("<html"), "{html}");
        }
        // The cart is as it was.
        assert_eq!(cart_total(&app.get("/cart").await.text().await.unwrap()), "₩12,000");
    }
}
