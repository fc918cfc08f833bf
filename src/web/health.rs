//! `GET /healthz` (readiness: the database answers) and `GET /metrics` (Prometheus text).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// 200 with the backend when `SELECT 1` succeeds through the pool; 503 otherwise.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.db.backend().as_str();
    match state.db.ping().await {
        Ok(()) => {
            HttpResponse::Ok().json(json!({"status": "ok", "database": "ok", "backend": backend}))
        }
        Err(e) => {
            log::warn!("health check failed: {e}");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "database": "unreachable",
                "backend": backend,
            }))
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The job counts come from the database (shared by all instances); a scrape while the
    // database is down still answers, with what this instance knows.
    let compensations = state
        .db
        .run(crate::db::compensations::count_by_status)
        .await
        .unwrap_or_default();
    let snapshot = crate::web::metrics::Snapshot {
        compensations,
        unrecorded_cancels: state.checkout.unrecorded_cancels(),
        reconciler: state.reconciler.counters(),
        one_statement_acks: state.checkout.one_statement_acks(),
    };
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(state.metrics.render(&state.db, &snapshot))
}
