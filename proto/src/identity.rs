//! Peer identity: who is on the other end of a TLS session, read once from the URI SAN of its
//! certificate (`spiffe://<trust-domain>/<role>[/<arg>]`) into a [`Peer`] that authorization
//! matches on. The CN is never looked at.

use std::fmt;
use std::net::IpAddr;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The trust domain Quorum uses when none is configured (Pigsty's name).
pub const DEFAULT_TRUST_DOMAIN: &str = "pigsty";

/// Longest admin name a certificate may carry.
pub const MAX_ADMIN_NAME: usize = 64;

/// Why `name` cannot be an admin name, or `None` when it can: 1 to [`MAX_ADMIN_NAME`]
/// characters from `[A-Za-z0-9._-]`. The name lands in the audit trail (`started_by`, logs),
/// so it must read as one plain word: no query, fragment, space or control character.
pub fn admin_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an admin name cannot be empty".into());
    }
    if name.len() > MAX_ADMIN_NAME {
        return Some(format!(
            "an admin name has at most {MAX_ADMIN_NAME} characters, this one has {}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "an admin name uses only letters, digits, '.', '_' and '-' (found '{}')",
            c.escape_default()
        ));
    }
    None
}

/// A peer's role, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The agent of the host with this IP.
    Agent(IpAddr),
    /// An operator (the CLI), by name.
    Admin(String),
    /// The coordinator itself.
    Coordinator,
}

impl Peer {
    /// The URI SAN that names this peer in `trust_domain`.
    pub fn uri(&self, trust_domain: &str) -> String {
        match self {
            Peer::Agent(ip) => format!("spiffe://{trust_domain}/agent/{ip}"),
            Peer::Admin(name) => format!("spiffe://{trust_domain}/admin/{name}"),
            Peer::Coordinator => format!("spiffe://{trust_domain}/coordinator"),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Agent(ip) => write!(f, "agent {ip}"),
            Peer::Admin(name) => write!(f, "admin {name}"),
            Peer::Coordinator => write!(f, "coordinator"),
        }
    }
}

/// Why a certificate does not name a usable role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER is not an X.509 certificate.
    #[error("the peer certificate could not be parsed: {0}")]
    Unparseable(String),
    /// No `spiffe://<trust-domain>/...` URI SAN with a known role.
    #[error("the certificate (subject {subject}) names no Quorum role: it needs a URI SAN spiffe://{trust_domain}/agent/<ip>, /admin/<name> or /coordinator; issue one with `quorum pki issue`")]
    NoRole {
        /// The certificate's subject, for the operator.
        subject: String,
        /// The trust domain expected.
        trust_domain: String,
    },
    /// More than one role URI: ambiguous, so refused.
    #[error("the certificate (subject {subject}) names more than one Quorum role ({uris}); issue a certificate with exactly one")]
    Ambiguous {
        /// The certificate's subject.
        subject: String,
        /// The role URIs found.
        uris: String,
    },
    /// A role URI whose argument is malformed.
    #[error("the certificate's role URI {uri} is malformed: {why}")]
    Malformed {
        /// The URI.
        uri: String,
        /// What is wrong.
        why: String,
    },
    /// An agent URI whose IP is not also an IP SAN of the certificate.
    #[error("the certificate names agent {ip} but has no IP SAN {ip}; re-enroll the host")]
    AgentIpMismatch {
        /// The IP in the URI.
        ip: IpAddr,
    },
}

/// Reads the role of a DER certificate in `trust_domain`.
pub fn peer_from_der(der: &[u8], trust_domain: &str) -> Result<Peer, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let subject = cert.subject().to_string();
    let mut uris = Vec::new();
    let mut ips = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ips.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let prefix = format!("spiffe://{trust_domain}/");
    let roles: Vec<&String> = uris.iter().filter(|u| u.starts_with(&prefix)).collect();
    let uri = match roles.as_slice() {
        [] => {
            return Err(IdentityError::NoRole {
                subject,
                trust_domain: trust_domain.to_string(),
            })
        }
        [one] => *one,
        many => {
            return Err(IdentityError::Ambiguous {
                subject,
                uris: many
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let rest = &uri[prefix.len()..];
    let malformed = |why: &str| IdentityError::Malformed {
        uri: uri.clone(),
        why: why.to_string(),
    };
    let mut parts = rest.splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some("coordinator"), None) => Ok(Peer::Coordinator),
        (Some("admin"), Some(name)) => match admin_name_problem(name) {
            None => Ok(Peer::Admin(name.to_string())),
            Some(why) => Err(malformed(&format!(
                "an admin URI ends in /admin/<name>, and {why}"
            ))),
        },
        (Some("admin"), None) => Err(malformed("an admin URI ends in /admin/<name>")),
        (Some("agent"), Some(ip)) => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| malformed("an agent URI ends in /agent/<host ip>"))?;
            if ips.contains(&ip) {
                Ok(Peer::Agent(ip))
            } else {
                Err(IdentityError::AgentIpMismatch { ip })
            }
        }
        _ => Err(IdentityError::NoRole {
            subject,
            trust_domain: trust_domain.to_string(),
        }),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => {
            let b: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The trust domain of the first `spiffe://` URI SAN of a DER certificate, if it has one. A
/// client takes it from its own certificate: the coordinator it talks to is in the same one.
pub fn trust_domain_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    if let Some(rest) = u.strip_prefix("spiffe://") {
                        return rest.split('/').next().map(str::to_string);
                    }
                }
            }
        }
    }
    None
}

/// A certificate's serial number, as [`normalize_serial`] writes it.
pub fn serial_from_der(der: &[u8]) -> Result<String, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    normalize_serial(&hex).ok_or_else(|| IdentityError::Unparseable("an empty serial".into()))
}

/// One spelling for a serial number, however it was written (`openssl x509 -serial`'s
/// `serial=1A2B`, `1a:2b`, `0x1a2b`, a DER INTEGER's leading zero byte): lowercase hex
/// without leading zeros, in whole bytes. `None` when it is not hex or names no number.
pub fn normalize_serial(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix("serial=").unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0').to_ascii_lowercase();
    if trimmed.is_empty() {
        return Some("00".into());
    }
    Some(if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed
    })
}

/// A certificate's validity window, as Unix seconds (not before, not after).
pub fn validity_from_der(der: &[u8]) -> Result<(i64, i64), IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_have_one_spelling() {
        for (given, want) in [
            ("1A2B", Some("1a2b")),
            ("serial=01A2B", Some("1a2b")),
            ("00:1a:2b", Some("1a2b")),
            ("0x0abc", Some("0abc")),
            ("  7f01 ", Some("7f01")),
            ("0", Some("00")),
            ("", None),
            ("xyz", None),
            ("1a 2b", None),
        ] {
            assert_eq!(normalize_serial(given).as_deref(), want, "{given:?}");
        }
    }

    #[test]
    fn admin_names_are_plain_words() {
        for ok in ["alice", "a", "ops.team-1_b", &"x".repeat(MAX_ADMIN_NAME)] {
            assert_eq!(admin_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "alice?x=1#frag",
            "a/b",
            "al ice",
            "bob\n",
            "é",
            "%41",
            &"x".repeat(MAX_ADMIN_NAME + 1),
        ] {
            assert!(admin_name_problem(bad).is_some(), "{bad:?} was accepted");
        }
    }
}
