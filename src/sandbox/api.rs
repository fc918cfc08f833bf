//! The JSON APIs of KICC (WeChat Pay, generic, KICC Pay) as HTTP handlers: read the body, run
//! the ledger operation, keep the call, start its webhooks, send the reply as the scenario says.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use super::SandboxState;
use super::ledger::{Ctx, KiccPayHeaders, Ledger, Outcome, ReplyMode, api};
use super::webhook;

const JSON: &str = "application/json; charset=utf-8";

/// What `malformed_reply` answers: a proxy's error page with HTTP 200.
pub const MALFORMED_BODY: &str =
    "<html><head><title>Service Unavailable</title></head><body>upstream busy</body></html>";

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Resources, so another method answers 405 rather than 404.
    cfg.service(web::resource(api::CREATE).route(web::post().to(create)))
        .service(web::resource(api::FIND).route(web::post().to(find)))
        .service(web::resource(api::WECHAT_REVISE).route(web::post().to(wechat_revise)))
        .service(web::resource(api::APPROVAL).route(web::post().to(approval)))
        .service(web::resource(api::REVISE).route(web::post().to(revise)))
        .service(web::resource(api::RETRIEVE).route(web::post().to(retrieve)))
        .service(web::resource(api::KICCPAY_APPROVE).route(web::post().to(kiccpay_approve)))
        .service(web::resource(api::KICCPAY_NET_CANCEL).route(web::post().to(kiccpay_net_cancel)))
        .service(web::resource(api::KICCPAY_CANCEL).route(web::post().to(kiccpay_cancel)));
}

/// `POST /api/trades/wechatpay` (spec 01).
async fn create(state: web::Data<SandboxState>, body: Bytes) -> HttpResponse {
    handle(state, api::CREATE, body, Ledger::create_wechat).await
}

/// `POST /api/trades/wechatpay/find` (spec 06).
async fn find(state: web::Data<SandboxState>, body: Bytes) -> HttpResponse {
    handle(state, api::FIND, body, Ledger::find_wechat).await
}

/// `POST /api/trades/wechatpay/revise` (spec 06).
async fn wechat_revise(state: web::Data<SandboxState>, body: Bytes) -> HttpResponse {
    handle(state, api::WECHAT_REVISE, body, Ledger::revise_wechat).await
}

/// `POST /api/v2/trades/approval` (spec 02).
async fn approval(state: web::Data<SandboxState>, body: Bytes) -> HttpResponse {
    handle(state, api::APPROVAL, body, Ledger::approve_v2).await
}

/// `POST /api/trades/revise` (spec 06).
async fn revise(state: web::Data<SandboxState>, body: Bytes) -> HttpResponse {
    handle(state, api::REVISE, body, Ledger::revise_generic).await
}

/// `POST /api/trades/retrieveTransaction` (spec 06).
async fn retrieve(state: web::Data<SandboxState>, body: Bytes) -> HttpResponse {
    handle(state, api::RETRIEVE, body, Ledger::retrieve).await
}

/// `POST /smpy/kiccpay/reqAprv` (spec 03).
async fn kiccpay_approve(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    kiccpay(
        state,
        &req,
        body,
        api::KICCPAY_APPROVE,
        Ledger::kiccpay_approve,
    )
    .await
}

/// `POST /smpy/kiccpay/reqRtran` (spec 06).
async fn kiccpay_net_cancel(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    kiccpay(
        state,
        &req,
        body,
        api::KICCPAY_NET_CANCEL,
        Ledger::kiccpay_net_cancel,
    )
    .await
}

/// `POST /smpy/kiccpay/reqCancel` (spec 06).
async fn kiccpay_cancel(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    kiccpay(
        state,
        &req,
        body,
        api::KICCPAY_CANCEL,
        Ledger::kiccpay_cancel,
    )
    .await
}

/// A KICC Pay operation sees the signed headers and the raw body as well as the parsed JSON.
async fn kiccpay(
    state: web::Data<SandboxState>,
    req: &HttpRequest,
    body: Bytes,
    api: &'static str,
    operation: fn(&mut Ledger, &Ctx, &KiccPayHeaders, &[u8], &Value) -> Outcome,
) -> HttpResponse {
    let headers = kiccpay_headers(req);
    let raw = body.clone();
    handle(state, api, body, move |ledger, ctx, request| {
        operation(ledger, ctx, &headers, &raw, request)
    })
    .await
}

/// The `X-KICC-*` headers, and the path exactly as requested: mounted under `/sandbox` the
/// client signs `/sandbox/smpy/kiccpay/…`, the path it calls.
fn kiccpay_headers(req: &HttpRequest) -> KiccPayHeaders {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    KiccPayHeaders {
        channel_id: header("X-KICC-ChannelId"),
        timestamp: header("X-KICC-Timestamp"),
        nonce: header("X-KICC-Nonce"),
        authorization: header("X-KICC-Authorization"),
        path: req.path().to_owned(),
    }
}

async fn handle(
    state: web::Data<SandboxState>,
    api: &'static str,
    body: Bytes,
    operation: impl FnOnce(&mut Ledger, &Ctx, &Value) -> Outcome,
) -> HttpResponse {
    let now = SandboxState::now();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let outcome = Outcome {
            body: Value::String("the request body is not JSON".into()),
            res_cd: "HTTP 400".into(),
            pg_cno: None,
            reply: ReplyMode::Normal,
            deliveries: Vec::new(),
            notes: Vec::new(),
        };
        state.ledger().record_call(&now, api, &body, &outcome);
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body("the request body is not JSON");
    };
    let outcome = {
        let ctx = state.ctx(now);
        let mut ledger = state.ledger();
        let outcome = operation(&mut ledger, &ctx, &request);
        ledger.record_call(&now, api, &body, &outcome);
        outcome
    };
    webhook::start(&state, &outcome.deliveries);
    match outcome.reply {
        ReplyMode::Normal => json(&outcome.body),
        ReplyMode::Late(delay) => {
            tokio::time::sleep(delay).await;
            json(&outcome.body)
        }
        ReplyMode::Malformed => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(MALFORMED_BODY),
        ReplyMode::Lost => HttpResponse::Ok().content_type(JSON).body(LostReply),
    }
}

fn json(body: &Value) -> HttpResponse {
    HttpResponse::Ok().content_type(JSON).body(body.to_string())
}

/// A reply body that fails before its first byte: actix drops the connection, so the client
/// gets no usable reply (`cancel_reply_lost`).
struct LostReply;

impl MessageBody for LostReply {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "reply dropped (scenario cancel_reply_lost)",
        ))))
    }
}
