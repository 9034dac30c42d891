//! Checks of an etcd member's certificate material before any of it is written: etcd would
//! refuse to start on a garbage or mismatched key at its next restart, and a certificate from
//! another CA or for another host would let that member talk as someone else.
//!
//! What is checked: the CA is a CA certificate this agent itself trusts (its `tls.ca_cert`,
//! the Pigsty CA); the server certificate parses, is signed by that CA, is valid now and names
//! this host among its IP SANs; the private key parses and is the key of that certificate.

use std::net::IpAddr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why the material is refused; each names which file and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// A PEM block is missing or does not parse.
    #[error("{what} is not a PEM {expected} ({why})")]
    NotPem {
        /// `ca_crt`, `server_crt` or `server_key`.
        what: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The parser's words.
        why: String,
    },
    /// The CA is not the one this agent trusts.
    #[error("ca_crt (subject {subject}) is not a CA this agent trusts (its {trusted}); etcd must use the Pigsty CA that Quorum itself uses")]
    UntrustedCa {
        /// The CA's subject.
        subject: String,
        /// The agent's CA file.
        trusted: String,
    },
    /// The server certificate is not signed by the CA.
    #[error("server_crt (subject {subject}) is not signed by ca_crt (subject {ca}); issue it from the Pigsty CA")]
    NotSignedByCa {
        /// The certificate's subject.
        subject: String,
        /// The CA's subject.
        ca: String,
    },
    /// Outside its validity window.
    #[error("server_crt (subject {subject}) is {state}; etcd would refuse it: issue a new one")]
    Validity {
        /// The certificate's subject.
        subject: String,
        /// "expired" or "not yet valid".
        state: &'static str,
    },
    /// The certificate does not name this host.
    #[error("server_crt (subject {subject}) does not name this host {host} among its IP SANs ({ips}); it belongs to another member")]
    WrongHost {
        /// The certificate's subject.
        subject: String,
        /// This host.
        host: IpAddr,
        /// The IP SANs it has.
        ips: String,
    },
    /// The key is not the certificate's.
    #[error("server_key is not the private key of server_crt (subject {subject}); send the matching pair")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
}

fn not_pem(what: &'static str, expected: &'static str, why: impl ToString) -> CertError {
    CertError::NotPem {
        what,
        expected,
        why: why.to_string(),
    }
}

fn first_cert(what: &'static str, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(not_pem(what, "certificate", e)),
        None => Err(not_pem(what, "certificate", "no CERTIFICATE block")),
    }
}

fn parse<'a>(what: &'static str, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| not_pem(what, "certificate", e))
}

