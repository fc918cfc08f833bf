//! The review's report: one result per scenario with its checks and evidence, as JSON, as a
//! terminal table, and as one self-contained HTML file (styles inline, no script, no links out).

use std::time::Duration;

use askama::Template;
use serde::Serialize;

use super::catalog::ScenarioInfo;

/// One thing a scenario looked at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub what: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioResult {
    #[serde(flatten)]
    pub info: ScenarioInfo,
    /// What happened, in one line: the checks' findings (failed ones first).
    pub happened: String,
    pub pass: bool,
    pub millis: u64,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// A step that could not be made (the scenario stopped there).
    pub error: Option<String>,
    pub evidence: Vec<OrderEvidence>,
}

impl ScenarioResult {
    pub fn new(
        info: &ScenarioInfo,
        checks: Vec<Check>,
        notes: Vec<String>,
        error: Option<String>,
        millis: u64,
        evidence: Vec<OrderEvidence>,
    ) -> Self {
        let pass = error.is_none() && !checks.is_empty() && checks.iter().all(|c| c.ok);
        let mut parts: Vec<String> = Vec::new();
        if let Some(e) = &error {
            parts.push(format!("stopped: {e}"));
        }
        for c in checks.iter().filter(|c| !c.ok) {
            parts.push(format!(
                "{}: {} (expected {})",
                c.what, c.actual, c.expected
            ));
        }
        for c in checks.iter().filter(|c| c.ok) {
            parts.push(format!("{}: {}", c.what, c.actual));
        }
        if checks.is_empty() && error.is_none() {
            parts.push("nothing was checked".into());
        }
        Self {
            info: *info,
            happened: parts.join(" · "),
            pass,
            millis,
            checks,
            notes,
            error,
            evidence,
        }
    }

    pub fn verdict(&self) -> &'static str {
        if self.pass { "PASS" } else { "FAIL" }
    }

    pub fn seconds(&self) -> String {
        format!("{:.2} s", self.millis as f64 / 1000.0)
    }
}

/// One order's records, and KICC's view of its trade.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvidence {
    pub shop_order_no: String,
    /// Which of the review's app instances served it.
    pub instance: &'static str,
    pub pay_method: String,
    pub status: String,
    pub amount: String,
    pub cancelled: String,
    pub pg_cno: Option<String>,
    pub timeline: Vec<EventRow>,
    pub calls: Vec<CallRow>,
    pub deliveries: Vec<DeliveryRow>,
    /// The sandbox's view (status code, amounts, cancels, webhook attempts), secrets removed.
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub at: String,
    pub event: String,
    pub transition: String,
    pub cause: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRow {
    pub at: String,
    pub api: String,
    pub shop_transaction_id: String,
    pub request_date: String,
    pub outcome: String,
    pub res_cd: String,
    pub res_msg: String,
    pub latency_ms: Option<i64>,
    /// Redacted as stored.
    pub request: String,
    pub response: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    pub at: String,
    pub route: String,
    pub source_ip: String,
    pub outcome: String,
    pub applied: bool,
    pub ack_res_cd: String,
    /// From receipt to the ack, as the app measured it.
    pub ack_ms: Option<i64>,
    pub body: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub version: &'static str,
    pub started_at: String,
    pub gateway: String,
    pub gateway_started_by_review: bool,
    pub database: String,
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub total_millis: u64,
    /// The slowest answer to a notification attempt, as the gateway measured it.
    pub max_ack_ms: Option<u64>,
    pub acks_measured: usize,
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    pub fn new(
        started_at: chrono::DateTime<chrono::Utc>,
        gateway: String,
        gateway_started_by_review: bool,
        database: String,
    ) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            gateway,
            gateway_started_by_review,
            database,
            total: super::SCENARIOS.len(),
            passed: 0,
            failed: 0,
            total_millis: 0,
            max_ack_ms: None,
            acks_measured: 0,
            scenarios: Vec::new(),
        }
    }

    pub(super) fn record_acks(&mut self, (slowest, count): (u64, usize)) {
        self.max_ack_ms = Some(slowest);
        self.acks_measured = count;
    }

    /// Counts, once every scenario has run (also fine on a partial report).
    pub fn finish(&mut self, elapsed: Duration) {
        self.passed = self.scenarios.iter().filter(|s| s.pass).count();
        self.failed = self.scenarios.len() - self.passed;
        self.total_millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    }

    /// Every scenario ran and passed.
    pub fn all_passed(&self) -> bool {
        self.scenarios.len() == self.total && self.scenarios.iter().all(|s| s.pass)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises")
    }

    /// The self-contained HTML report.
    pub fn to_html(&self) -> String {
        ReportPage {
            report: self,
            css: REPORT_CSS,
        }
        .render()
        .expect("the report renders")
    }

    /// The closing summary for a terminal: one line per scenario, then the totals.
    pub fn summary_table(&self) -> String {
        let width = self
            .scenarios
            .iter()
            .map(|s| s.info.id.len())
            .max()
            .unwrap_or(10);
        let mut out = String::new();
        for s in &self.scenarios {
            out.push_str(&format!(
                "{}  {:>8}  {:<width$}  {}\n",
                s.verdict(),
                s.seconds(),
                s.info.id,
                s.info.spec
            ));
        }
        out.push_str(&self.totals_line());
        out.push('\n');
        out
    }

    pub fn totals_line(&self) -> String {
        let acks = match self.max_ack_ms {
            Some(ms) => format!(
                "slowest webhook ack {ms} ms over {} attempts (KICC allows 10 000 ms)",
                self.acks_measured
            ),
            None => "no webhook ack measured".into(),
        };
        format!(
            "{} of {} scenarios passed, {} failed, in {:.1} s; {acks}",
            self.passed,
            self.total,
            self.failed,
            self.total_millis as f64 / 1000.0
        )
    }
}

/// One scenario's block for a terminal: verdict line, then rule, done, expected, happened.
pub fn scenario_block(index: usize, total: usize, s: &ScenarioResult) -> String {
    let mut out = format!(
        "[{:>2}/{total}] {}  {:>8}  {} — {}  ({})\n",
        index + 1,
        s.verdict(),
        s.seconds(),
        s.info.id,
        s.info.title,
        s.info.spec
    );
    for (label, text) in [
        ("rule", format!("\"{}\"", s.info.rule)),
        ("done", s.info.done.to_owned()),
        ("expected", s.info.expected.to_owned()),
        ("happened", s.happened.clone()),
    ] {
        out.push_str(&format!("          {label:<9} {text}\n"));
    }
    out
}

const REPORT_CSS: &str = include_str!("../../static/review.css");

#[derive(Template)]
#[template(path = "review/report.html")]
struct ReportPage<'a> {
    report: &'a Report,
    css: &'a str,
}
