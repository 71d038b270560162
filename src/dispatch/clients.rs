//! One pooled HTTP client per client certificate (mutual TLS).
//!
//! hyper pools connections by origin alone. A connection that authenticated with integration A's
//! client certificate would then carry the next request to the same receiver whoever sent it:
//! integration B's webhook (or one of an integration with no certificate) arriving under A's identity.
//! So each integration with a certificate has a client of its own — its own connector presenting that
//! certificate, its own pool, its own [`Dials`] — and integrations without one share the default
//! client, whose connections never present any. The claim carries the certificate read with it; when
//! it differs from the one an integration's client was made for (replaced or removed), that client is
//! dropped with its pool, so no connection made with the old certificate carries another attempt, and
//! the next one dials with the new. A certificate named in the config file gets its client at start.
//!
//! The map holds one entry per integration that has sent with a certificate since the start (an
//! entry goes when its integration's certificate is removed); idle pooled connections close after
//! the pool's idle timeout whatever the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::client::{self, Dials, HttpClient, PinnedConnector};
use crate::client_cert::{ClientCertificate, Refused};
use crate::model::Timestamp;
use crate::store::client_certs::StoredClientCert;

pub struct Clients {
    /// The connector every client is made from, with no certificate.
    base: PinnedConnector,
    default: HttpClient,
    /// Certificates named in the config file, by integration row; they win over a stored one.
    configured: HashMap<i64, (Arc<ClientCertificate>, HttpClient)>,
    uploaded: Mutex<HashMap<i64, Uploaded>>,
}

/// The client made for an integration's stored certificate, and the certificate it was made for.
struct Uploaded {
    stored: Arc<StoredClientCert>,
    certificate: Arc<ClientCertificate>,
    client: HttpClient,
}

/// The client one attempt goes through, with the certificate it presents.
pub struct Chosen {
    pub client: HttpClient,
    pub certificate: Option<Arc<ClientCertificate>>,
}

impl Clients {
    pub fn new(base: PinnedConnector, configured: HashMap<i64, Arc<ClientCertificate>>) -> Clients {
        let default = client::build(PinnedConnector {
            identity: None,
            dials: Arc::default(),
            ..base.clone()
        });
        let configured = configured
            .into_iter()
            .map(|(integration, cert)| {
                let client = Clients::client_for(&base, &cert);
                (integration, (cert, client))
            })
            .collect();
        Clients {
            base,
            default,
            configured,
            uploaded: Mutex::default(),
        }
    }

    fn client_for(base: &PinnedConnector, cert: &Arc<ClientCertificate>) -> HttpClient {
        client::build(PinnedConnector {
            identity: Some(cert.clone()),
            dials: Arc::new(Dials::default()),
            ..base.clone()
        })
    }

    /// The client for an attempt of `integration`, whose claim read `stored` (its uploaded
    /// certificate, if any). `Err` is the attempt's `tls_error` detail when the certificate cannot be
    /// presented now (it expired since it was given); nothing is dialled then.
    pub fn for_attempt(
        &self,
        integration: i64,
        stored: Option<&Arc<StoredClientCert>>,
        now: Timestamp,
    ) -> Result<Chosen, String> {
        let chosen = if let Some((cert, client)) = self.configured.get(&integration) {
            Chosen {
                client: client.clone(),
                certificate: Some(cert.clone()),
            }
        } else {
            let mut uploaded = self.uploaded.lock().expect("clients lock");
            match stored {
                None => {
                    // Removed (or never set): the client made for the old one goes with its pool.
                    uploaded.remove(&integration);
                    Chosen {
                        client: self.default.clone(),
                        certificate: None,
                    }
                }
                Some(stored) => {
                    let made_for_it = uploaded
                        .get(&integration)
                        .is_some_and(|u| u.stored.as_ref() == stored.as_ref());
                    if !made_for_it {
                        let certificate =
                            ClientCertificate::load(&stored.cert_pem, &stored.key_pem)
                                .map(Arc::new)
                                .map_err(|e: Refused| {
                                    format!(
                                        "the integration's client certificate cannot be used: {e}"
                                    )
                                })?;
                        let client = Clients::client_for(&self.base, &certificate);
                        uploaded.insert(
                            integration,
                            Uploaded {
                                stored: stored.clone(),
                                certificate,
                                client,
                            },
                        );
                    }
                    let entry = &uploaded[&integration];
                    Chosen {
                        client: entry.client.clone(),
                        certificate: Some(entry.certificate.clone()),
                    }
                }
            }
        };
        if let Some(cert) = &chosen.certificate
            && let Err(e) = cert.check_valid_at(now)
        {
            return Err(format!(
                "the integration's client certificate {} {e} (nothing was sent)",
                cert.summary.subject
            ));
        }
        Ok(chosen)
    }
}