/// Checks `ca_crt`, `server_crt` and `server_key` for this host (`host`), against the CA
/// certificates in `trusted_pem` (the agent's own CA file, named `trusted_path` in messages).
pub fn check_member_material(
    ca_crt: &str,
    server_crt: &str,
    server_key: &str,
    host: IpAddr,
    trusted_pem: &[u8],
    trusted_path: &str,
) -> Result<(), CertError> {
    let ca_der = first_cert("ca_crt", ca_crt)?;
    let ca = parse("ca_crt", &ca_der)?;
    let trusted = CertificateDer::pem_slice_iter(trusted_pem)
        .filter_map(Result::ok)
        .any(|t| t.as_ref() == ca_der.as_ref());
    if !trusted || !ca.is_ca() {
        return Err(CertError::UntrustedCa {
            subject: ca.subject().to_string(),
            trusted: trusted_path.to_string(),
        });
    }
    let der = first_cert("server_crt", server_crt)?;
    let cert = parse("server_crt", &der)?;
    let subject = cert.subject().to_string();
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(CertError::NotSignedByCa {
            subject,
            ca: ca.subject().to_string(),
        });
    }
    let now = quorum_proto::tls::unix_now();
    let v = cert.validity();
    if now > v.not_after.timestamp() || now < v.not_before.timestamp() {
        return Err(CertError::Validity {
            subject,
            state: if now > v.not_after.timestamp() {
                "expired"
            } else {
                "not yet valid"
            },
        });
    }
    let ips = ip_sans(&cert);
    if !ips.contains(&host) {
        return Err(CertError::WrongHost {
            subject,
            host,
            ips: ips
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(server_key.as_bytes())
        .map_err(|e| not_pem("server_key", "private key", e))?;
    let public = public_key_of(&key)?;
    if public != cert.public_key().subject_public_key.data.as_ref() {
        return Err(CertError::KeyMismatch { subject });
    }
    Ok(())
}

fn ip_sans(cert: &X509Certificate<'_>) -> Vec<IpAddr> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The public key of `key` as a certificate's SubjectPublicKeyInfo carries it (RSA: the
/// PKCS#1 public key; EC: the uncompressed point; Ed25519: the 32 bytes).
fn public_key_of(key: &PrivateKeyDer<'_>) -> Result<Vec<u8>, CertError> {
    use ring::signature::{self, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let unreadable = |why: &str| not_pem("server_key", "private key", why);
    match key {
        PrivateKeyDer::Pkcs1(k) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
            .map(|kp| kp.public_key().as_ref().to_vec())
            .map_err(|e| unreadable(&format!("RSA key: {e}"))),
        PrivateKeyDer::Pkcs8(k) => {
            let der = k.secret_pkcs8_der();
            if let Ok(kp) = signature::RsaKeyPair::from_pkcs8(der) {
                return Ok(kp.public_key().as_ref().to_vec());
            }
            for alg in [
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            ] {
                if let Ok(kp) = signature::EcdsaKeyPair::from_pkcs8(alg, der, &rng) {
                    return Ok(kp.public_key().as_ref().to_vec());
                }
            }
            signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(|kp| kp.public_key().as_ref().to_vec())
                .map_err(|_| {
                    unreadable("a PKCS#8 key that is not RSA, ECDSA P-256/P-384 or Ed25519")
                })
        }
        PrivateKeyDer::Sec1(_) => Err(unreadable(
            "an SEC1 EC key; convert it with `openssl pkcs8 -topk8 -nocrypt`",
        )),
        _ => Err(unreadable("an unknown key format")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn ca() -> Result<Ca, rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Ca {
            cert,
            issuer: rcgen::Issuer::new(p, key),
        })
    }

    fn leaf(ca: &Ca, ip: &str) -> Result<(String, String), rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![SanType::IpAddress(
            ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        )];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "etcd-1");
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    #[test]
    fn only_a_matching_pair_from_the_trusted_ca_for_this_host_passes(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let host: IpAddr = "10.10.10.11".parse()?;
        let ca1 = ca()?;
        let ca2 = ca()?;
        let trusted = ca1.cert.pem();
        let (crt, key) = leaf(&ca1, "10.10.10.11")?;
        let check = |ca: &str, crt: &str, key: &str| {
            check_member_material(ca, crt, key, host, trusted.as_bytes(), "/etc/quorum/ca.crt")
        };
        check(&trusted, &crt, &key)?;
        let (other_crt, other_key) = leaf(&ca1, "10.10.10.12")?;
        assert!(matches!(
            check(&trusted, &other_crt, &other_key),
            Err(CertError::WrongHost { .. })
        ));
        let (_, wrong_key) = leaf(&ca1, "10.10.10.11")?;
        assert!(matches!(
            check(&trusted, &crt, &wrong_key),
            Err(CertError::KeyMismatch { .. })
        ));
        let (foreign_crt, foreign_key) = leaf(&ca2, "10.10.10.11")?;
        assert!(matches!(
            check(&ca2.cert.pem(), &foreign_crt, &foreign_key),
            Err(CertError::UntrustedCa { .. })
        ));
        assert!(matches!(
            check(&trusted, &foreign_crt, &foreign_key),
            Err(CertError::NotSignedByCa { .. })
        ));
        let garbage = "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            check(&trusted, &crt, garbage),
            Err(CertError::NotPem {
                what: "server_key",
                ..
            })
        ));
        assert!(matches!(
            check(&trusted, "nonsense", &key),
            Err(CertError::NotPem {
                what: "server_crt",
                ..
            })
        ));
        Ok(())
    }
}
