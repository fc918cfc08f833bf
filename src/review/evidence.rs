//! A scenario's evidence: what the app recorded about each order it touched (timeline, gateway
//! calls, webhook deliveries) and the gateway's own view of the trade, secrets left out.

use serde_json::Value;

use super::env::{Env, Instance, Step};
use super::report::{CallRow, DeliveryRow, EventRow, OrderEvidence};
use crate::db::gateway_calls::GatewayCall;
use crate::db::webhook_deliveries::Delivery;
use crate::db::{DbError, gateway_calls, orders, webhook_deliveries};
use crate::domain::{Order, ShopOrderNo, TimelineEntry};

/// Everything the app's database holds about one order.
pub struct Records {
    pub order: Order,
    pub timeline: Vec<TimelineEntry>,
    pub calls: Vec<GatewayCall>,
    pub deliveries: Vec<Delivery>,
}

impl Records {
    /// How many times the order entered `status`.
    pub fn entered(&self, status: &str) -> usize {
        self.timeline
            .iter()
            .filter(|t| t.to_status.is_some_and(|s| s.as_str() == status))
            .count()
    }

    /// The API names of its gateway calls, in order.
    pub fn apis(&self) -> Vec<&str> {
        self.calls.iter().map(|c| c.api.as_str()).collect()
    }

    /// The events on its timeline, in order.
    pub fn events(&self) -> Vec<&str> {
        self.timeline.iter().map(|t| t.event.as_str()).collect()
    }

    /// Every cause on the timeline, one per line.
    pub fn causes(&self) -> String {
        self.timeline
            .iter()
            .map(|t| t.cause.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The recorded (redacted) request body of each call to `api`, parsed.
    pub fn requests(&self, api: &str) -> Vec<Value> {
        self.calls
            .iter()
            .filter(|c| c.api == api)
            .map(|c| serde_json::from_str(&c.request_body).unwrap_or(Value::Null))
            .collect()
    }
}

pub async fn records(env: &Env, no: &str) -> Step<Records> {
    let no = ShopOrderNo::parse(no).map_err(|e| format!("order number {no}: {e}"))?;
    env.db
        .run(move |conn| {
            let order = orders::find_by_shop_order_no(conn, &no)?.ok_or(DbError::NotFound)?;
            let timeline = orders::timeline(conn, order.id)?;
            let calls = gateway_calls::for_order(conn, order.id)?;
            let deliveries =
                webhook_deliveries::about_order(conn, order.id, order.pg_cno.as_deref())?;
            Ok::<_, DbError>(Records {
                order,
                timeline,
                calls,
                deliveries,
            })
        })
        .await
        .map_err(|e| format!("reading the order's records: {e}"))
}

pub async fn collect(env: &Env, orders: &[(Instance, String)]) -> Vec<OrderEvidence> {
    let mut out = Vec::new();
    for (instance, no) in orders {
        let Ok(r) = records(env, no).await else {
            continue;
        };
        let trade_id = r.order.pg_cno.clone().unwrap_or_else(|| no.clone());
        let gateway = env.trade(&trade_id).await.ok().map(|mut trade| {
            if let Some(map) = trade.as_object_mut() {
                // The authorizationId is a bearer secret; the customer's details are not evidence.
                for key in ["authorizationId", "customerInfo"] {
                    map.remove(key);
                }
            }
            serde_json::to_string_pretty(&trade).unwrap_or_default()
        });
        out.push(OrderEvidence {
            shop_order_no: no.clone(),
            instance: match instance {
                Instance::Main => "main",
                Instance::Quiet => "quiet (notifications refused, 1 s gateway timeout)",
                Instance::Fallback => "fallback (notifications refused, 1 s order expiry)",
            },
            pay_method: r.order.pay_method.as_str().to_owned(),
            status: r.order.status.as_str().to_owned(),
            amount: r.order.amount.to_string(),
            cancelled: r.order.cancelled.to_string(),
            pg_cno: r.order.pg_cno.clone(),
            timeline: r
                .timeline
                .iter()
                .map(|t| EventRow {
                    at: stamp(t.created_at),
                    event: t.event.clone(),
                    transition: match (t.from_status, t.to_status) {
                        (Some(from), Some(to)) => format!("{} → {}", from.as_str(), to.as_str()),
                        (None, Some(to)) => format!("→ {}", to.as_str()),
                        _ => String::new(),
                    },
                    cause: t.cause.clone(),
                })
                .collect(),
            calls: r
                .calls
                .iter()
                .map(|c| CallRow {
                    at: stamp(c.requested_at),
                    api: c.api.clone(),
                    shop_transaction_id: c.shop_transaction_id.clone(),
                    request_date: c.request_date.clone(),
                    outcome: c
                        .outcome
                        .clone()
                        .unwrap_or_else(|| "(no answer recorded)".into()),
                    res_cd: c.res_cd.clone().unwrap_or_default(),
                    res_msg: c.res_msg.clone().unwrap_or_default(),
                    latency_ms: c.latency_ms,
                    request: c.request_body.clone(),
                    response: c.response_body.clone().unwrap_or_default(),
                })
                .collect(),
            deliveries: r
                .deliveries
                .iter()
                .map(|d| DeliveryRow {
                    at: stamp(d.received_at),
                    route: d.route.clone(),
                    source_ip: d.source_ip.clone(),
                    outcome: d.outcome.clone().unwrap_or_default(),
                    applied: d.applied,
                    ack_res_cd: d.ack_res_cd.clone().unwrap_or_default(),
                    ack_ms: d.acked_at.map(|a| (a - d.received_at).num_milliseconds()),
                    body: d.body.clone(),
                })
                .collect(),
            gateway,
        });
    }
    out
}

fn stamp(t: chrono::NaiveDateTime) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}
