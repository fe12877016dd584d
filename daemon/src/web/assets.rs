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

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// (name under daemon/web/, Content-Type, bytes).
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../../web/index.html")),
    ("app.css", CSS, include_bytes!("../../web/app.css")),
    ("app.js", JS, include_bytes!("../../web/app.js")),
    ("api.js", JS, include_bytes!("../../web/api.js")),
    ("dom.js", JS, include_bytes!("../../web/dom.js")),
    ("files.js", JS, include_bytes!("../../web/files.js")),
    ("upload.js", JS, include_bytes!("../../web/upload.js")),
    (
        "hashworker.js",
        JS,
        include_bytes!("../../web/hashworker.js"),
    ),
    ("blake3.js", JS, include_bytes!("../../web/blake3.js")),
    ("b3simd.js", JS, include_bytes!("../../web/b3simd.js")),
    ("chat.js", JS, include_bytes!("../../web/chat.js")),
    (
        "selftest.html",
        HTML,
        include_bytes!("../../web/selftest.html"),
    ),
    ("selftest.js", JS, include_bytes!("../../web/selftest.js")),
    ("b3vectors.js", JS, include_bytes!("../../web/b3vectors.js")),
];

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
