//! The web page's static files, embedded in the binary (no build step): one row per file
//! of `daemon/web/`. Add a file by adding a row to [`ASSETS`]; `/` serves `index.html`,
//! every other row is served at `/assets/<name>`.

use axum::Router;
use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::WebState;

/// (name under daemon/web/, Content-Type, bytes).
pub const ASSETS: &[(&str, &str, &[u8])] = &[(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("../../web/index.html"),
)];

/// `/` and `/assets/{name}`.
pub fn router() -> Router<WebState> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/assets/{name}",
            get(|Path(name): Path<String>| async move { serve(&name) }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, bytes)) => {
            ([(CONTENT_TYPE, HeaderValue::from_static(ty))], *bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
