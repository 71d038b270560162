//! The callback-URL policy: which URLs and which IP addresses a webhook may be
//! sent to. It owns the static checks on a configured callback URL (scheme,
//! user-info, host, `localhost` names, IP literals), the table of forbidden
//! address ranges, the operator's `allow_private_cidrs` exceptions and the
//! rule that the appliance never calls itself. Everything here is decided in
//! memory: resolving names and connecting belong to the dispatcher, which
//! hands every resolved address back to [`Policy::check_resolved`] before it
//! connects, so that a name pointing at 127.0.0.1 is caught as surely as the
//! literal.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Where webhooks may go. `Default` is the strict policy: https only, no
/// exceptions, no self address known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Also accept `http` URLs (for test set-ups and trusted LANs).
    pub allow_http: bool,
    /// Ranges the operator explicitly allows even though the table forbids
    /// them (e.g. an internal receiver on 10.1.2.3/32).
    pub allow_private_cidrs: Vec<IpNet>,
    /// The appliance's own listen address; a webhook to it would loop back
    /// into the appliance.
    pub self_addr: Option<SocketAddr>,
}

/// A parsed, normalised callback URL that passed the static checks (scheme,
/// user-info, host, localhost names, IP literal judged).
///
/// `url` is kept exactly as the `url` crate normalised it (a trailing dot of
/// the host stays there, since that is what the operator configured); `host`
/// is the form to resolve and to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackTarget {
    pub url: Url,
    pub host: TargetHost,
    /// The explicit port, or the scheme's default (443 or 80).
    pub port: u16,
}

/// The host of a [`CallbackTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal, already judged by [`Policy::check_url`].
    Ip(IpAddr),
    /// A DNS name: lower-case ASCII (punycode), no trailing dot. Its
    /// addresses still have to pass [`Policy::check_resolved`].
    Name(String),
}

/// The rule that forbade an address: a named range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub cidr: &'static str,
    pub name: &'static str,
}

/// The fallback IPv6 rule. Unlike the other rules, its `cidr` is the range
/// the address lies *outside* of: only global unicast may be called.
pub const OUTSIDE_GLOBAL_UNICAST: Rule = Rule {
    cidr: "2000::/3",
    name: "outside global unicast",
};

impl fmt::Display for Rule {
    /// A phrase that completes "X is …", e.g. "a private address (10.0.0.0/8)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == OUTSIDE_GLOBAL_UNICAST {
            write!(f, "outside global unicast space ({})", self.cidr)
        } else {
            write!(
                f,
                "{} {} address ({})",
                article(self.name),
                self.name,
                self.cidr
            )
        }
    }
}

/// "a" or "an" for the rule names in the tables below. The names are fixed,
/// so a spelling rule is enough; the tests render every rule.
fn article(name: &str) -> &'static str {
    let starts_with_vowel = name
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    if starts_with_vowel && !name.starts_with("uni") {
        "an"
    } else {
        "a"
    }
}

/// Why a URL or address is refused. Display gives a sentence an operator
/// understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("the scheme must be https (or http where allow_http is on), not {0:?}")]
    Scheme(String),
    #[error("the URL must not carry a user name or password")]
    UserInfo,
    #[error("the URL has no host")]
    NoHost,
    #[error("port 0 is not a port anything can be reached on")]
    PortZero,
    #[error("{0:?} is a localhost name")]
    LocalhostName(String),
    /// The address and port that would have been called.
    #[error("{0} is this appliance's own listen address")]
    SelfAddress(SocketAddr),
    /// `exceptions` is the configured `allow_private_cidrs` (empty if none),
    /// carried so the message can show the operator what did not match.
    #[error("{}", forbidden_message(.addr, .rule, .exceptions))]
    Forbidden {
        addr: IpAddr,
        rule: Rule,
        exceptions: Vec<IpNet>,
    },
    /// A name resolved to nothing. Holds the name, or "" where the caller
    /// did not say it (see [`Policy::check_resolved`]).
    #[error("{}", no_addresses_message(.0))]
    NoAddresses(String),
}

impl Refusal {
    /// A stable machine word for logs, metrics and API responses; unlike the
    /// Display text it never changes wording.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidUrl(_) => "invalid_url",
            Refusal::Scheme(_) => "scheme",
            Refusal::UserInfo => "userinfo",
            Refusal::NoHost => "no_host",
            Refusal::PortZero => "port",
            Refusal::LocalhostName(_) => "localhost",
            Refusal::SelfAddress(_) => "self_address",
            Refusal::Forbidden { .. } => "blocked_address",
            Refusal::NoAddresses(_) => "no_addresses",
        }
    }
}

fn forbidden_message(addr: &IpAddr, rule: &Rule, exceptions: &[IpNet]) -> String {
    // An address judged by its embedded IPv4 address would otherwise read
    // "::ffff:7f00:1 is a loopback address (127.0.0.0/8)", which looks wrong.
    let mut text = match addr {
        IpAddr::V6(v6) => match embedded_ipv4(*v6) {
            Some(v4) => format!("{addr} embeds {v4}, {rule}"),
            None => format!("{addr} is {rule}"),
        },
        IpAddr::V4(_) => format!("{addr} is {rule}"),
    };
    // Operators who configured exceptions need to see that they were
    // consulted and did not match, or they will suspect a typo elsewhere.
    if !exceptions.is_empty() {
        let list: Vec<String> = exceptions.iter().map(ToString::to_string).collect();
        text.push_str(&format!(
            " and is not covered by the configured exceptions (allow_private_cidrs: {})",
            list.join(", ")
        ));
    }
    // And what would allow it, so that an operator with an on-prem receiver knows the one setting to
    // change (a mapped address is covered by its IPv4 host, as `exception_for` judges it).
    let host: IpNet = match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpNet::from(IpAddr::V4(v4)),
            None => IpNet::from(*addr),
        },
        IpAddr::V4(_) => IpNet::from(*addr),
    };
    text.push_str(&format!(
        "; to allow it, add \"{host}\" to webhooks.allow_private_cidrs"
    ));
    text
}

