//! Resolving callback host names with hickory-resolver: A and AAAA, no search domains (a callback host
//! is always taken as a fully qualified name, so `internal` never becomes `internal.corp.example`), the
//! configured servers or the system's, and a time budget that is part of the attempt's timeout.
//! Every address it returns is judged by the policy before anything connects.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

pub struct DnsResolver {
    resolver: TokioResolver,
}

/// Why no resolver could be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConf(String),
    #[error("no DNS servers are configured (webhooks.dns_servers or /etc/resolv.conf)")]
    NoServers,
    #[error("cannot build the DNS resolver: {0}")]
    Build(String),
}

/// Why a name gave no address to connect to.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error(
        "the DNS lookup of {host} took longer than {budget_ms} ms: is the DNS server \
         (webhooks.dns_servers, else /etc/resolv.conf) reachable?"
    )]
    Timeout { host: String, budget_ms: u128 },
    /// `reason` is a sentence (see [`describe`]).
    #[error("the DNS lookup of {host} failed: {reason}")]
    Failed { host: String, reason: String },
    #[error("{host} has no address: DNS knows the name but it has no A or AAAA record")]
    NoRecords { host: String },
}

impl DnsResolver {
    /// With `servers` empty, the name servers of /etc/resolv.conf (but none of its search domains).
    pub fn new(
        servers: &[SocketAddr],
        per_query_timeout: Duration,
    ) -> Result<DnsResolver, ResolverError> {
        let (name_servers, mut opts) = if servers.is_empty() {
            let (config, opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolverError::SystemConf(e.to_string()))?;
            let (_, _, name_servers) = config.into_parts();
            (name_servers, opts)
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            (name_servers, ResolverOpts::default())
        };
        if name_servers.is_empty() {
            return Err(ResolverError::NoServers);
        }
        opts.ndots = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = per_query_timeout;
        opts.attempts = 1;
        let config = ResolverConfig::from_name_servers(name_servers);
        let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(DnsResolver { resolver })
    }

    /// Every A and AAAA address of `host`, within `budget`.
    pub async fn lookup(&self, host: &str, budget: Duration) -> Result<Vec<IpAddr>, LookupError> {
        // A trailing dot makes the name absolute: no search list, no ndots games.
        let fqdn = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        let lookup = tokio::time::timeout(budget, self.resolver.lookup_ip(fqdn.as_str()))
            .await
            .map_err(|_| LookupError::Timeout {
                host: host.to_string(),
                budget_ms: budget.as_millis(),
            })?
            .map_err(|e| {
                if e.is_no_records_found() && !e.is_nx_domain() {
                    LookupError::NoRecords {
                        host: host.to_string(),
                    }
                } else {
                    LookupError::Failed {
                        host: host.to_string(),
                        reason: describe(&e),
                    }
                }
            })?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(LookupError::NoRecords {
                host: host.to_string(),
            });
        }
        Ok(addrs)
    }
}

/// A resolver error as a sentence: hickory's own texts are written for its developers (a query's
/// `Debug` form, a bare response code).
fn describe(e: &hickory_resolver::net::NetError) -> String {
    use hickory_resolver::net::{DnsError, NetError};
    if e.is_nx_domain() {
        return "the name does not exist (NXDOMAIN): check its spelling, and that the DNS servers \
                asked (webhooks.dns_servers, else /etc/resolv.conf) know it"
            .to_string();
    }
    match e {
        NetError::Timeout => {
            "no DNS server answered in time: is the DNS server (webhooks.dns_servers, \
                              else /etc/resolv.conf) reachable?"
                .to_string()
        }
        NetError::Dns(DnsError::ResponseCode(code)) => format!(
            "the DNS server answered {code} ({}): it could not or would not resolve the name",
            u16::from(*code)
        ),
        NetError::Io(io) => format!(
            "the DNS server could not be asked ({io}): check webhooks.dns_servers, else \
             /etc/resolv.conf"
        ),
        NetError::NoConnections => "no DNS server could be reached: check webhooks.dns_servers, \
                                    else /etc/resolv.conf"
            .to_string(),
        other => other.to_string(),
    }
}
