//! The webhook sender: POSTs spec-04/05 bodies to the merchant and resends with KICC's retry
//! policy (spec 04/05: up to 15 attempts; answer within 10 s) until HTTP 200 with JSON
//! `resCd` `"0000"`. Each delivery is one task; every attempt goes into the ledger.

use std::time::Duration;

use actix_web::web;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use super::SandboxState;
use super::ledger::{AttemptOutcome, AttemptPlan};
use crate::config::SANDBOX_MAX_BACKOFF_MS;
use crate::text::error_chain;

/// The wait after attempt `attempt` (1-based) failed: `first`, doubling per attempt, capped at
/// 10 minutes.
pub fn backoff_delay(first: Duration, attempt: u32) -> Duration {
    let cap = Duration::from_millis(SANDBOX_MAX_BACKOFF_MS);
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// Starts the deliveries in the background (on the current actix worker).
pub fn start(state: &web::Data<SandboxState>, ids: &[u64]) {
    for &id in ids {
        let state = state.clone();
        actix_web::rt::spawn(async move { deliver(state, id).await });
    }
}

/// Runs one delivery to its end: acked, or 15 attempts made.
pub async fn deliver(state: web::Data<SandboxState>, id: u64) {
    loop {
        let Some(plan) = state.ledger().begin_attempt(id) else {
            return;
        };
        let at = SandboxState::now();
        let started = std::time::Instant::now();
        let (outcome, acked, elapsed) = if plan.dropped {
            (AttemptOutcome::Dropped, false, None)
        } else {
            let (outcome, acked) = send(&state.http, &plan).await;
            (outcome, acked, Some(started.elapsed()))
        };
        let finished = state
            .ledger()
            .end_attempt(id, plan.number, &at, outcome, acked, elapsed);
        if finished {
            return;
        }
        tokio::time::sleep(backoff_delay(state.config.webhook_backoff, plan.number)).await;
    }
}

async fn send(client: &reqwest::Client, plan: &AttemptPlan) -> (AttemptOutcome, bool) {
    let response = client
        .post(&plan.url)
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(plan.body.clone())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            return (
                AttemptOutcome::Error {
                    error: error_chain(&e),
                },
                false,
            );
        }
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => {
            let acked = status == 200 && is_ack(&body);
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(1000).collect();
            (AttemptOutcome::Http { status, body: text }, acked)
        }
        Err(e) => (
            AttemptOutcome::Error {
                error: format!("HTTP {status}, body not read: {}", error_chain(&e)),
            },
            false,
        ),
    }
}

/// The merchant's ack (spec 04/05): JSON with `resCd` `"0000"`.
pub fn is_ack(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("resCd").and_then(Value::as_str).map(|c| c == "0000"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_delay_and_stops_at_ten_minutes() {
        let first = Duration::from_millis(2000);
        assert_eq!(backoff_delay(first, 1), Duration::from_secs(2));
        assert_eq!(backoff_delay(first, 2), Duration::from_secs(4));
        assert_eq!(backoff_delay(first, 8), Duration::from_secs(256));
        assert_eq!(backoff_delay(first, 9), Duration::from_secs(512));
        assert_eq!(backoff_delay(first, 10), Duration::from_secs(600));
        assert_eq!(backoff_delay(first, 14), Duration::from_secs(600));
        assert_eq!(backoff_delay(first, 40), Duration::from_secs(600));
        let one = Duration::from_millis(1);
        let total: Duration = (1..15).map(|n| backoff_delay(one, n)).sum();
        assert_eq!(total, Duration::from_millis(16_383), "14 waits at 1 ms");
    }

    #[test]
    fn only_a_0000_json_body_is_an_ack() {
        assert!(is_ack(
            br#"{"resCd":"0000","resMsg":"Success","pgCno":"1"}"#
        ));
        assert!(!is_ack(br#"{"resCd":"5001","resMsg":"Internal DB Error"}"#));
        assert!(!is_ack(br#"{"resCd":0}"#));
        assert!(!is_ack(b"OK"));
        assert!(!is_ack(b""));
    }
}
