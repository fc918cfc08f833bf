//! `GET /healthz` (readiness: the database answers) and `GET /metrics` (Prometheus text, behind
//! `METRICS_TOKEN` when set; in live mode without it, for loopback only).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use secrecy::ExposeSecret;
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

/// The refusal, if this request may not read `/metrics`. Who may: with `METRICS_TOKEN` set, a
/// request bearing it (compared in constant time); without it, anyone in sandbox mode, and in
/// live mode only a loopback client (the socket's peer, or the address a trusted proxy
/// forwarded). Refusals use the API's JSON error shape.
fn metrics_refusal(state: &AppState, req: &HttpRequest) -> Option<HttpResponse> {
    use super::api::ApiError;
    if let Some(token) = &state.config.metrics_token {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim();
        let expected = token.expose_secret().as_bytes();
        if bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected)) {
            return None;
        }
        let mut refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs Authorization: Bearer with METRICS_TOKEN",
            None,
        )
        .error_response();
        refused.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer"),
        );
        return Some(refused);
    }
    if state.config.is_sandbox() {
        return None;
    }
    let client = super::client_ip::of_request(req, &state.config.trusted_proxies);
    if client.to_canonical().is_loopback() {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "/metrics answers only loopback clients in live mode unless METRICS_TOKEN is set",
            None,
        )
        .error_response(),
    )
}

pub async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = metrics_refusal(&state, &req) {
        return refused;
    }
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