fn no_addresses_message(host: &str) -> String {
    if host.is_empty() {
        "the host name resolved to no addresses".to_owned()
    } else {
        format!("{host} resolved to no addresses")
    }
}

/// How an address was allowed: the decision names the exception when one
/// was needed, so the dispatcher can log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// No forbidden range applies.
    Public,
    /// `rule` forbids the address, but the configured exception `cidr`
    /// allows it.
    Exception { cidr: IpNet, rule: Rule },
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Public => f.write_str("allowed"),
            Allowed::Exception { cidr, rule } => {
                write!(f, "allowed by allow_private_cidrs {cidr} although {rule}")
            }
        }
    }
}

impl Policy {
    /// The static checks on a configured callback URL. An IP literal, in any
    /// spelling the WHATWG parser accepts (`2130706433`, `0x7f.1`,
    /// `[::ffff:127.0.0.1]`), is normalised by the `url` crate and judged
    /// here like a resolved address; a name is only checked for
    /// `localhost`, and its addresses are judged after resolution.
    ///
    /// Notes on what the `url` crate does first:
    /// - `https:///x` is read as `https://x/` (WHATWG skips extra slashes),
    ///   so it yields the name `x`, not a missing host; `https://` fails.
    /// - a zone id (`https://[fe80::1%25eth0]/`) is not valid URL syntax and
    ///   fails to parse, so it is refused as an invalid URL.
    /// - an empty user-info (`https://@host/`) is dropped, so it passes.
    pub fn check_url(&self, raw: &str) -> Result<CallbackTarget, Refusal> {
        let url = Url::parse(raw).map_err(|e| Refusal::InvalidUrl(e.to_string()))?;
        let default_port = match url.scheme() {
            "https" => 443,
            "http" if self.allow_http => 80,
            other => return Err(Refusal::Scheme(other.to_owned())),
        };
        // Credentials in a callback URL leak into logs and the UI; receivers
        // that need them get them through headers instead.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::UserInfo);
        }
        let port = url.port().unwrap_or(default_port);
        if port == 0 {
            return Err(Refusal::PortZero);
        }
        let host = match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Ipv4(v4)) => {
                self.check_addr(IpAddr::V4(v4), port)?;
                TargetHost::Ip(IpAddr::V4(v4))
            }
            Some(Host::Ipv6(v6)) => {
                self.check_addr(IpAddr::V6(v6), port)?;
                TargetHost::Ip(IpAddr::V6(v6))
            }
            Some(Host::Domain(name)) => TargetHost::Name(normalise_name(name)?),
        };
        Ok(CallbackTarget { url, host, port })
    }

    /// Judges one resolved address: self address, forbidden ranges,
    /// exceptions.
    pub fn check_addr(&self, addr: IpAddr, port: u16) -> Result<(), Refusal> {
        self.decide(addr, port).map(|_| ())
    }

    /// Like [`Policy::check_addr`], but says how the address was allowed,
    /// naming the exception when one applied.
    pub fn decide(&self, addr: IpAddr, port: u16) -> Result<Allowed, Refusal> {
        // The self check comes first and exceptions cannot lift it: allowing
        // 127.0.0.0/8 for a local receiver must not let a webhook loop back
        // into the appliance.
        if self.is_self(addr, port) {
            return Err(Refusal::SelfAddress(SocketAddr::new(addr, port)));
        }
        let Some(rule) = forbidden_rule(addr) else {
            return Ok(Allowed::Public);
        };
        match self.exception_for(addr) {
            Some(cidr) => Ok(Allowed::Exception { cidr, rule }),
            None => Err(Refusal::Forbidden {
                addr,
                rule,
                exceptions: self.allow_private_cidrs.clone(),
            }),
        }
    }

    /// Judges every address a name resolved to. One bad address refuses the
    /// whole set: the dispatcher may connect to any of them, and DNS
    /// rebinding relies on mixing a public address with a private one.
    /// An empty set is refused too, as there is nothing safe to call.
    pub fn check_resolved(&self, addrs: &[IpAddr], port: u16) -> Result<(), Refusal> {
        self.check_resolved_host("", addrs, port)
    }

    /// [`Policy::check_resolved`] for a known host name, which then appears
    /// in a [`Refusal::NoAddresses`].
    pub fn check_resolved_host(
        &self,
        host: &str,
        addrs: &[IpAddr],
        port: u16,
    ) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::NoAddresses(host.to_owned()));
        }
        addrs
            .iter()
            .try_for_each(|&addr| self.check_addr(addr, port))
    }

    fn is_self(&self, addr: IpAddr, port: u16) -> bool {
        let Some(me) = self.self_addr else {
            return false;
        };
        if me.port() != port {
            return false;
        }
        // Canonical forms so that ::ffff:127.0.0.1 matches 127.0.0.1. An
        // unspecified listen address means every interface. Treating every
        // address on that port as ourselves would refuse every https
        // receiver on 443, so only the addresses that certainly reach this
        // host count: loopback and the unspecified address. Other interface
        // addresses are private or public ones the range table and the
        // admin API's authentication already stand in front of.
        let (mine, addr) = (me.ip().to_canonical(), addr.to_canonical());
        if mine.is_unspecified() {
            return addr.is_loopback() || addr.is_unspecified();
        }
        mine == addr
    }

    fn exception_for(&self, addr: IpAddr) -> Option<IpNet> {
        // An IPv4-mapped address is the IPv4 host itself, so an IPv4
        // exception covers it. NAT64 forms are deliberately not unwrapped
        // here: they reach the host through a translator, and an operator
        // who wants that has to list the IPv6 range.
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow_private_cidrs
            .iter()
            .copied()
            .find(|net| net.contains(&addr) || mapped.is_some_and(|m| net.contains(&m)))
    }
}

