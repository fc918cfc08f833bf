//! `/review` (sandbox mode only): the integration review run from the browser. The same runner
//! as `kicc-checkout review` — its own throwaway apps, temporary database and loopback sandbox,
//! never this app's data — with the table filling in as scenarios finish (`static/review.js`
//! polls `/review/run.json`) and the full report with its evidence at `/review/report.html`.

use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_SECURITY_POLICY, LOCATION};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Serialize;

use super::AppState;
use super::pages::Layout;
use crate::review::{self, Progress, Report, ReviewOptions, SCENARIOS, ScenarioInfo};

/// The latest run started from the page (one at a time).
#[derive(Default)]
pub struct ReviewBoard {
    run: Mutex<Option<Run>>,
}

struct Run {
    running: bool,
    /// The scenario in progress.
    current: Option<&'static str>,
    /// Filled in as scenarios finish; complete at the end.
    report: Option<Report>,
    error: Option<String>,
    started: std::time::Instant,
}

/// One row of the table as the page shows it.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RowState {
    id: &'static str,
    verdict: &'static str,
    seconds: String,
    happened: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunJson {
    state: &'static str,
    current: Option<&'static str>,
    done: usize,
    total: usize,
    passed: usize,
    failed: usize,
    summary: Option<String>,
    error: Option<String>,
    rows: Vec<RowState>,
}

impl ReviewBoard {
    fn snapshot(&self) -> RunJson {
        let run = self.run.lock().expect("review board");
        let total = SCENARIOS.len();
        match run.as_ref() {
            None => RunJson {
                state: "idle",
                current: None,
                done: 0,
                total,
                passed: 0,
                failed: 0,
                summary: None,
                error: None,
                rows: Vec::new(),
            },
            Some(r) => {
                let rows: Vec<RowState> = r
                    .report
                    .iter()
                    .flat_map(|report| &report.scenarios)
                    .map(|result| RowState {
                        id: result.info.id,
                        verdict: result.verdict(),
                        seconds: result.seconds(),
                        happened: result.happened.clone(),
                    })
                    .collect();
                let passed = rows.iter().filter(|x| x.verdict == "PASS").count();
                RunJson {
                    state: match (r.running, &r.error) {
                        (true, _) => "running",
                        (false, Some(_)) => "error",
                        (false, None) => "done",
                    },
                    current: r.current,
                    done: rows.len(),
                    total,
                    passed,
                    failed: rows.len() - passed,
                    summary: (!r.running)
                        .then(|| r.report.as_ref().map(Report::totals_line))
                        .flatten(),
                    error: r.error.clone(),
                    rows,
                }
            }
        }
    }

    /// Starts a run unless one is going; whether this call started it.
    fn start(self: &Arc<Self>) -> bool {
        {
            let mut run = self.run.lock().expect("review board");
            if run.as_ref().is_some_and(|r| r.running) {
                return false;
            }
            *run = Some(Run {
                running: true,
                current: None,
                report: None,
                error: None,
                started: std::time::Instant::now(),
            });
        }
        let board = self.clone();
        actix_web::rt::spawn(async move {
            let progress_board = board.clone();
            let outcome = review::run(&ReviewOptions::default(), move |event| {
                progress_board.progress(event);
            })
            .await;
            let mut run = board.run.lock().expect("review board");
            if let Some(run) = run.as_mut() {
                run.running = false;
                run.current = None;
                match outcome {
                    Ok(report) => run.report = Some(report),
                    Err(e) => run.error = Some(e.to_string()),
                }
            }
        });
        true
    }

    fn progress(&self, event: Progress<'_>) {
        let mut run = self.run.lock().expect("review board");
        let Some(run) = run.as_mut() else {
            return;
        };
        match event {
            Progress::Started { info, .. } => run.current = Some(info.id),
            Progress::Finished { result, .. } => {
                // The report so far, for /review/report.html while it runs.
                let report = run.report.get_or_insert_with(|| {
                    Report::new(
                        chrono::Utc::now(),
                        "the review's own sandbox".into(),
                        true,
                        "SQLite (a temporary file)".into(),
                    )
                });
                report.scenarios.push(result.clone());
                report.finish(run.started.elapsed());
            }
        }
    }
}

/// Live mode has no review page: it would be nobody's business there.
fn sandbox_only(state: &web::Data<AppState>) -> Option<HttpResponse> {
    (!state.config.is_sandbox()).then(|| {
        super::error::render_error_page(
            state,
            StatusCode::NOT_FOUND,
            "Page not found",
            "The integration review runs only in sandbox mode.",
        )
    })
}

struct PageRow {
    info: &'static ScenarioInfo,
    verdict: &'static str,
    seconds: String,
    happened: String,
}

#[derive(Template)]
#[template(path = "review/page.html")]
struct ReviewPage {
    layout: Layout,
    rows: Vec<PageRow>,
    run: RunJson,
}

/// `GET /review`.
pub async fn page(state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = sandbox_only(&state) {
        return r;
    }
    let run = state.review.snapshot();
    let rows = SCENARIOS
        .iter()
        .map(|info| {
            let done = run.rows.iter().find(|r| r.id == info.id);
            PageRow {
                info,
                verdict: done.map_or(
                    if run.current == Some(info.id) {
                        "running"
                    } else {
                        "waiting"
                    },
                    |r| r.verdict,
                ),
                seconds: done.map(|r| r.seconds.clone()).unwrap_or_default(),
                happened: done.map(|r| r.happened.clone()).unwrap_or_default(),
            }
        })
        .collect();
    super::render(
        &ReviewPage {
            layout: Layout::new("Integration review", true),
            rows,
            run,
        },
        StatusCode::OK,
    )
}

/// `POST /review`: start a run (or join the one going), then back to the page.
pub async fn start(state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = sandbox_only(&state) {
        return r;
    }
    state.review.start();
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/review"))
        .finish()
}

/// `GET /review/run.json`: the run's state for the page's script.
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = sandbox_only(&state) {
        return r;
    }
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(state.review.snapshot())
}

fn latest(state: &AppState) -> Option<Report> {
    let run = state.review.run.lock().expect("review board");
    run.as_ref().and_then(|r| r.report.clone())
}

/// `GET /review/report.html`: the report so far, the same self-contained file the command writes.
pub async fn report_html(state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = sandbox_only(&state) {
        return r;
    }
    match latest(&state) {
        Some(report) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            // The file carries its styles inline and nothing else.
            .insert_header((
                CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ))
            .body(report.to_html()),
        None => no_report(&state),
    }
}

/// `GET /review/report.json`.
pub async fn report_json(state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = sandbox_only(&state) {
        return r;
    }
    match latest(&state) {
        Some(report) => HttpResponse::Ok()
            .content_type("application/json")
            .body(report.to_json()),
        None => no_report(&state),
    }
}

fn no_report(state: &web::Data<AppState>) -> HttpResponse {
    super::error::render_error_page(
        state,
        StatusCode::NOT_FOUND,
        "No review yet",
        "Run the review first: the report appears as soon as the first scenario has finished.",
    )
}
