//! Static files from `assets/`, embedded in the binary at build time (no CDN, works offline): the SDK
//! widget and the demo page. Debug builds read the folder from disk, so edits show without a rebuild.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

fn serve(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::not_found("asset").into_response();
    };
    let mime = HeaderValue::from_str(file.metadata.mimetype())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut res = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, mime);
    // Revalidate every time: an upgrade of the appliance must reach every page at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!(
            "\"{}\"",
            hex::encode(&file.metadata.sha256_hash()[..8])
        ))
        .expect("hex"),
    );
    res
}

/// `GET /sdk/clickterm-widget.js`
pub async fn widget() -> Response {
    serve("sdk/clickterm-widget.js")
}

/// `GET /demo/`: a page that shows the widget against this server.
pub async fn demo() -> Response {
    serve("demo/index.html")
}
