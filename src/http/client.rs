//! Who sent a request. Without `server.trusted_proxies` it is the TCP peer, and the forwarding
//! headers are ignored: anyone can write them. When the peer is a trusted proxy, the client is the
//! right-most address of the header they append to (`server.proxy_header`: `X-Forwarded-For`, or RFC
//! 7239 `Forwarded`) that is not itself a trusted proxy: each proxy appends the address it received
//! the request from, so the addresses left of the last untrusted one were written by the client and
//! prove nothing. The other header is never read: a proxy passes it on as the client wrote it.
//! Whether the client spoke HTTPS to the proxy comes from `X-Forwarded-Proto` (or the `Forwarded`
//! element's `proto`), and only from a trusted peer.
//!
//! The result is computed once per request, put in its extensions, and is what the consent
//! record's `technicalMetadata`, the login limiter, the SDK's per-address limit and the request log
//! see.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::error::ApiError;
use crate::config::ProxyHeader;

/// The client of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// Whether the client's own connection is HTTPS: ours, or the trusted proxy's that it reached.
    pub https: bool,
}

/// The most forwarded hops looked at; a longer chain is cut at its left end (the part a client
/// could have written anyway).
const MAX_HOPS: usize = 32;

/// The client of a request from `peer`, given the proxies trusted to say who their client was and
/// the header they say it in.
pub fn client_of(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ProxyHeader,
    tls: bool,
) -> Client {
    let peer_ip = peer.ip().to_canonical();
    let mut client = Client {
        ip: peer_ip,
        https: tls,
    };
    if !is_trusted(peer_ip, trusted) {
        return client;
    }
    let hops = match header {
        ProxyHeader::Forwarded => values(headers, "forwarded")
            .map(forwarded_element)
            .collect::<Vec<_>>(),
        ProxyHeader::XForwardedFor => {
            // The first value is the protocol the client spoke to the first proxy.
            if let Some(proto) = values(headers, "x-forwarded-proto").next() {
                client.https = proto.eq_ignore_ascii_case("https");
            }
            values(headers, "x-forwarded-for")
                .map(|v| Hop {
                    ip: parse_node(v),
                    https: None,
                })
                .collect()
        }
    };
    // From the right: each hop is the address the proxy to its right received the request from.
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let Some(ip) = hop.ip else {
            // `unknown` or an obfuscated name: nothing to the left of it can be believed.
            break;
        };
        client = Client {
            ip,
            https: hop.https.unwrap_or(client.https),
        };
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// One forwarded hop: who a proxy got the request from, and over what.
#[derive(Debug, PartialEq, Eq)]
struct Hop {
    ip: Option<IpAddr>,
    https: Option<bool>,
}

/// The comma-separated values of every `name` header, in order.
fn values<'a>(headers: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// One `Forwarded` element: `for=…;proto=…;by=…` (RFC 7239 §4), values quoted or not.
fn forwarded_element(element: &str) -> Hop {
    let mut hop = Hop {
        ip: None,
        https: None,
    };
    for pair in element.split(';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "for" => hop.ip = parse_node(value),
            "proto" => hop.https = Some(value.eq_ignore_ascii_case("https")),
            _ => {}
        }
    }
    hop
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`
/// or a bare IPv6 address; `unknown` and obfuscated names are not addresses.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Client, ApiError> {
        parts.extensions.get::<Client>().copied().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "10.0.0.5:40000";

    fn client(pairs: &[(&str, &str)], trusted: &[&str]) -> Client {
        client_by(ProxyHeader::XForwardedFor, pairs, trusted)
    }

    fn client_by(header: ProxyHeader, pairs: &[(&str, &str)], trusted: &[&str]) -> Client {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_of(
            PEER.parse().unwrap(),
            &headers(pairs),
            &trusted,
            header,
            false,
        )
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let c = client(
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("forwarded", "for=198.51.100.8;proto=https"),
                ("x-forwarded-proto", "https"),
            ],
            &[],
        );
        assert_eq!(
            c,
            Client {
                ip: ip("10.0.0.5"),
                https: false
            }
        );
        let c = client(&[("x-forwarded-for", "198.51.100.7")], &["10.0.1.0/24"]);
        assert_eq!(c.ip, ip("10.0.0.5"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
        let trusted = ["10.0.0.0/24"];
        // The client wrote the first address itself; the proxy appended what it saw.
        let c = client(
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.7")],
            &trusted,
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        // Two trusted proxies in a row.
        let c = client(
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.9")],
            &trusted,
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        // Every hop trusted: the left-most.
        let c = client(&[("x-forwarded-for", "10.0.0.7, 10.0.0.9")], &trusted);
        assert_eq!(c.ip, ip("10.0.0.7"));
        // Repeated headers are one list.
        let c = client(
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            &trusted,
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        // None given: the proxy itself.
        assert_eq!(client(&[], &trusted).ip, ip("10.0.0.5"));
    }

    #[test]
    fn only_the_header_the_proxies_write_is_read() {
        let trusted = ["10.0.0.0/24"];
        let both = [
            ("x-forwarded-for", "192.0.2.1"),
            (
                "forwarded",
                r#"for=203.0.113.9;proto=http, for="[2001:db8::17]:4711";proto=https;by=10.0.0.5"#,
            ),
        ];
        assert_eq!(
            client_by(ProxyHeader::Forwarded, &both, &trusted),
            Client {
                ip: ip("2001:db8::17"),
                https: true
            }
        );
        // A `Forwarded` the client wrote, passed on by a proxy that appends to X-Forwarded-For.
        assert_eq!(client(&both, &trusted).ip, ip("192.0.2.1"));
        // An obfuscated or unknown hop stops the walk at the proxy that wrote it.
        let c = client_by(
            ProxyHeader::Forwarded,
            &[("forwarded", "for=203.0.113.9, for=_hidden, for=10.0.0.8")],
            &trusted,
        );
        assert_eq!(c.ip, ip("10.0.0.8"));
        let c = client_by(
            ProxyHeader::Forwarded,
            &[("forwarded", "for=unknown")],
            &trusted,
        );
        assert_eq!(c.ip, ip("10.0.0.5"));
    }

    #[test]
    fn the_protocol_comes_from_a_trusted_proxy_only() {
        let c = client(
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("x-forwarded-proto", "https"),
            ],
            &["10.0.0.0/24"],
        );
        assert_eq!(
            c,
            Client {
                ip: ip("198.51.100.7"),
                https: true
            }
        );
        let c = client(&[("x-forwarded-proto", "https")], &["10.0.0.0/24"]);
        assert_eq!(
            c,
            Client {
                ip: ip("10.0.0.5"),
                https: true
            }
        );
        let c = client(&[("x-forwarded-proto", "https")], &[]);
        assert!(!c.https, "from an untrusted peer");
    }

    #[test]
    fn nodes_in_every_spelling() {
        assert_eq!(parse_node("192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("192.0.2.1:4711"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]:4711"), Some(ip("2001:db8::1")));
        assert_eq!(
            parse_node("\"[2001:db8::1]:4711\""),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
    }
}
