//! Agent certificates for simulated hosts, signed directly by the Pigsty CA with rcgen (the
//! approach of `craft()` in tests/tests/foundation.rs), shaped like `quorum pki issue agent`:
//! a fresh ECDSA P-256 key, URI SAN `spiffe://<trust-domain>/agent/<ip>` plus the IP SAN,
//! clientAuth only. The coordinator authorizes by that certificate, not by source address.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// The CA, read once, from which each worker thread builds its own issuer.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    /// Reads the CA certificate and key (`quorum pki init` writes both).
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.key_pem).context("the CA key is not a usable PEM key")?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).context("the CA certificate is unusable")
    }

    /// Certificates for every IP in `ips`, made on every core, in the order of `ips`.
    pub fn agents(&self, ips: &[IpAddr], trust_domain: &str) -> Result<Vec<Pem>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = ips.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = ips
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || -> Result<Vec<Pem>> {
                        let issuer = self.issuer()?;
                        part.iter()
                            .map(|ip| agent_cert(&issuer, *ip, trust_domain))
                            .collect()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(ips.len());
            for w in workers {
                let part = w
                    .join()
                    .map_err(|_| anyhow::anyhow!("a certificate worker panicked"))??;
                all.extend(part);
            }
            Ok(all)
        })
    }
}

/// One agent certificate for `ip`, valid from five minutes ago for a day.
fn agent_cert(issuer: &Issuer<'static, KeyPair>, ip: IpAddr, td: &str) -> Result<Pem> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(1);
    p.distinguished_name
        .push(DnType::CommonName, format!("quorum-loadgen-agent-{ip}"));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.subject_alt_names = vec![
        SanType::URI(format!("spiffe://{td}/agent/{ip}").try_into()?),
        SanType::IpAddress(ip),
    ];
    let cert = p.signed_by(&key, issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// `n` distinct loopback addresses counting up from `base` (e.g. 127.1.0.1, 127.1.0.2, ...),
/// skipping addresses whose last octet is 0 or 255. Linux routes all of 127/8 to loopback.
pub fn loopback_ips(base: std::net::Ipv4Addr, n: usize) -> Result<Vec<IpAddr>> {
    let mut out = Vec::with_capacity(n);
    let mut cur = u32::from(base);
    while out.len() < n {
        let ip = std::net::Ipv4Addr::from(cur);
        anyhow::ensure!(
            ip.octets()[0] == 127,
            "ran out of 127/8 addresses after {} (base {base})",
            out.len()
        );
        if !matches!(ip.octets()[3], 0 | 255) {
            out.push(IpAddr::V4(ip));
        }
        cur += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ips_skip_network_and_broadcast_octets() {
        let ips = loopback_ips("127.1.0.253".parse().unwrap(), 4).unwrap();
        let s: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(s, ["127.1.0.253", "127.1.0.254", "127.1.1.1", "127.1.1.2"]);
        assert!(loopback_ips("127.255.255.254".parse().unwrap(), 3).is_err());
    }

    #[test]
    fn agent_certificates_carry_the_role_uri_and_ip() {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let ca = Ca {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let ips = loopback_ips("127.9.0.1".parse().unwrap(), 3).unwrap();
        let pems = ca.agents(&ips, "pigsty").unwrap();
        assert_eq!(pems.len(), 3);
        let der = quorum_proto::tls::first_cert_der(pems[2].cert.as_bytes()).unwrap();
        let peer = quorum_proto::identity::peer_from_der(&der, "pigsty").unwrap();
        assert_eq!(peer, quorum_proto::identity::Peer::Agent(ips[2]));
    }
}
