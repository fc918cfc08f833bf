//! Prometheus metrics: requests by route and status, latency histogram, DB pool state, and the
//! SQLite writer's batch sizes and times.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use super::AppState;
use crate::db::{Db, GroupStats};

/// The app's own registry (not the global one, so several apps in one test process are apart).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pool_connections: IntGauge,
    pool_idle: IntGauge,
    pool_max: IntGauge,
    compensations: prometheus::IntGaugeVec,
    unrecorded_cancels: IntGauge,
    reconciler_passes: prometheus::IntCounter,
    reconciler_claimed: prometheus::IntCounter,
    one_statement_acks: prometheus::IntCounter,
    refused_unstored: prometheus::IntCounter,
}

/// What `/metrics` reads at scrape time besides the request counters.
pub struct Snapshot {
    /// Compensation jobs per status (`pending`, `requested`, `confirmed` = done, `failed`).
    pub compensations: Vec<(String, i64)>,
    /// In-process cancels waiting for the database.
    pub unrecorded_cancels: usize,
    /// (passes, items claimed) of this instance's reconciler.
    pub reconciler: (u64, u64),
    /// Webhook deliveries acked by one statement (PostgreSQL).
    pub one_statement_acks: u64,
}

impl Metrics {
    /// The app's metrics, with the SQLite writer's histograms when there is one.
    pub fn new(writer: Option<&GroupStats>) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route pattern and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route pattern",
            ),
            &["method", "route"],
        )
        .expect("valid metric");
        let pool_connections = IntGauge::new("db_pool_connections", "Open database connections")
            .expect("valid metric");
        let pool_idle = IntGauge::new("db_pool_idle_connections", "Idle database connections")
            .expect("valid metric");
        let pool_max =
            IntGauge::new("db_pool_max_connections", "Database pool size").expect("valid metric");
        let compensations = prometheus::IntGaugeVec::new(
            Opts::new(
                "compensations",
                "Cancel jobs by status (pending, requested, confirmed = done, failed)",
            ),
            &["status"],
        )
        .expect("valid metric");
        let unrecorded_cancels = IntGauge::new(
            "unrecorded_cancels",
            "Cancels made while the database was unreachable, not yet written",
        )
        .expect("valid metric");
        let reconciler_passes = prometheus::IntCounter::new(
            "reconciler_passes_total",
            "Reconciler passes run by this instance",
        )
        .expect("valid metric");
        let reconciler_claimed = prometheus::IntCounter::new(
            "reconciler_items_claimed_total",
            "Items the reconciler claimed",
        )
        .expect("valid metric");
        let one_statement_acks = prometheus::IntCounter::new(
            "webhook_one_statement_acks_total",
            "Webhook deliveries stored, handled and acked by one statement (PostgreSQL)",
        )
        .expect("valid metric");
        let refused_unstored = prometheus::IntCounter::new(
            "webhook_refused_unstored_total",
            "Webhook deliveries from sources not allowed, answered 403 and not stored (over \
             the per-source store limit)",
        )
        .expect("valid metric");
        for collector in [
            Box::new(compensations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refused_unstored.clone()),
            Box::new(unrecorded_cancels.clone()),
            Box::new(reconciler_passes.clone()),
            Box::new(reconciler_claimed.clone()),
            Box::new(one_statement_acks.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(pool_connections.clone()),
            Box::new(pool_idle.clone()),
            Box::new(pool_max.clone()),
        ]
        .into_iter()
        .chain(writer.map(GroupStats::collectors).unwrap_or_default())
        {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            requests,
            latency,
            pool_connections,
            pool_idle,
            pool_max,
            compensations,
            unrecorded_cancels,
            reconciler_passes,
            reconciler_claimed,
            one_statement_acks,
            refused_unstored,
        }
    }

    /// A refused webhook delivery answered but not stored (`web::webhooks`).
    pub fn count_refused_unstored(&self) {
        self.refused_unstored.inc();
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// The text exposition, with the pool gauges read now.
    pub fn render(&self, db: &Db, snapshot: &Snapshot) -> String {
        for status in ["pending", "requested", "confirmed", "failed"] {
            let count = snapshot
                .compensations
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            self.compensations.with_label_values(&[status]).set(count);
        }
        self.unrecorded_cancels
            .set(i64::try_from(snapshot.unrecorded_cancels).unwrap_or(i64::MAX));
        let (passes, claimed) = snapshot.reconciler;
        self.reconciler_passes
            .inc_by(passes.saturating_sub(self.reconciler_passes.get()));
        self.reconciler_claimed
            .inc_by(claimed.saturating_sub(self.reconciler_claimed.get()));
        self.one_statement_acks.inc_by(
            snapshot
                .one_statement_acks
                .saturating_sub(self.one_statement_acks.get()),
        );
        let (connections, idle, max) = db.pool_state();
        self.pool_connections.set(connections.into());
        self.pool_idle.set(idle.into());
        self.pool_max.set(max.into());
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

/// Middleware: counts and times every request under its route pattern (`/products/{sku}`),
/// never its concrete path, so the label set stays small.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().clone();
    let result = next.call(req).await;
    if let Some(metrics) = metrics {
        // Read after routing: the request then knows its resource, and the pattern is a lookup
        // by index. Before it, `match_pattern` runs the router's regexes over every route
        // (7% of a duplicate webhook's instructions, docs/BENCHMARKS.md).
        let (route, status) = match &result {
            Ok(res) => (res.request().match_pattern(), res.status().as_u16()),
            Err(e) => (None, e.as_response_error().status_code().as_u16()),
        };
        let route = route.as_deref().unwrap_or("unmatched");
        metrics.observe(
            method.as_str(),
            route,
            status,
            start.elapsed().as_secs_f64(),
        );
    }
    result
}