/// Lower-cases a host name, drops one trailing dot (`example.com.` is the
/// same name, fully qualified) and refuses `localhost` names, which resolve
/// to the appliance itself without ever asking DNS.
fn normalise_name(raw: &str) -> Result<String, Refusal> {
    // `url` already lower-cases and punycodes names of special schemes; this
    // is only a guard against that ever changing.
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(Refusal::NoHost);
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(Refusal::LocalhostName(raw.to_owned()));
    }
    // `url` accepts empty labels (`a..b`, `x..`); a resolver would not, and
    // refusing them now gives the operator the message at configuration time.
    if name.split('.').any(str::is_empty) {
        return Err(Refusal::InvalidUrl(format!(
            "the host name {raw:?} has an empty label"
        )));
    }
    Ok(name.to_owned())
}

/// The forbidden-range judgement alone (no exceptions): `None` if allowed,
/// `Some(rule)` if forbidden.
pub fn forbidden_rule(addr: IpAddr) -> Option<Rule> {
    match addr {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Forbidden IPv4 ranges. The ranges do not overlap, so order does not
/// matter. Names are adjectives that read after "a"/"an" and before
/// "address".
const V4_RULES: [Rule; 15] = [
    rule("0.0.0.0/8", "this-network"),
    rule("10.0.0.0/8", "private"),
    // Also where Alibaba Cloud puts its metadata service (100.100.100.200).
    rule("100.64.0.0/10", "CGNAT shared"),
    rule("127.0.0.0/8", "loopback"),
    // Cloud metadata services live at 169.254.169.254.
    rule("169.254.0.0/16", "link-local"),
    rule("172.16.0.0/12", "private"),
    rule("192.0.0.0/24", "IETF protocol assignment"),
    rule("192.0.2.0/24", "documentation"),
    rule("192.88.99.0/24", "6to4 relay anycast"),
    rule("192.168.0.0/16", "private"),
    rule("198.18.0.0/15", "benchmarking"),
    rule("198.51.100.0/24", "documentation"),
    rule("203.0.113.0/24", "documentation"),
    rule("224.0.0.0/4", "multicast"),
    // Includes the limited broadcast address 255.255.255.255.
    rule("240.0.0.0/4", "reserved"),
];

/// Named forbidden IPv6 ranges, checked in order, first match wins (`::` and
/// `::1` sit inside `::/96` and must come before it). Anything else outside
/// 2000::/3 falls to [`OUTSIDE_GLOBAL_UNICAST`]; the named ones are there so
/// the operator gets a precise reason for the common cases.
const V6_RULES: [Rule; 15] = [
    rule("::/128", "unspecified"),
    rule("::1/128", "loopback"),
    rule("::/96", "IPv4-compatible"),
    rule("100::/64", "discard-only"),
    rule("64:ff9b:1::/48", "local-use NAT64"),
    rule("5f00::/16", "segment-routing (SRv6)"),
    // Includes AWS's fd00:ec2::254 metadata service.
    rule("fc00::/7", "unique-local"),
    rule("fe80::/10", "link-local"),
    rule("fec0::/10", "site-local"),
    rule("ff00::/8", "multicast"),
    // Inside 2000::/3 but not globally routed, or tunnelling to an IPv4
    // address we cannot see (Teredo, 6to4).
    rule("2001::/23", "Teredo/benchmarking/ORCHID"),
    rule("2001:db8::/32", "documentation"),
    rule("2002::/16", "6to4"),
    rule("3fff::/20", "documentation"),
    // Not reached by `forbidden_v6` (the embedded IPv4 address is judged
    // instead); listed so the range is documented and tested as handled.
    rule("::ffff:0:0/96", "IPv4-mapped"),
];

const fn rule(cidr: &'static str, name: &'static str) -> Rule {
    Rule { cidr, name }
}

/// The tables are kept as text, readable next to the RFCs, and parsed once.
/// A typo panics on first use, and the tests use every table entry.
static V4_TABLE: LazyLock<Vec<(Ipv4Net, Rule)>> = LazyLock::new(|| parse_table(&V4_RULES));
static V6_TABLE: LazyLock<Vec<(Ipv6Net, Rule)>> = LazyLock::new(|| parse_table(&V6_RULES));

fn parse_table<N>(rules: &[Rule]) -> Vec<(N, Rule)>
where
    N: FromStr,
    N::Err: fmt::Debug,
{
    rules
        .iter()
        .map(|r| {
            let net = r
                .cidr
                .parse()
                .unwrap_or_else(|e| panic!("bad CIDR {:?} in policy table: {e:?}", r.cidr));
            (net, *r)
        })
        .collect()
}

const GLOBAL_UNICAST: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);
const NAT64_WELL_KNOWN: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

fn forbidden_v4(addr: Ipv4Addr) -> Option<Rule> {
    V4_TABLE
        .iter()
        .find(|(net, _)| net.contains(&addr))
        .map(|&(_, rule)| rule)
}

fn forbidden_v6(addr: Ipv6Addr) -> Option<Rule> {
    // Embedded forms first: they reach an IPv4 host, and that host is what
    // must be judged (::ffff:8.8.8.8 is fine, ::ffff:127.0.0.1 is not).
    if let Some(v4) = embedded_ipv4(addr) {
        return forbidden_v4(v4);
    }
    if let Some(&(_, rule)) = V6_TABLE.iter().find(|(net, _)| net.contains(&addr)) {
        return Some(rule);
    }
    if !GLOBAL_UNICAST.contains(&addr) {
        return Some(OUTSIDE_GLOBAL_UNICAST);
    }
    None
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`) or well-known
/// NAT64 (`64:ff9b::/96`) address. IPv4-compatible `::/96` is deliberately
/// not unwrapped: it is deprecated and always forbidden.
fn embedded_ipv4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return Some(v4);
    }
    if NAT64_WELL_KNOWN.contains(&addr) {
        let [.., a, b, c, d] = addr.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("test address {s:?}: {e}"))
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("test CIDR {s:?}: {e}"))
    }

    fn with_exceptions(cidrs: &[&str]) -> Policy {
        Policy {
            allow_private_cidrs: cidrs.iter().map(|c| net(c)).collect(),
            ..Policy::default()
        }
    }

    /// (cidr, name, [first, middle, last]) for every IPv4 rule.
    const V4_CASES: &[(&str, &str, [&str; 3])] = &[
        (
            "0.0.0.0/8",
            "this-network",
            ["0.0.0.0", "0.1.2.3", "0.255.255.255"],
        ),
        (
            "10.0.0.0/8",
            "private",
            ["10.0.0.0", "10.1.2.3", "10.255.255.255"],
        ),
        (
            "100.64.0.0/10",
            "CGNAT shared",
            ["100.64.0.0", "100.100.100.200", "100.127.255.255"],
        ),
        (
            "127.0.0.0/8",
            "loopback",
            ["127.0.0.0", "127.0.0.1", "127.255.255.255"],
        ),
        (
            "169.254.0.0/16",
            "link-local",
            ["169.254.0.0", "169.254.169.254", "169.254.255.255"],
        ),
        (
            "172.16.0.0/12",
            "private",
            ["172.16.0.0", "172.20.1.1", "172.31.255.255"],
        ),
        (
            "192.0.0.0/24",
            "IETF protocol assignment",
            ["192.0.0.0", "192.0.0.8", "192.0.0.255"],
        ),
        (
            "192.0.2.0/24",
            "documentation",
            ["192.0.2.0", "192.0.2.100", "192.0.2.255"],
        ),
        (
            "192.88.99.0/24",
            "6to4 relay anycast",
            ["192.88.99.0", "192.88.99.1", "192.88.99.255"],
        ),
        (
            "192.168.0.0/16",
            "private",
            ["192.168.0.0", "192.168.1.1", "192.168.255.255"],
        ),
        (
            "198.18.0.0/15",
            "benchmarking",
            ["198.18.0.0", "198.19.0.1", "198.19.255.255"],
        ),
        (
            "198.51.100.0/24",
            "documentation",
            ["198.51.100.0", "198.51.100.7", "198.51.100.255"],
        ),
        (
            "203.0.113.0/24",
            "documentation",
            ["203.0.113.0", "203.0.113.9", "203.0.113.255"],
        ),
        (
            "224.0.0.0/4",
            "multicast",
            ["224.0.0.0", "239.1.2.3", "239.255.255.255"],
        ),
        (
            "240.0.0.0/4",
            "reserved",
            ["240.0.0.0", "250.1.2.3", "255.255.255.255"],
        ),
    ];

    /// Public addresses, mostly just outside a forbidden range's boundary.
    const V4_ALLOWED: &[&str] = &[
        "1.0.0.0",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "191.255.255.255",
        "192.0.1.0",
        "192.0.1.255",
        "192.0.3.0",
        "192.88.98.255",
        "192.88.100.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "198.51.99.255",
        "198.51.101.0",
        "203.0.112.255",
        "203.0.114.0",
        "223.255.255.255",
        "8.8.8.8",
        "1.1.1.1",
    ];

    /// (cidr, name, addresses) for every IPv6 rule; IPv4-embedding forms are
    /// judged by the IPv4 rule they embed.
    const V6_CASES: &[(&str, &str, &[&str])] = &[
        ("::/128", "unspecified", &["::"]),
        ("::1/128", "loopback", &["::1"]),
        (
            "::/96",
            "IPv4-compatible",
            &["::2", "::127.0.0.1", "::8.8.8.8", "::ffff:ffff"],
        ),
        (
            "100::/64",
            "discard-only",
            &["100::", "100::1", "100::ffff:ffff:ffff:ffff"],
        ),
        (
            "64:ff9b:1::/48",
            "local-use NAT64",
            &[
                "64:ff9b:1::",
                "64:ff9b:1::8.8.8.8",
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "5f00::/16",
            "segment-routing (SRv6)",
            &[
                "5f00::",
                "5f00:1::1",
                "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "fc00::/7",
            "unique-local",
            &[
                "fc00::",
                "fd00:ec2::254",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "fe80::/10",
            "link-local",
            &[
                "fe80::",
                "fe80::1",
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "fec0::/10",
            "site-local",
            &[
                "fec0::",
                "fec0::1",
                "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "ff00::/8",
            "multicast",
            &[
                "ff00::",
                "ff02::1",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "2001::/23",
            "Teredo/benchmarking/ORCHID",
            &[
                "2001::",
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "2001:2::1",
                "2001:10::1",
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "2001:db8::/32",
            "documentation",
            &[
                "2001:db8::",
                "2001:db8::1",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "2002::/16",
            "6to4",
            &[
                "2002::",
                "2002:7f00:1::",
                "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "3fff::/20",
            "documentation",
            &[
                "3fff::",
                "3fff::1",
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "2000::/3",
            "outside global unicast",
            &[
                "::1:0:0:0",
                "1::",
                "100:0:0:1::",
                "64:ff9b::1:0:0",
                "64:ff9b:2::",
                "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "4000::",
                "4000::1",
                "e000::1",
                "::ffff:0:0:1",
            ],
        ),
        // Embedded IPv4: judged by the IPv4 rule.
        (
            "127.0.0.0/8",
            "loopback",
            &["::ffff:127.0.0.1", "::ffff:7f00:1", "64:ff9b::7f00:1"],
        ),
        (
            "10.0.0.0/8",
            "private",
            &["::ffff:10.0.0.1", "64:ff9b::10.0.0.1"],
        ),
        (
            "0.0.0.0/8",
            "this-network",
            &["::ffff:0.0.0.0", "64:ff9b::"],
        ),
        (
            "169.254.0.0/16",
            "link-local",
            &["::ffff:169.254.169.254", "64:ff9b::169.254.169.254"],
        ),
    ];

    const V6_ALLOWED: &[&str] = &[
        "2606:4700:4700::1111",
        "2a00:1450:4001::1",
        "2001:4860:4860::8888",
        "2000::",
        "2001:200::",
        "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db9::",
        "2003::",
        "3ffe:ffff::1",
        "3fff:1000::",
        "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "64:ff9b::1.1.1.1",
    ];

    #[test]
    fn tables_parse_and_have_no_host_bits() {
        for (net, rule) in V4_TABLE.iter() {
            assert_eq!(*net, net.trunc(), "{rule:?}");
        }
        for (net, rule) in V6_TABLE.iter() {
            assert_eq!(*net, net.trunc(), "{rule:?}");
        }
        let v4: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert_eq!(V4_TABLE[1].0, v4);
    }

    #[test]
    fn every_rule_has_test_cases() {
        for rule in V4_RULES {
            assert!(
                V4_CASES
                    .iter()
                    .any(|&(c, n, _)| (c, n) == (rule.cidr, rule.name)),
                "no IPv4 cases for {rule:?}"
            );
        }
        // ::ffff:0:0/96 is covered by the embedded cases and the mapped tests.
        for rule in V6_RULES.iter().filter(|r| r.cidr != "::ffff:0:0/96") {
            assert!(
                V6_CASES
                    .iter()
                    .any(|&(c, n, _)| (c, n) == (rule.cidr, rule.name)),
                "no IPv6 cases for {rule:?}"
            );
        }
    }

    #[test]
    fn ipv4_ranges_forbidden_with_their_rule() {
        for &(cidr, name, addrs) in V4_CASES {
            for a in addrs {
                assert_eq!(
                    forbidden_rule(ip(a)),
                    Some(Rule { cidr, name }),
                    "{a} should be forbidden by {cidr}"
                );
            }
        }
    }

    #[test]
    fn ipv4_public_addresses_allowed() {
        for a in V4_ALLOWED {
            assert_eq!(forbidden_rule(ip(a)), None, "{a} should be allowed");
            assert_eq!(Policy::default().check_addr(ip(a), 443), Ok(()));
        }
    }

    #[test]
    fn ipv6_ranges_forbidden_with_their_rule() {
        for &(cidr, name, addrs) in V6_CASES {
            for a in addrs {
                assert_eq!(
                    forbidden_rule(ip(a)),
                    Some(Rule { cidr, name }),
                    "{a} should be forbidden by {cidr}"
                );
            }
        }
    }

    #[test]
    fn ipv6_global_addresses_allowed() {
        for a in V6_ALLOWED {
            assert_eq!(forbidden_rule(ip(a)), None, "{a} should be allowed");
            assert_eq!(Policy::default().check_addr(ip(a), 443), Ok(()));
        }
    }

    /// (url, code, rule cidr for blocked addresses) under the default policy.
    const URL_REFUSED: &[(&str, &str, Option<&str>)] = &[
        (
            "https://2130706433/",
            "blocked_address",
            Some("127.0.0.0/8"),
        ),
        ("https://0x7f.1/", "blocked_address", Some("127.0.0.0/8")),
        (
            "https://0177.0.0.1/",
            "blocked_address",
            Some("127.0.0.0/8"),
        ),
        ("https://127.1/", "blocked_address", Some("127.0.0.0/8")),
        (
            "https://0x7f000001/",
            "blocked_address",
            Some("127.0.0.0/8"),
        ),
        (
            "https://[::ffff:127.0.0.1]/",
            "blocked_address",
            Some("127.0.0.0/8"),
        ),
        (
            "https://[::ffff:7f00:1]/",
            "blocked_address",
            Some("127.0.0.0/8"),
        ),
        ("https://[::127.0.0.1]/", "blocked_address", Some("::/96")),
        (
            "https://[64:ff9b::7f00:1]/",
            "blocked_address",
            Some("127.0.0.0/8"),
        ),
        (
            "https://[2002:7f00:1::]/",
            "blocked_address",
            Some("2002::/16"),
        ),
        (
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "blocked_address",
            Some("2001::/23"),
        ),
        (
            "https://169.254.169.254/latest/meta-data",
            "blocked_address",
            Some("169.254.0.0/16"),
        ),
        (
            "https://[fd00:ec2::254]/",
            "blocked_address",
            Some("fc00::/7"),
        ),
        (
            "https://100.100.100.200/",
            "blocked_address",
            Some("100.64.0.0/10"),
        ),
        ("https://[::1]:8443/", "blocked_address", Some("::1/128")),
        ("https://0.0.0.0/", "blocked_address", Some("0.0.0.0/8")),
        ("https://LOCALHOST/", "localhost", None),
        ("https://localhost./", "localhost", None),
        ("https://foo.localhost./", "localhost", None),
        ("https://a.b.LocalHost:8443/", "localhost", None),
        ("https://local%68ost/", "localhost", None),
        ("http://example.com/", "scheme", None),
        ("ftp://example.com/", "scheme", None),
        ("file:///etc/passwd", "scheme", None),
        ("https://user:pw@example.com/", "userinfo", None),
        ("https://user@example.com/", "userinfo", None),
        ("https://:pw@example.com/", "userinfo", None),
        ("https://", "invalid_url", None),
        ("not a url", "invalid_url", None),
        ("https://1.2.3.4.5/", "invalid_url", None),
        ("https://example..com/", "invalid_url", None),
        ("https://example.com../", "invalid_url", None),
        ("https://./", "no_host", None),
        ("https://example.com:0/", "port", None),
        ("https://example.com:000/", "port", None),
        ("https://8.8.8.8:0/hook", "port", None),
        // The url crate rejects zone ids in IPv6 literals outright.
        ("https://[fe80::1%25eth0]/", "invalid_url", None),
        ("https://[fe80::1%eth0]/", "invalid_url", None),
        ("https://[fe80::1]/", "blocked_address", Some("fe80::/10")),
    ];

    #[test]
    fn urls_refused() {
        let policy = Policy::default();
        for &(raw, code, cidr) in URL_REFUSED {
            let err = policy
                .check_url(raw)
                .expect_err(&format!("{raw} should be refused"));
            assert_eq!(err.code(), code, "{raw}: {err}");
            match (&err, cidr) {
                (Refusal::Forbidden { rule, .. }, Some(cidr)) => {
                    assert_eq!(rule.cidr, cidr, "{raw}: {err}")
                }
                (_, None) => {}
                (other, Some(_)) => panic!("{raw}: expected a blocked address, got {other:?}"),
            }
        }
    }

    /// (url, host, port) allowed under the default policy.
    fn url_allowed() -> Vec<(&'static str, TargetHost, u16)> {
        use TargetHost::{Ip, Name};
        vec![
            ("https://8.8.8.8:8443/hook", Ip(ip("8.8.8.8")), 8443),
            ("https://example.com/", Name("example.com".into()), 443),
            ("https://EXAMPLE.com./x", Name("example.com".into()), 443),
            ("https://example.com:443/", Name("example.com".into()), 443),
            ("https://example.com:1/", Name("example.com".into()), 1),
            (
                "https://Bücher.example/",
                Name("xn--bcher-kva.example".into()),
                443,
            ),
            (
                "https://localhost.example.com/",
                Name("localhost.example.com".into()),
                443,
            ),
            // WHATWG skips surplus slashes after a special scheme, so this is
            // https://nohost/ and nohost is an ordinary (single-label) name.
            ("https:///nohost", Name("nohost".into()), 443),
            // An empty user-info is dropped by the parser.
            ("https://@example.com/", Name("example.com".into()), 443),
            (
                "https://[2606:4700:4700::1111]/",
                Ip(ip("2606:4700:4700::1111")),
                443,
            ),
            ("https://[::ffff:8.8.8.8]/", Ip(ip("::ffff:8.8.8.8")), 443),
            (
                "https://[64:ff9b::8.8.8.8]/",
                Ip(ip("64:ff9b::8.8.8.8")),
                443,
            ),
            ("https://0x08080808/", Ip(ip("8.8.8.8")), 443),
        ]
    }

    #[test]
    fn urls_allowed() {
        let policy = Policy::default();
        for (raw, host, port) in url_allowed() {
            let target = policy
                .check_url(raw)
                .unwrap_or_else(|e| panic!("{raw} should be allowed: {e}"));
            assert_eq!(target.host, host, "{raw}");
            assert_eq!(target.port, port, "{raw}");
        }
        let target = policy.check_url("https://EXAMPLE.com./x").unwrap();
        assert_eq!(target.url.as_str(), "https://example.com./x");
    }

    #[test]
    fn http_only_with_allow_http() {
        let policy = Policy {
            allow_http: true,
            ..Policy::default()
        };
        let target = policy.check_url("http://example.com/").unwrap();
        assert_eq!(target.port, 80);
        assert_eq!(
            policy.check_url("http://example.com:8080/").unwrap().port,
            8080
        );
        assert_eq!(
            policy.check_url("ftp://example.com/"),
            Err(Refusal::Scheme("ftp".into()))
        );
        assert_eq!(
            policy.check_url("http://10.0.0.1/").unwrap_err().code(),
            "blocked_address"
        );
        assert_eq!(
            Policy::default().check_url("http://example.com/"),
            Err(Refusal::Scheme("http".into()))
        );
    }

    #[test]
    fn exceptions_allow_only_their_range() {
        let policy = with_exceptions(&["127.0.0.1/32"]);
        assert_eq!(policy.check_addr(ip("127.0.0.1"), 443), Ok(()));
        assert_eq!(
            policy.decide(ip("127.0.0.1"), 443),
            Ok(Allowed::Exception {
                cidr: net("127.0.0.1/32"),
                rule: Rule {
                    cidr: "127.0.0.0/8",
                    name: "loopback"
                },
            })
        );
        // An IPv4-mapped address is the IPv4 host, so the IPv4 CIDR covers it.
        assert_eq!(policy.check_addr(ip("::ffff:127.0.0.1"), 443), Ok(()));
        assert!(policy.check_url("https://[::ffff:127.0.0.1]/").is_ok());
        assert!(policy.check_url("https://127.0.0.1/").is_ok());
        // NAT64 forms are not unwrapped for exceptions.
        assert!(policy.check_addr(ip("64:ff9b::7f00:1"), 443).is_err());

        let err = policy.check_addr(ip("127.0.0.2"), 443).unwrap_err();
        assert_eq!(err.code(), "blocked_address");
        let text = err.to_string();
        assert!(
            text.contains("(allow_private_cidrs: 127.0.0.1/32)"),
            "{text}"
        );
        assert_eq!(
            text,
            "127.0.0.2 is a loopback address (127.0.0.0/8) and is not covered by the \
             configured exceptions (allow_private_cidrs: 127.0.0.1/32); to allow it, add \
             \"127.0.0.2/32\" to webhooks.allow_private_cidrs"
        );
        // With no exception configured yet, the refusal still names the setting and what to add.
        let none = Policy::default();
        let text = none
            .check_addr(ip("10.1.2.3"), 443)
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "10.1.2.3 is a private address (10.0.0.0/8); to allow it, add \"10.1.2.3/32\" to \
             webhooks.allow_private_cidrs"
        );
        let text = none
            .check_addr(ip("::ffff:10.1.2.3"), 443)
            .unwrap_err()
            .to_string();
        assert!(
            text.ends_with("add \"10.1.2.3/32\" to webhooks.allow_private_cidrs"),
            "{text}"
        );
        let text = none.check_addr(ip("fd00::1"), 443).unwrap_err().to_string();
        assert!(
            text.ends_with("add \"fd00::1/128\" to webhooks.allow_private_cidrs"),
            "{text}"
        );
        assert_eq!(policy.decide(ip("8.8.8.8"), 443), Ok(Allowed::Public));
    }

    #[test]
    fn ipv6_exceptions() {
        let policy = with_exceptions(&["fd00::/8", "10.0.0.0/8"]);
        assert_eq!(policy.check_addr(ip("fd00:ec2::254"), 443), Ok(()));
        assert_eq!(policy.check_addr(ip("10.9.8.7"), 443), Ok(()));
        assert!(policy.check_addr(ip("fc00::1"), 443).is_err());
        let text = policy.check_addr(ip("::1"), 443).unwrap_err().to_string();
        assert!(
            text.contains("(allow_private_cidrs: fd00::/8, 10.0.0.0/8)"),
            "{text}"
        );
    }

    #[test]
    fn self_address_refused_only_on_its_port() {
        let policy = Policy {
            allow_private_cidrs: vec![net("127.0.0.0/8")],
            self_addr: Some("127.0.0.1:8080".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(
            policy.check_url("https://127.0.0.1:8080/"),
            Err(Refusal::SelfAddress("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            policy
                .check_url("https://[::ffff:127.0.0.1]:8080/")
                .unwrap_err()
                .code(),
            "self_address"
        );
        assert!(policy.check_url("https://127.0.0.1:9000/").is_ok());
        assert!(policy.check_url("https://127.0.0.2:8080/").is_ok());
        assert_eq!(
            policy
                .check_resolved(&[ip("127.0.0.1")], 8080)
                .unwrap_err()
                .code(),
            "self_address"
        );

        // Without the exception the self check still wins: it is the more
        // precise reason.
        let strict = Policy {
            self_addr: Some("127.0.0.1:8080".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(
            strict
                .check_url("https://127.0.0.1:8080/")
                .unwrap_err()
                .code(),
            "self_address"
        );
    }

    #[test]
    fn unspecified_self_address_covers_loopback_on_its_port() {
        for me in ["0.0.0.0:443", "[::]:443"] {
            let policy = Policy {
                allow_private_cidrs: vec![
                    "127.0.0.0/8".parse().unwrap(),
                    "::1/128".parse().unwrap(),
                ],
                self_addr: Some(me.parse().unwrap()),
                ..Policy::default()
            };
            // A public receiver on the same port is someone else.
            assert!(policy.check_url("https://8.8.8.8/").is_ok(), "{me}");
            assert!(
                policy
                    .check_resolved(&[ip("2606:4700:4700::1111")], 443)
                    .is_ok(),
                "{me}"
            );
            // Loopback on our port is us, even where loopback is otherwise allowed.
            assert_eq!(
                policy.check_url("https://127.0.0.1/"),
                Err(Refusal::SelfAddress("127.0.0.1:443".parse().unwrap())),
                "{me}"
            );
            assert_eq!(
                policy.check_resolved(&[ip("::1")], 443).unwrap_err().code(),
                "self_address",
                "{me}"
            );
            assert!(policy.check_url("https://127.0.0.1:444/").is_ok(), "{me}");
            // Names are not judged until resolved.
            assert!(policy.check_url("https://example.com/").is_ok(), "{me}");
        }
    }

    #[test]
    fn check_resolved_refuses_any_bad_address() {
        let policy = Policy::default();
        let err = policy
            .check_resolved(&[ip("8.8.8.8"), ip("10.0.0.1")], 443)
            .unwrap_err();
        assert_eq!(
            err,
            Refusal::Forbidden {
                addr: ip("10.0.0.1"),
                rule: Rule {
                    cidr: "10.0.0.0/8",
                    name: "private"
                },
                exceptions: vec![],
            }
        );
        assert!(err.to_string().contains("10.0.0.1"));

        let err = policy.check_resolved(&[], 443).unwrap_err();
        assert_eq!(err, Refusal::NoAddresses(String::new()));
        assert_eq!(err.code(), "no_addresses");
        assert_eq!(err.to_string(), "the host name resolved to no addresses");
        assert_eq!(
            policy
                .check_resolved_host("example.com", &[], 443)
                .unwrap_err()
                .to_string(),
            "example.com resolved to no addresses"
        );

        assert_eq!(
            policy.check_resolved(&[ip("8.8.8.8"), ip("2606:4700:4700::1111")], 443),
            Ok(())
        );
    }

    #[test]
    fn messages_read_as_sentences() {
        let policy = Policy::default();
        // The judgement, without the remedy that every refusal ends with (tested above).
        let text = |a: &str| {
            let full = policy.check_addr(ip(a), 443).unwrap_err().to_string();
            let (judgement, remedy) = full.split_once("; to allow it, add ").expect("a remedy");
            assert!(
                remedy.ends_with(" to webhooks.allow_private_cidrs"),
                "{full}"
            );
            judgement.to_string()
        };
        assert_eq!(
            text("10.0.0.5"),
            "10.0.0.5 is a private address (10.0.0.0/8)"
        );
        assert_eq!(text("::"), ":: is an unspecified address (::/128)");
        assert_eq!(
            text("fd00::1"),
            "fd00::1 is a unique-local address (fc00::/7)"
        );
        assert_eq!(
            text("192.0.0.1"),
            "192.0.0.1 is an IETF protocol assignment address (192.0.0.0/24)"
        );
        assert_eq!(
            text("4000::1"),
            "4000::1 is outside global unicast space (2000::/3)"
        );
        assert_eq!(
            text("::ffff:127.0.0.1"),
            "::ffff:127.0.0.1 embeds 127.0.0.1, a loopback address (127.0.0.0/8)"
        );
        assert_eq!(
            text("64:ff9b::a00:1"),
            "64:ff9b::a00:1 embeds 10.0.0.1, a private address (10.0.0.0/8)"
        );
        // Every rule renders without a wrong article or a dangling word.
        for rule in V4_RULES.iter().chain(&V6_RULES) {
            let phrase = rule.to_string();
            assert!(phrase.ends_with(&format!("({})", rule.cidr)), "{phrase}");
            assert!(
                phrase.starts_with("a ") || phrase.starts_with("an "),
                "{phrase}"
            );
        }
        let url_text = |raw: &str| policy.check_url(raw).unwrap_err().to_string();
        assert_eq!(
            url_text("http://example.com/"),
            "the scheme must be https (or http where allow_http is on), not \"http\""
        );
        assert_eq!(
            url_text("https://LOCALHOST/"),
            "\"localhost\" is a localhost name"
        );
        assert_eq!(
            url_text("https://u:p@example.com/"),
            "the URL must not carry a user name or password"
        );
        assert_eq!(url_text("https://"), "the URL is not valid: empty host");
        let allowed = with_exceptions(&["127.0.0.1/32"])
            .decide(ip("127.0.0.1"), 443)
            .unwrap();
        assert_eq!(
            allowed.to_string(),
            "allowed by allow_private_cidrs 127.0.0.1/32 although a loopback address (127.0.0.0/8)"
        );
    }

    #[test]
    fn codes_are_stable() {
        let cases = [
            (Refusal::InvalidUrl(String::new()), "invalid_url"),
            (Refusal::Scheme("ftp".into()), "scheme"),
            (Refusal::UserInfo, "userinfo"),
            (Refusal::NoHost, "no_host"),
            (Refusal::PortZero, "port"),
            (Refusal::LocalhostName("localhost".into()), "localhost"),
            (
                Refusal::SelfAddress("127.0.0.1:1".parse().unwrap()),
                "self_address",
            ),
            (
                Refusal::Forbidden {
                    addr: ip("10.0.0.1"),
                    rule: V4_RULES[1],
                    exceptions: vec![],
                },
                "blocked_address",
            ),
            (Refusal::NoAddresses("x".into()), "no_addresses"),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code(), code);
        }
    }
}
