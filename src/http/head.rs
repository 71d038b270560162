//! Checks on a request's head before any handler runs, each refused with the JSON error of SPEC §3:
//! a target over [`MAX_URI_BYTES`] (414), header fields over [`MAX_HEADER_BYTES`] (431), a `Host` that
//! is repeated, malformed or disagrees with the target's authority (400), and a `Content-Length` over
//! `server.max_body_bytes` (413, before any of the body is read, so an `Expect: 100-continue` client
//! is not told to send it).
//!
//! hyper's own bounds ([`MAX_BUFFERED_HEAD`]: HTTP/1.1's read buffer, HTTP/2's header list) are set
//! above ours, so that a head over our limits reaches this check and gets our answer; they remain the
//! bound on what a connection may make the server hold. A head beyond them is refused by hyper with
//! the same status and an empty body, and the connection is closed.

use axum::http::{HeaderMap, StatusCode, Uri, header};

use super::error::ApiError;

/// The longest request target accepted (scheme, authority, path and query), in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header-field bytes accepted, counted as on the HTTP/1.1 wire (`name: value\r\n`).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// hyper's bound on a buffered request head: the HTTP/1.1 read buffer and the HTTP/2 header list.
pub const MAX_BUFFERED_HEAD: usize = 64 * 1024;

/// Whether a request's head keeps the rules above; every request is judged before its route runs.
pub fn judge(uri: &Uri, headers: &HeaderMap, max_body_bytes: usize) -> Result<(), ApiError> {
    let target = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's header fields are larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    check_host(uri, headers)?;
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        // hyper has already refused a malformed or contradictory Content-Length.
        let length = length.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|n| n > max_body_bytes as u64) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large",
            ));
        }
    }
    Ok(())
}

/// RFC 9112 §3.2: one `Host`, and a valid one. And it names what the target names, if the target has
/// an authority (HTTP/1.1 absolute form, HTTP/2 `:authority`): a request that names two hosts is one
/// that a proxy in front and this server could read as going to different places.
fn check_host(uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err(ApiError::invalid("Host", "more than one Host header"));
    }
    let Ok(host) = host.to_str() else {
        return Err(ApiError::invalid("Host", "not a host name or address"));
    };
    let Ok(host) = host.parse::<http::uri::Authority>() else {
        return Err(ApiError::invalid("Host", "not a host name or address"));
    };
    if host.as_str().contains('@') {
        return Err(ApiError::invalid("Host", "not a host name or address"));
    }
    if let Some(target) = uri.authority()
        && !target.as_str().eq_ignore_ascii_case(host.as_str())
    {
        return Err(ApiError::invalid(
            "Host",
            "differs from the authority of the request target",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn heads_by_table() {
        let long_path = format!("/{}", "a".repeat(MAX_URI_BYTES));
        let fits_path = format!("/{}", "a".repeat(MAX_URI_BYTES - 1));
        let big = "v".repeat(MAX_HEADER_BYTES);
        let fits = "v".repeat(MAX_HEADER_BYTES - "x-big".len() - 4);
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<u16>);
        let cases: &[Case] = &[
            ("/healthz", &[("host", "example.com")], None),
            ("/healthz", &[], None),
            (&fits_path, &[], None),
            (&long_path, &[], Some(414)),
            ("/healthz", &[("x-big", &fits)], None),
            ("/healthz", &[("x-big", &big)], Some(431)),
            (
                "/",
                &[("host", "a.example"), ("host", "a.example")],
                Some(400),
            ),
            ("/", &[("host", "a b")], Some(400)),
            ("/", &[("host", "user@a.example")], Some(400)),
            ("/", &[("host", "127.0.0.1:8080")], None),
            ("/", &[("host", "[::1]:8080")], None),
            ("http://a.example/x", &[("host", "a.example")], None),
            ("http://A.example/x", &[("host", "a.EXAMPLE")], None),
            ("http://a.example/x", &[("host", "b.example")], Some(400)),
            ("http://a.example:81/x", &[("host", "a.example")], Some(400)),
            ("/", &[("content-length", "2048")], None),
            ("/", &[("content-length", "2049")], Some(413)),
        ];
        for (uri, pairs, want) in cases {
            let got = judge(&uri.parse().unwrap(), &headers(pairs), 2048);
            assert_eq!(
                got.as_ref().err().map(|e| e.status.as_u16()),
                *want,
                "{} {pairs:?}: {got:?}",
                &uri[..uri.len().min(40)]
            );
        }
    }
}
