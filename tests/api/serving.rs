//! The app served over real HTTP on both backends: catalog, product, health, metrics, 404.

use crate::helpers::TestApp;

both_backends! {
    async fn catalog_product_health_and_metrics_are_served(test_db) {
        let app = TestApp::spawn(test_db).await;

        let health = app.get("/healthz").await;
        assert_eq!(health.status(), 200);
        let body: serde_json::Value = health.json().await.unwrap();
        assert_eq!(body["status"], "ok");

        let home = app.get("/").await;
        assert_eq!(home.status(), 200);
        assert!(home.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = home.text().await.unwrap();
        assert_eq!(html.matches("class=\"product-card\"").count(), 7, "{html}");
        assert!(html.contains("Ceramic Coffee Mug") && html.contains("₩12,000") && html.contains("$12.03"));
        assert!(html.contains("href=\"/products/CERAMIC-MUG\""));
        assert!(html.contains("badge-sandbox"), "sandbox mode shows its badge");

        let product = app.get("/products/CERAMIC-MUG").await;
        assert_eq!(product.status(), 200);
        assert!(product.text().await.unwrap().contains("<h1>Ceramic Coffee Mug</h1>"));

        let missing = app.get("/products/NO-SUCH-SKU").await;
        assert_eq!(missing.status(), 404);
        assert!(missing.text().await.unwrap().contains("<html"));
        let nowhere = app.get("/no/such/page").await;
        assert_eq!(nowhere.status(), 404);
        assert!(nowhere.text().await.unwrap().contains("Page not found"));

        let css = app.get("/static/style.css").await;
        assert_eq!(css.status(), 200);
        assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));

        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains(r#"http_requests_total{method="GET",route="/",status="200"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"http_requests_total{method="GET",route="/products/{sku}",status="404"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"route="unmatched",status="404""#), "{metrics}");
        assert!(metrics.contains("http_request_duration_seconds_bucket"));
        assert!(metrics.contains("db_pool_max_connections 8"));
        assert!(metrics.contains("db_pool_connections "));
        // The SQLite writer's profile (docs/BENCHMARKS.md); PostgreSQL has no writer.
        let sqlite = body["backend"] == "sqlite";
        for histogram in ["batch_size", "bodies_seconds", "commit_seconds"] {
            let bucket = format!("sqlite_writer_{histogram}_bucket");
            assert_eq!(metrics.contains(&bucket), sqlite, "{bucket}: {metrics}");
        }
    }
}

/// PostgreSQL gone under the running app: `/healthz` says 503, not 200. (SQLite cannot be taken
/// away from a process that holds its file open, so this one is PostgreSQL only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_when_postgres_is_gone() {
    let Some(test_db) = crate::helpers::TestDb::postgres() else {
        return;
    };
    let name = test_db.postgres_name().unwrap().to_owned();
    let app = TestApp::spawn(test_db).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let mut admin = <diesel::PgConnection as diesel::Connection>::establish(
        &crate::helpers::postgres_admin_url(),
    )
    .unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")),
        &mut admin,
    )
    .unwrap();
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
}
