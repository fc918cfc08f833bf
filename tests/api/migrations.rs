//! Migrations apply on both backends, create every table of DESIGN §6, and are idempotent.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use kicc_checkout::db::{AnyConnection, products};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut AnyConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

both_backends! {
    fn migrations_create_every_table_and_seed_the_catalog(test_db) {
        let db = test_db.connect(2);
        let mut conn = db.get().unwrap();
        for table in ["products", "orders", "order_items", "order_events", "gateway_calls",
                      "webhook_deliveries", "compensations", "app_keys"] {
            assert_eq!(count(&mut conn, &format!("SELECT COUNT(*) AS n FROM {table}")),
                       if table == "products" { 7 } else { 0 }, "{table}");
        }
        let catalog = products::list_active(&mut conn).unwrap();
        assert_eq!(catalog.len(), 7);
        let mug = catalog.iter().find(|p| p.sku == "CERAMIC-MUG").unwrap();
        assert_eq!(mug.price_krw.to_string(), "₩12,000");
        assert_eq!(mug.price_usd.to_string(), "$12.03");
        // Every catalog name is a valid goodsName (English, ≤ 100 bytes: spec 01).
        for p in &catalog {
            kicc_checkout::domain::GoodsName::parse(&p.name).unwrap();
        }
        // A second run finds nothing to do.
        assert!(db.migrate().unwrap().is_empty());
    }

    fn indexes_later_features_need_exist(test_db) {
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let sql = if test_db.is_postgres() {
            "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'index'"
        };
        let names: Vec<String> =
            diesel::sql_query(sql).load::<Name>(&mut *conn).unwrap().into_iter().map(|n| n.name).collect();
        for index in ["orders_shop_order_no", "orders_pg_cno", "orders_status_created",
                      "gateway_calls_shop_transaction_id", "webhook_deliveries_applied_once",
                      "compensations_due", "compensations_cancel_pg_cno"] {
            assert!(names.iter().any(|n| n == index), "missing index {index} in {names:?}");
        }
    }

    fn constraints_protect_the_data(test_db) {
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        let order = crate::helpers::sample_order(&mut conn);
        // Foreign keys are enforced (SQLite needs PRAGMA foreign_keys on every connection).
        let orphan = diesel::sql_query(
            "INSERT INTO order_events (order_id, event, cause, created_at) \
             VALUES (999999, 'x', 'x', '2026-01-01 00:00:00')").execute(&mut *conn);
        assert!(orphan.is_err(), "an event for a missing order was accepted");
        // Unknown statuses and over-cancelling are refused by the database itself.
        let bad_status = diesel::sql_query(format!(
            "UPDATE orders SET status = 'shipped' WHERE id = {}", order.id)).execute(&mut *conn);
        assert!(bad_status.is_err());
        let over_cancel = diesel::sql_query(format!(
            "UPDATE orders SET cancelled_amount = amount + 1 WHERE id = {}", order.id)).execute(&mut *conn);
        assert!(over_cancel.is_err());
        // Two orders cannot share a shop order number.
        let duplicate = diesel::sql_query(format!(
            "INSERT INTO orders (shop_order_no, status, pay_method, currency, amount, goods_name, \
             customer_id, customer_name, customer_mail, customer_contact_no, customer_addr, created_at, updated_at) \
             VALUES ('{}', 'created', 'wechat', 'KRW', 1000, 'x', 'x', 'x', 'x', 'x', 'x', \
             '2026-01-01 00:00:00', '2026-01-01 00:00:00')", order.shop_order_no)).execute(&mut *conn);
        assert!(duplicate.is_err());
    }
}

/// SQLite: WAL, a busy timeout and foreign keys on every pooled connection.
#[test]
fn sqlite_connections_use_wal_busy_timeout_and_foreign_keys() {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    #[derive(QueryableByName)]
    struct Timeout {
        #[diesel(sql_type = BigInt)]
        timeout: i64,
    }
    #[derive(QueryableByName)]
    struct Fk {
        #[diesel(sql_type = BigInt)]
        foreign_keys: i64,
    }
    let test_db = crate::helpers::TestDb::sqlite();
    let db = test_db.connect(3);
    let mut conns: Vec<_> = (0..3).map(|_| db.get().unwrap()).collect();
    for conn in &mut conns {
        let mode = diesel::sql_query("PRAGMA journal_mode")
            .get_result::<Mode>(&mut **conn)
            .unwrap();
        assert_eq!(mode.journal_mode, "wal");
        let timeout = diesel::sql_query("PRAGMA busy_timeout")
            .get_result::<Timeout>(&mut **conn)
            .unwrap();
        assert_eq!(timeout.timeout, 5000);
        let fk = diesel::sql_query("PRAGMA foreign_keys")
            .get_result::<Fk>(&mut **conn)
            .unwrap();
        assert_eq!(fk.foreign_keys, 1);
    }
}

/// A pooled PostgreSQL connection that died (a server restart, a failover, an administrator)
/// is replaced. One idle past the pool's bypass window is tested when handed out, so nobody sees
/// it fail; one handed out untested (it was in use moments before) fails that one use and is
/// dropped, so the next use gets a live connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_postgres_connection_is_found_and_replaced() {
    let Some(test_db) = crate::helpers::TestDb::postgres() else {
        return;
    };
    let db = test_db.connect(1);
    let pid = || db.run(|conn| Ok(count(conn, "SELECT CAST(pg_backend_pid() AS BIGINT) AS n")));
    let try_pid = || {
        db.run(|conn| {
            Ok(
                diesel::sql_query("SELECT CAST(pg_backend_pid() AS BIGINT) AS n")
                    .get_result::<Count>(conn)
                    .map(|c| c.n),
            )
        })
    };
    let kill = |pid: i64| {
        let mut admin = <diesel::PgConnection as diesel::Connection>::establish(
            &crate::helpers::postgres_admin_url(),
        )
        .unwrap();
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
    };

    let first = pid().await.unwrap();
    kill(first);
    // Idle past the window: tested at check-out, found dead, replaced.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let second = pid().await.unwrap();
    assert_ne!(second, first);

    kill(second);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Within the window it may be handed out untested; then this one use fails…
    if let Ok(same) = try_pid().await.unwrap() {
        assert_ne!(same, second, "a dead backend cannot answer");
    }
    // …and the next one is on a new connection.
    let third = pid().await.unwrap();
    assert_ne!(third, second);
    assert_eq!(pid().await.unwrap(), third);
}
