//! The integration review (DESIGN §1 `review`): every critical rule of KICC's spec files 01–06
//! exercised end to end — a throwaway app against a sandbox gateway over real HTTP — each with
//! the rule it proves, what was done, what was expected, what happened and the evidence (gateway
//! calls, webhook deliveries, the order's timeline, KICC's side). Run by `kicc-checkout review`
//! and by the `/review` page in sandbox mode.

mod catalog;
mod env;
mod evidence;
mod late;
pub mod report;
mod scenarios;

use std::time::{Duration, Instant};

pub use catalog::{SCENARIOS, ScenarioInfo};
pub use report::{Check, Report, ScenarioResult};

use crate::config::ConfigError;
use crate::db::DatabaseUrl;
use crate::startup::StartupError;
use env::{DbFault, Env, Instance};

/// A scenario that has not finished in this time is a FAIL (the settle waits are shorter).
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// What to run against.
#[derive(Debug, Clone, Default)]
pub struct ReviewOptions {
    /// A sandbox gateway already running (`kicc-checkout sandbox --bind ADDR`); `None`: the
    /// review starts its own on loopback.
    pub gateway: Option<String>,
    /// `None`: a temporary SQLite file, removed afterwards.
    pub database_url: Option<DatabaseUrl>,
}

/// Why a review could not run at all (a scenario that fails is a FAIL row, not this).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the review's app did not start: {0}")]
    Startup(#[from] StartupError),
    #[error("the gateway at {url} cannot be used: {why}")]
    Gateway { url: String, why: String },
    #[error("cannot create the temporary database folder: {0}")]
    TempDir(std::io::Error),
}

/// What the runner reports while it works.
pub enum Progress<'a> {
    Started {
        index: usize,
        total: usize,
        info: &'static ScenarioInfo,
    },
    Finished {
        index: usize,
        total: usize,
        result: &'a ScenarioResult,
    },
}

/// Runs every scenario, in order, and returns the report. `progress` hears of each start and end.
pub async fn run(
    options: &ReviewOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Report, ReviewError> {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let env = Env::start(options.gateway.as_deref(), options.database_url.as_ref()).await?;
    let mut report = Report::new(
        started_at,
        env.gateway_base.clone(),
        env.is_own_gateway(),
        env.database.clone(),
    );
    let total = SCENARIOS.len();
    for (index, info) in SCENARIOS.iter().enumerate() {
        progress(Progress::Started { index, total, info });
        let result = run_one(&env, info, started_at, &mut report).await;
        report.scenarios.push(result);
        let result = report.scenarios.last().expect("just pushed");
        progress(Progress::Finished {
            index,
            total,
            result,
        });
    }
    report.finish(clock.elapsed());
    env.stop().await;
    Ok(report)
}

async fn run_one(
    env: &Env,
    info: &'static ScenarioInfo,
    run_started: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> ScenarioResult {
    let clock = Instant::now();
    let mut ctx = Ctx::new(env, run_started);
    let outcome = tokio::time::timeout(SCENARIO_LIMIT, scenarios::run(info.id, &mut ctx)).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(step)) => Some(step),
        Err(_) => Some(format!(
            "did not finish within {} s",
            SCENARIO_LIMIT.as_secs()
        )),
    };
    // Whatever happened, no injected fault outlives its scenario.
    for fault in DbFault::ALL {
        if let Err(e) = env.heal(fault).await {
            ctx.notes.push(e);
        }
    }
    if let Some(ack) = ctx.max_ack.take() {
        report.record_acks(ack);
    }
    let millis = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let evidence = evidence::collect(env, &ctx.orders).await;
    ScenarioResult::new(info, ctx.checks, ctx.notes, error, millis, evidence)
}

/// What a scenario builds up: its checks, the orders it touched, notes for the reader.
pub(crate) struct Ctx<'e> {
    pub env: &'e Env,
    /// When the review started (the run-wide checks read what came after).
    pub run_started: chrono::DateTime<chrono::Utc>,
    checks: Vec<Check>,
    orders: Vec<(Instance, String)>,
    notes: Vec<String>,
    /// The webhook answer times measured (slowest, how many).
    max_ack: Option<(u64, usize)>,
}

impl<'e> Ctx<'e> {
    fn new(env: &'e Env, run_started: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            env,
            run_started,
            checks: Vec::new(),
            orders: Vec::new(),
            notes: Vec::new(),
            max_ack: None,
        }
    }

    /// The order's records and KICC's trade go into this scenario's evidence.
    pub fn track(&mut self, instance: Instance, no: &str) {
        if !self.orders.iter().any(|(_, n)| n == no) {
            self.orders.push((instance, no.to_owned()));
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Records one check; returns whether it held.
    pub fn check(
        &mut self,
        what: impl Into<String>,
        expected: impl std::fmt::Display,
        actual: impl std::fmt::Display,
        ok: bool,
    ) -> bool {
        self.checks.push(Check {
            what: what.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            ok,
        });
        ok
    }

    /// `actual == expected`.
    pub fn eq<T: PartialEq + std::fmt::Display>(
        &mut self,
        what: impl Into<String>,
        expected: T,
        actual: T,
    ) -> bool {
        let ok = actual == expected;
        self.check(what, expected, actual, ok)
    }

    /// Records the measured webhook answer times (the run-wide check).
    pub fn acks_measured(&mut self, slowest_ms: u64, count: usize) {
        self.max_ack = Some((slowest_ms, count));
    }
}
