//! Static files, embedded in the binary so the release build runs from any directory.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};

use super::error::WebError;

/// (name, content type, bytes) of every file under `static/`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/style.css"),
    ),
    (
        "order.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/order.js"),
    ),
    (
        "review.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/review.js"),
    ),
    (
        "review.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/review.css"),
    ),
];

/// `GET /static/{file}`.
pub async fn serve(file: web::Path<String>) -> Result<HttpResponse, WebError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(name, _, _)| *name == file.as_str())
        .ok_or_else(|| WebError::NotFound {
            what: "file".into(),
        })?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(3600),
        ]))
        .body(*body))
}
