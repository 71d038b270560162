//! A real DNS server for the tests: hickory-server in-process on `127.0.0.1:<ephemeral>` (UDP and TCP on the
//! same port), authoritative for an in-memory zone `test.` whose A and AAAA records a test sets — and changes
//! while the server runs, for DNS-rebinding tests.
//!
//! Records have TTL 0 and the SOA minimum (the negative-caching TTL) is 0, so a resolver sees a change at its
//! next query. Names in the zone without records answer NXDOMAIN; names outside it are refused.
//!
//! Zones that something may connect to hold only loopback or documentation addresses. A zone may *answer* a
//! private address (10.0.0.5) for a policy test, as long as nothing connects there.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// The TTL of every record the tests set.
pub const TTL: u32 = 0;

/// The zone the server is authoritative for.
pub const ZONE: &str = "test.";

/// The DNS server; stopped (all its tasks aborted) when dropped.
pub struct DnsServer {
    /// `127.0.0.1:PORT`, UDP and TCP.
    pub addr: SocketAddr,
    origin: LowerName,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    // Dropping the server drops its `JoinSet`, which aborts the UDP and TCP tasks and the per-request tasks
    // they spawned.
    _server: Server<Catalog>,
}

impl DnsServer {
    /// Starts the server with an empty zone (only SOA and NS at the apex). Must run inside a Tokio runtime.
    pub async fn start() -> DnsServer {
        let origin = Name::from_ascii(ZONE).expect("zone name");
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let ns = Name::from_ascii("ns.test.").expect("NS name");
        let soa = SOA::new(
            ns.clone(),
            Name::from_ascii("hostmaster.test.").expect("SOA rname"),
            1,
            3600,
            600,
            86400,
            0,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1));
        assert!(zone.upsert_mut(
            Record::from_rdata(origin.clone(), TTL, RData::NS(NS(ns))),
            1
        ));
        let zone = Arc::new(zone);

        let origin = LowerName::new(&origin);
        let mut catalog = Catalog::new();
        catalog.upsert(origin.clone(), vec![zone.clone() as Arc<dyn ZoneHandler>]);

        let (udp, tcp) = bind_udp_and_tcp().await;
        let addr = udp.local_addr().expect("DNS socket address");
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 32);
        // The sockets are bound, so queries sent from now on wait in the kernel until the tasks read them.
        DnsServer {
            addr,
            origin,
            zone,
            _server: server,
        }
    }

    /// Replaces all A and AAAA records of `name` (`a.test` or `a.test.`; must be inside `test.`) with `addrs`
    /// (TTL 0). An empty `addrs` removes the name: it answers NXDOMAIN again. Takes effect for the next query.
    pub fn set(&self, name: &str, addrs: &[IpAddr]) {
        let name = self.name(name);
        let mut a = RecordSet::new(name.clone(), RecordType::A, 0);
        let mut aaaa = RecordSet::new(name.clone(), RecordType::AAAA, 0);
        for ip in addrs {
            match *ip {
                IpAddr::V4(v4) => {
                    a.insert(Record::from_rdata(name.clone(), TTL, RData::A(A(v4))), 0);
                }
                IpAddr::V6(v6) => {
                    aaaa.insert(
                        Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(v6))),
                        0,
                    );
                }
            }
        }
        let lower = LowerName::new(&name);
        let zone = &self.zone;
        // The zone's records sit behind a Tokio `RwLock` reachable only through async methods, while `set` is
        // synchronous so that tests can call it anywhere. The lookups hold the lock only between awaits, so
        // waiting for it on a plain thread of our own (outside the runtime, which may be single-threaded and
        // is blocked here meanwhile) always finishes promptly.
        std::thread::scope(|s| {
            s.spawn(|| {
                block_on(async {
                    let mut records = zone.records_mut().await;
                    for rrset in [a, aaaa] {
                        let key = RrKey::new(lower.clone(), rrset.record_type());
                        if rrset.is_empty() {
                            records.remove(&key);
                        } else {
                            records.insert(key, Arc::new(rrset));
                        }
                    }
                })
            })
            .join()
            .expect("updating the DNS zone");
        });
    }

    /// Removes all A and AAAA records of `name`, which then answers NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.set(name, &[]);
    }

    /// The `ip:port` form for `webhooks.dns_servers`.
    pub fn server_string(&self) -> String {
        self.addr.to_string()
    }

    /// `name` as a fully qualified name; panics if it is not inside the zone.
    fn name(&self, name: &str) -> Name {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let parsed =
            Name::from_ascii(&fqdn).unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}"));
        assert!(
            self.origin.zone_of(&LowerName::new(&parsed)),
            "{name:?} is not inside the test zone {ZONE}"
        );
        parsed
    }
}

/// Binds UDP on `127.0.0.1:0` and TCP on the same port, retrying when the TCP port is taken.
async fn bind_udp_and_tcp() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut last_error = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind((loopback, 0))
            .await
            .expect("bind UDP 127.0.0.1:0");
        let port = udp.local_addr().expect("UDP address").port();
        match tokio::net::TcpListener::bind((loopback, port)).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) => last_error = Some(e),
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1: {last_error:?}");
}

/// Wakes the thread that polls the future.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the current (non-runtime) thread.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
