//! Static files from `assets/`, embedded in the binary at build time (no CDN, works offline): the SDK
//! widget, the demo page and the dashboard. Debug builds read the folder from disk, so edits show without a rebuild.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::ApiPath;

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

/// The dashboard may load only its own files and talk only to this server: no inline script, no
/// third-party origin, never framed.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_dashboard_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// `GET /`: the dashboard's single page; it routes by the URL's fragment (`#/integrations`, …).
pub async fn dashboard() -> Response {
    with_dashboard_headers(serve("dashboard/index.html"))
}

/// `GET /dashboard/{file}`: the dashboard's scripts and styles.
pub async fn dashboard_file(ApiPath(file): ApiPath<String>) -> Response {
    // rust-embed keys are plain relative paths; anything else cannot name one of our files.
    if file.split('/').any(|part| part.is_empty() || part == "..") {
        return ApiError::not_found("asset").into_response();
    }
    with_dashboard_headers(serve(&format!("dashboard/{file}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything under `assets/` is in the binary, so only what is served belongs there (the README's
    /// screenshots live in `docs/`).
    #[test]
    fn every_embedded_file_is_one_that_is_served() {
        for path in Assets::iter() {
            let served = path.starts_with("dashboard/")
                || path.starts_with("demo/")
                || path == "sdk/clickterm-widget.js";
            assert!(served, "assets/{path} is embedded but never served");
        }
    }
}
