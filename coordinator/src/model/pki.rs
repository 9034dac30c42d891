//! The Pigsty CA and everything signed with it: `quorum pki init` (create a CA, or adopt an
//! existing Pigsty CA as is), leaf certificates for agents, admins, the coordinator and etcd
//! members, enrollment CSRs, and the one-time bootstrap tokens that authorize them.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use quorum_proto::identity::Peer;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::hmac;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

pub use crate::model::config::{
    DEFAULT_AGENT_CERT_TTL, DEFAULT_CA_DIR, DEFAULT_COORDINATOR_CONFIG, DEFAULT_LEAF_DAYS,
};
/// Validity of a CA Quorum creates (Pigsty's CA: 100 years).
const CA_DAYS: i64 = 36500;
/// How long a CRL from `quorum pki crl` is valid (its nextUpdate): export it again before.
pub const CRL_VALID_DAYS: i64 = 7;
/// Name of the file beside the CA that records the trust domain.
const TRUST_DOMAIN_FILE: &str = "trust-domain";

/// PKI errors; each names the file or the rule and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A CA file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Creating or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot create", "cannot write").
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The CA directory has a certificate without a key or the other way round.
    #[error("{dir} holds {present} but not {missing}; restore the missing file from backup, or move the directory away to create a new CA (Quorum never overwrites a CA)")]
    HalfCa {
        /// The CA dir.
        dir: PathBuf,
        /// The file present.
        present: &'static str,
        /// The file missing.
        missing: &'static str,
    },
    /// No CA in the directory.
    #[error("no CA in {} (ca.crt and ca.key); {hint}", dir.display())]
    NoCa {
        /// The CA dir (absolute when the caller knows it).
        dir: PathBuf,
        /// What to do: where the CA should be, and why `pki init` may be wrong.
        hint: String,
    },
    /// A CA file named by a config (or a flag) does not exist.
    #[error("{what} {} does not exist; {hint}", path.display())]
    MissingFile {
        /// Which file ("CA key (tls.ca_key)").
        what: String,
        /// Its path.
        path: PathBuf,
        /// What to do.
        hint: String,
    },
    /// The CA key or certificate is unusable.
    #[error("CA {path} is unusable: {why}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Bad arguments to `pki issue`.
    #[error("{0}")]
    Usage(String),
    /// The CSR was refused.
    #[error("certificate request refused: {0}")]
    CsrRefused(String),
    /// The token was refused.
    #[error("enrollment token refused: {0}")]
    TokenRefused(String),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How `quorum pki` was told where the CA is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `--dir DIR`.
    Flag,
    /// `tls.ca_cert` and `tls.ca_key` of this coordinator config.
    Config(PathBuf),
    /// The default `files/pki/ca` under the current directory (no `--dir`, no coordinator
    /// config naming a CA key). A coordinator config that names no `tls.ca_key` still names
    /// the CA certificate it trusts, kept here to compare.
    Default {
        /// The coordinator config, if one exists.
        config: Option<PathBuf>,
        /// Its `tls.ca_cert`.
        trusted: Option<PathBuf>,
    },
}

/// Where `quorum pki` finds the CA (absolute paths) and the trust domain to issue for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaLocation {
    /// The CA certificate.
    pub cert: PathBuf,
    /// The CA key.
    pub key: PathBuf,
    /// The coordinator config's trust domain, when the location came from one.
    pub trust_domain: Option<String>,
    /// How the location was chosen.
    pub source: CaSource,
}

impl CaLocation {
    /// The directory `pki init` creates `ca.crt` and `ca.key` in, when the location is one.
    pub fn dir(&self) -> Option<&Path> {
        let dir = self.key.parent()?;
        (self.key == dir.join("ca.key") && self.cert == dir.join("ca.crt")).then_some(dir)
    }
}

/// Decides where the CA is: `--dir` when given; else the coordinator config (`--config`, or
/// /etc/quorum/coordinator.yml when it exists) when it names `tls.ca_key`; else the default
/// `files/pki/ca` under the current directory. Never depends silently on the current
/// directory: every path is made absolute, and messages say where they came from.
pub fn locate_ca(dir: Option<&Path>, config: Option<&Path>) -> Result<CaLocation, PkiError> {
    if let Some(dir) = dir {
        let dir = absolute(dir);
        return Ok(CaLocation {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            trust_domain: None,
            source: CaSource::Flag,
        });
    }
    let (config_path, explicit) = match config {
        Some(c) => (c.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_COORDINATOR_CONFIG), false),
    };
    let cfg = if explicit || config_path.exists() {
        Some(
            crate::model::config::CoordinatorConfig::load(&config_path).map_err(|e| {
                PkiError::Usage(format!("{e}; or pass --dir with the CA directory"))
            })?,
        )
    } else {
        None
    };
    if let Some(cfg) = &cfg {
        if let Some(key) = &cfg.tls.ca_key {
            return Ok(CaLocation {
                cert: absolute(&cfg.tls.ca_cert),
                key: absolute(key),
                trust_domain: Some(cfg.trust_domain.clone()),
                source: CaSource::Config(absolute(&config_path)),
            });
        }
    }
    let dir = absolute(Path::new(DEFAULT_CA_DIR));
    Ok(CaLocation {
        cert: dir.join("ca.crt"),
        key: dir.join("ca.key"),
        trust_domain: None,
        source: CaSource::Default {
            config: cfg.as_ref().map(|_| absolute(&config_path)),
            trusted: cfg.map(|c| absolute(&c.tls.ca_cert)),
        },
    })
}

/// Loads the CA at `loc`, for `pki issue` and `pki token`. A missing CA gets a message that
/// says where it looked and why `pki init` is not the fix when a coordinator is set up.
pub fn load_located(loc: &CaLocation) -> Result<Ca, PkiError> {
    let missing: Vec<&PathBuf> = [&loc.cert, &loc.key]
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
    match &loc.source {
        CaSource::Config(cfg) => {
            if let Some(path) = missing.first() {
                let key = *path == &loc.key;
                return Err(PkiError::MissingFile {
                    what: format!(
                        "the CA {} that {} names ({})",
                        if key { "key" } else { "certificate" },
                        cfg.display(),
                        if key { "tls.ca_key" } else { "tls.ca_cert" }
                    ),
                    path: (*path).clone(),
                    hint: "restore it from backup, or pass --config with the right coordinator config. Do not run `quorum pki init`: a new CA would not be the one this coordinator and its agents trust".into(),
                });
            }
        }
        CaSource::Flag | CaSource::Default { .. } if missing.len() == 2 => {
            let dir = loc.key.parent().unwrap_or(Path::new("/")).to_path_buf();
            let hint = match &loc.source {
                CaSource::Default { config: Some(cfg), .. } => format!(
                    "no --dir was given and {} names no tls.ca_key, so the default {DEFAULT_CA_DIR} under the current directory was used. Pass --dir with the directory of the CA key that coordinator's tls.ca_cert belongs to (or set tls.ca_key there). Do not run `quorum pki init`: a new CA would not be the one the coordinator trusts",
                    cfg.display()
                ),
                CaSource::Default { config: None, .. } => format!(
                    "no --dir was given and no coordinator config ({DEFAULT_COORDINATOR_CONFIG}, or --config) names tls.ca_key, so the default {DEFAULT_CA_DIR} under the current directory was used: run this from Pigsty's home directory (where files/pki/ca is), or pass --dir or --config. `quorum pki init --dir {}` would create a NEW CA: do that only before any coordinator runs, since a coordinator started with another CA does not trust certificates or tokens from it",
                    dir.display()
                ),
                _ => format!(
                    "`quorum pki init --dir {}` would create a NEW CA there: do that only before any coordinator runs, since a coordinator started with another CA does not trust certificates or tokens from it",
                    dir.display()
                ),
            };
            return Err(PkiError::NoCa { dir, hint });
        }
        _ => {}
    }
    let ca = Ca::load_files(&loc.cert, &loc.key, loc.trust_domain.as_deref())?;
    if let CaSource::Default {
        config: Some(cfg),
        trusted: Some(trusted),
    } = &loc.source
    {
        let same = fs::read_to_string(trusted)
            .map(|t| t.trim() == ca.cert_pem().trim())
            .unwrap_or(false);
        if !same {
            return Err(PkiError::BadCa {
                path: loc.cert.clone(),
                why: format!(
                    "it is not the CA the coordinator trusts ({} names tls.ca_cert {}): certificates and tokens from it would be refused. Pass --dir with the directory of that CA's key",
                    cfg.display(),
                    trusted.display()
                ),
            });
        }
    }
    Ok(ca)
}

/// What `pki init` did.
#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new CA was created.
    Created,
    /// An existing CA was found and left as is; its key algorithm.
    Existing(String),
}

/// The kinds of leaf certificate `pki issue` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeafKind {
    /// An agent's client certificate: `spiffe://<td>/agent/<ip>` + IP SAN.
    Agent,
    /// An operator's client certificate: `spiffe://<td>/admin/<name>`.
    Admin,
    /// The coordinator's server + client certificate: `spiffe://<td>/coordinator` + IP SANs.
    Coordinator,
    /// An etcd member's server/peer certificate, as Pigsty makes it (CN etcd-N, O pigsty,
    /// OU etcd; SANs 127.0.0.1, localhost, the member IP(s), etcd-N).
    Etcd,
}

/// Creates a CA in `dir` unless one exists; an existing one (RSA or ECDSA) is used unchanged.
pub fn init_ca(dir: &Path, trust_domain: &str) -> Result<InitOutcome, PkiError> {
    let crt = dir.join("ca.crt");
    let key = dir.join("ca.key");
    let outcome = match (crt.exists(), key.exists()) {
        (true, true) => {
            let ca = Ca::load(dir, Some(trust_domain))?;
            InitOutcome::Existing(ca.key_algorithm())
        }
        (true, false) => {
            return Err(PkiError::HalfCa {
                dir: dir.to_path_buf(),
                present: "ca.crt",
                missing: "ca.key",
            })
        }
        (false, true) => {
            return Err(PkiError::HalfCa {
                dir: dir.to_path_buf(),
                present: "ca.key",
                missing: "ca.crt",
            })
        }
        (false, false) => {
            fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
            let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(&[
                (DnType::CommonName, "pigsty-ca"),
                (DnType::OrganizationName, "pigsty"),
                (DnType::OrganizationalUnitName, "ca"),
            ]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = now + time::Duration::days(CA_DAYS);
            params.serial_number = Some(random_serial());
            let cert = params.self_signed(&key_pair)?;
            // Key first with O_EXCL: a CA key is never overwritten, even by a racing init.
            write_new(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
            write_new(&crt, cert.pem().as_bytes(), 0o644)?;
            InitOutcome::Created
        }
    };
    let td_path = dir.join(TRUST_DOMAIN_FILE);
    if !td_path.exists() {
        write_new(&td_path, format!("{trust_domain}\n").as_bytes(), 0o644)?;
    }
    Ok(outcome)
}

/// Writes a file that must not exist yet, with `mode`.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("cannot create", path))?;
    f.write_all(data).map_err(io_err("cannot write", path))?;
    f.sync_all().map_err(io_err("cannot sync", path))?;
    Ok(())
}

/// Writes (or replaces) a file with `mode`, atomically.
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, data, mode)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))?;
    Ok(())
}

/// How far before now a certificate's validity starts, for hosts whose clock is a little
/// behind: five minutes, or a quarter of a short lifetime (a certificate that lives seconds,
/// in tests, would otherwise be mostly in the past and due for renewal at once).
fn backdate(ttl: std::time::Duration) -> time::Duration {
    time::Duration::seconds((ttl.as_secs() / 4).min(300) as i64)
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in parts {
        dn.push(t.clone(), *v);
    }
    dn
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive INTEGER
    bytes[0] |= 0x01; // and never a short one
    SerialNumber::from_slice(&bytes)
}

/// A loaded CA that can sign.
pub struct Ca {
    crt: PathBuf,
    cert_pem: String,
    key: KeyPair,
    pkcs8: Vec<u8>,
    trust_domain: String,
}

impl Ca {
    /// Loads the CA in `dir` (`ca.crt`, `ca.key`); the trust domain is `trust_domain` if
    /// given, else the one recorded beside the CA, else Pigsty's.
    pub fn load(dir: &Path, trust_domain: Option<&str>) -> Result<Self, PkiError> {
        let crt = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if !crt.exists() && !key_path.exists() {
            let shown = absolute(dir);
            return Err(PkiError::NoCa {
                hint: format!(
                    "`quorum pki init --dir {}` would create a NEW CA there: do that only before any coordinator runs, since a coordinator started with another CA does not trust certificates or tokens from a new one",
                    shown.display()
                ),
                dir: shown,
            });
        }
        Self::load_files(&crt, &key_path, trust_domain)
    }

    /// Loads the CA from exactly these files: the certificate `crt` and the key `key_path`
    /// (the coordinator's `tls.ca_cert` and `tls.ca_key`, whatever their names). A missing
    /// file is an error naming it, and the key must belong to the certificate.
    pub fn load_files(
        crt: &Path,
        key_path: &Path,
        trust_domain: Option<&str>,
    ) -> Result<Self, PkiError> {
        for (what, path) in [("CA certificate", crt), ("CA key", key_path)] {
            if !path.exists() {
                return Err(PkiError::MissingFile {
                    what: what.into(),
                    path: absolute(path),
                    hint: "restore it from backup (Pigsty keeps the CA in files/pki/ca on the admin node), or point the config at the right file".into(),
                });
            }
        }
        let dir = key_path.parent().unwrap_or(Path::new("."));
        let unreadable = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Read { path, source }
        };
        let cert_pem = fs::read_to_string(crt).map_err(unreadable(crt))?;
        let key_pem = fs::read(key_path).map_err(unreadable(key_path))?;
        let pkcs8 = to_pkcs8(&key_pem).map_err(|why| PkiError::BadCa {
            path: key_path.to_path_buf(),
            why,
        })?;
        let key = KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8.clone())).map_err(|e| {
            PkiError::BadCa {
                path: key_path.to_path_buf(),
                why: format!(
                    "the key cannot sign ({e}); Quorum supports RSA and ECDSA P-256/P-384 CA keys"
                ),
            }
        })?;
        // Parse once now so a broken ca.crt is reported at load, not at the first signature.
        Issuer::from_ca_cert_pem(&cert_pem, &key).map_err(|e| PkiError::BadCa {
            path: crt.to_path_buf(),
            why: format!("not a usable CA certificate ({e})"),
        })?;
        // Certificates signed with a key that is not the certificate's would chain to nothing.
        if cert_public_key(&cert_pem).as_deref() != Some(key.public_key_raw()) {
            return Err(PkiError::BadCa {
                path: key_path.to_path_buf(),
                why: format!(
                    "this key does not belong to the CA certificate {}; give the key of that certificate",
                    crt.display()
                ),
            });
        }
        let trust_domain = match trust_domain {
            Some(td) => td.to_string(),
            None => fs::read_to_string(dir.join(TRUST_DOMAIN_FILE))
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| quorum_proto::identity::DEFAULT_TRUST_DOMAIN.to_string()),
        };
        Ok(Self {
            crt: crt.to_path_buf(),
            cert_pem,
            key,
            pkcs8,
            trust_domain,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The trust domain role URIs are checked against.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// A short name of the CA key's algorithm.
    pub fn key_algorithm(&self) -> String {
        let alg = self.key.algorithm();
        if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            "ECDSA P-256".into()
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            "ECDSA P-384".into()
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            "RSA".into()
        } else {
            format!("{alg:?}")
        }
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|e| PkiError::BadCa {
            path: self.crt.clone(),
            why: e.to_string(),
        })
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key; returns (cert PEM, key PEM).
    pub fn issue(
        &self,
        kind: LeafKind,
        ips: &[IpAddr],
        name: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = self.leaf_params(kind, ips, name, ttl)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn leaf_params(
        &self,
        kind: LeafKind,
        ips: &[IpAddr],
        name: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<CertificateParams, PkiError> {
        let td = &self.trust_domain;
        let mut p = CertificateParams::default();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - backdate(ttl);
        p.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::days(CA_DAYS));
        p.serial_number = Some(random_serial());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let uri = |peer: Peer| -> Result<SanType, PkiError> {
            Ok(SanType::URI(peer.uri(td).try_into()?))
        };
        let dns = |s: &str| -> Result<SanType, PkiError> { Ok(SanType::DnsName(s.try_into()?)) };
        match kind {
            LeafKind::Agent => {
                let [ip] = ips else {
                    return Err(PkiError::Usage(
                        "an agent certificate names exactly one host: give --ip once".into(),
                    ));
                };
                p.distinguished_name = dn(&[
                    (DnType::CommonName, &format!("quorum-agent-{ip}")),
                    (DnType::OrganizationName, "pigsty"),
                    (DnType::OrganizationalUnitName, "quorum"),
                ]);
                p.subject_alt_names = vec![uri(Peer::Agent(*ip))?, SanType::IpAddress(*ip)];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            LeafKind::Admin => {
                let name = name.ok_or_else(|| {
                    PkiError::Usage(
                        "an admin certificate needs --name NAME, the operator it identifies".into(),
                    )
                })?;
                if let Some(why) = quorum_proto::identity::admin_name_problem(name) {
                    return Err(PkiError::Usage(format!(
                        "--name {}: {why}; the coordinator refuses any other admin name",
                        name.escape_default()
                    )));
                }
                p.distinguished_name = dn(&[
                    (DnType::CommonName, name),
                    (DnType::OrganizationName, "pigsty"),
                    (DnType::OrganizationalUnitName, "quorum-admin"),
                ]);
                p.subject_alt_names = vec![uri(Peer::Admin(name.to_string()))?];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            LeafKind::Coordinator => {
                if ips.is_empty() {
                    return Err(PkiError::Usage(
                        "a coordinator certificate needs --ip for each address agents dial".into(),
                    ));
                }
                p.distinguished_name = dn(&[
                    (DnType::CommonName, "quorum-coordinator"),
                    (DnType::OrganizationName, "pigsty"),
                    (DnType::OrganizationalUnitName, "quorum"),
                ]);
                p.subject_alt_names = vec![uri(Peer::Coordinator)?, dns("localhost")?];
                p.subject_alt_names
                    .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
                // Server for agents and the CLI; client towards etcd.
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
            LeafKind::Etcd => {
                if ips.is_empty() {
                    return Err(PkiError::Usage(
                        "an etcd certificate needs --ip with the member's address".into(),
                    ));
                }
                let name = name.ok_or_else(|| {
                    PkiError::Usage(
                        "an etcd certificate needs --name etcd-N (the member name)".into(),
                    )
                })?;
                p.distinguished_name = dn(&[
                    (DnType::CommonName, name),
                    (DnType::OrganizationName, "pigsty"),
                    (DnType::OrganizationalUnitName, "etcd"),
                ]);
                let loopback: IpAddr = IpAddr::from([127, 0, 0, 1]);
                p.subject_alt_names = vec![SanType::IpAddress(loopback), dns("localhost")?];
                for ip in ips {
                    if *ip != loopback {
                        p.subject_alt_names.push(SanType::IpAddress(*ip));
                    }
                }
                p.subject_alt_names.push(dns(name)?);
                // The same certificate serves etcd's client and peer ports.
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
        }
        Ok(p)
    }

    /// Signs an agent's CSR for exactly `ip`: the CSR may ask only for the IP SAN `ip` and the
    /// URI `spiffe://<td>/agent/<ip>`; the certificate is built from Quorum's own template.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        ip: IpAddr,
        ttl: std::time::Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            PkiError::CsrRefused(format!(
                "it is not a valid, self-signed PKCS#10 request ({e})"
            ))
        })?;
        let allowed_uri = Peer::Agent(ip).uri(&self.trust_domain);
        for san in &csr.params.subject_alt_names {
            let ok = match san {
                SanType::IpAddress(a) => *a == ip,
                SanType::URI(u) => u.as_str() == allowed_uri,
                _ => false,
            };
            if !ok {
                return Err(PkiError::CsrRefused(format!(
                    "it asks for {}, but the token allows only IP {ip} and URI {allowed_uri}",
                    san_text(san)
                )));
            }
        }
        if !matches!(csr.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
            return Err(PkiError::CsrRefused("it asks to be a CA".into()));
        }
        let params = self.leaf_params(LeafKind::Agent, &[ip], None, ttl)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok(cert.pem())
    }

    /// A CRL listing `revoked` (serial as lowercase hex, revocation time in Unix seconds),
    /// signed by this CA, PEM. Issued now, valid for [`CRL_VALID_DAYS`]; its number is the
    /// issue time, so a later CRL always has a larger one.
    pub fn crl(&self, revoked: &[(String, i64)]) -> Result<String, PkiError> {
        let now = time::OffsetDateTime::now_utc();
        let mut entries = Vec::with_capacity(revoked.len());
        for (serial, at) in revoked {
            let bytes = serial_bytes(serial).ok_or_else(|| {
                PkiError::Usage(format!(
                    "the deny list holds {serial:?}, which is not a hex serial number"
                ))
            })?;
            entries.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: time::OffsetDateTime::from_unix_timestamp(*at).unwrap_or(now),
                reason_code: None,
                invalidity_date: None,
            });
        }
        // The CRL's authority key id must be the CA certificate's subject key id, or
        // consumers that match them (OpenSSL does) find no issuer.
        let key_identifier_method = cert_subject_key_id(&self.cert_pem)
            .map_or(rcgen::KeyIdMethod::Sha256, rcgen::KeyIdMethod::PreSpecified);
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(CRL_VALID_DAYS),
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: entries,
            key_identifier_method,
        };
        let crl = params.signed_by(&self.issuer()?).map_err(|e| match e {
            rcgen::Error::IssuerNotCrlSigner => PkiError::BadCa {
                path: self.crt.clone(),
                why: "its key usage does not allow signing CRLs (cRLSign); the deny list still works inside Quorum, but no CRL can be exported for other consumers".into(),
            },
            other => PkiError::Generate(other),
        })?;
        Ok(crl.pem()?)
    }

    fn token_key(&self) -> hmac::Key {
        // Derived from the CA key, so only holders of the CA key can mint tokens and no
        // second secret has to be distributed to the coordinator.
        let mut material = b"quorum enrollment token v1\0".to_vec();
        material.extend_from_slice(&self.pkcs8);
        let digest = ring::digest::digest(&ring::digest::SHA256, &material);
        hmac::Key::new(hmac::HMAC_SHA256, digest.as_ref())
    }

    /// Mints a one-time enrollment token for `host`, valid `ttl_secs`.
    pub fn mint_token(&self, host: IpAddr, ttl_secs: u64) -> String {
        let nonce: [u8; 16] = rand::random();
        let claims = TokenClaims {
            host,
            exp: quorum_proto::tls::unix_now() + ttl_secs as i64,
            nonce: hex::encode(nonce),
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = hmac::sign(&self.token_key(), payload.as_bytes());
        format!("qt1.{payload}.{}", b64.encode(tag.as_ref()))
    }

    /// Checks a token's signature and expiry (not its one-time use: the caller records that).
    pub fn verify_token(&self, token: &str) -> Result<TokenClaims, PkiError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let refused = |why: &str| PkiError::TokenRefused(why.to_string());
        let mut parts = token.trim().split('.');
        let (Some("qt1"), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused(
                "it is not a Quorum token (qt1.<payload>.<tag>); mint one with `quorum pki token --host IP`",
            ));
        };
        let tag = b64
            .decode(tag)
            .map_err(|_| refused("its signature is not base64"))?;
        hmac::verify(&self.token_key(), payload.as_bytes(), &tag).map_err(|_| {
            refused(
                "its signature does not match this CA (forged, altered, or minted by another CA)",
            )
        })?;
        let claims: TokenClaims = b64
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| refused("its payload is malformed"))?;
        if quorum_proto::tls::unix_now() > claims.exp {
            return Err(PkiError::TokenRefused(format!(
                "it expired at {} (Unix seconds); mint a new one with `quorum pki token --host {}`",
                claims.exp, claims.host
            )));
        }
        Ok(claims)
    }
}

/// A subject alternative name as an operator writes it (`IP 10.10.10.12`,
/// `URI spiffe://pigsty/agent/10.10.10.12`), for refusal messages.
fn san_text(san: &SanType) -> String {
    match san {
        SanType::IpAddress(a) => format!("IP {a}"),
        SanType::URI(u) => format!("URI {}", u.as_str().escape_default()),
        SanType::DnsName(d) => format!("DNS name {}", d.as_str().escape_default()),
        SanType::Rfc822Name(e) => format!("email {}", e.as_str().escape_default()),
        SanType::OtherName((oid, _)) => format!(
            "an otherName SAN (OID {})",
            oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
        ),
        _ => "a kind of SAN Quorum does not issue".into(),
    }
}

/// The raw subject public key of a PEM certificate (the bytes `KeyPair::public_key_raw`
/// gives for its key).
/// The subject key identifier of a PEM certificate, if it has one.
fn cert_subject_key_id(pem: &str) -> Option<Vec<u8>> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let id = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(id.0.to_vec())
            }
            _ => None,
        });
    id
}

/// The bytes of a serial written as [`quorum_proto::identity::normalize_serial`] does.
fn serial_bytes(hex: &str) -> Option<Vec<u8>> {
    let hex = quorum_proto::identity::normalize_serial(hex)?;
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn cert_public_key(pem: &str) -> Option<Vec<u8>> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// `path` made absolute against the current directory, for messages (unchanged if that fails).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// What an enrollment token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    /// The only host IP the token may enroll.
    pub host: IpAddr,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Unique id, recorded when used so the token works once.
    pub nonce: String,
}

/// Converts a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC, as openssl writes them) to
/// PKCS#8 DER, which is what the signing library takes.
pub fn to_pkcs8(pem: &[u8]) -> Result<Vec<u8>, String> {
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| "no PEM private key in the file (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)".to_string())?;
    match key {
        PrivateKeyDer::Pkcs8(k) => Ok(k.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(k) => {
            // AlgorithmIdentifier { rsaEncryption, NULL }
            let alg = der_seq(&[
                &[
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                ][..],
                &[0x05, 0x00][..],
            ]);
            Ok(pkcs8_wrap(&alg, k.secret_pkcs1_der()))
        }
        PrivateKeyDer::Sec1(k) => {
            let der = k.secret_sec1_der();
            const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
            const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
            let curve = if contains(der, P256) {
                P256
            } else if contains(der, P384) {
                P384
            } else {
                return Err(
                    "EC key on an unsupported curve (P-256 and P-384 are supported)".into(),
                );
            };
            // AlgorithmIdentifier { id-ecPublicKey, curve }
            let alg = der_seq(&[
                &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..],
                curve,
            ]);
            Ok(pkcs8_wrap(&alg, der))
        }
        _ => Err("unsupported private key format".into()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(body.len()));
    out.extend_from_slice(body);
    out
}

fn der_seq(items: &[&[u8]]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

fn pkcs8_wrap(alg: &[u8], key: &[u8]) -> Vec<u8> {
    // PrivateKeyInfo { version 0, algorithm, privateKey OCTET STRING }
    der_seq(&[&[0x02, 0x01, 0x00][..], alg, &der_tlv(0x04, key)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_length_forms() {
        assert_eq!(der_len(5), vec![5]);
        assert_eq!(der_len(0x80), vec![0x81, 0x80]);
        assert_eq!(der_len(0x1234), vec![0x82, 0x12, 0x34]);
    }

    #[test]
    fn a_crl_lists_the_revoked_serials_under_the_cas_name() -> Result<(), Box<dyn std::error::Error>>
    {
        let (_dir, ca) = test_ca()?;
        let (cert_pem, _) = ca.issue(LeafKind::Admin, &[], Some("alice"), DAY)?;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())?;
        let serial = quorum_proto::identity::serial_from_der(&der)?;
        let pem = ca.crl(&[
            (serial.clone(), 1_700_000_000),
            ("0abc".into(), 1_700_000_100),
        ])?;
        let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes())?;
        let (_, crl) = x509_parser::parse_x509_crl(&der)?;
        let listed: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| {
                let hex: String = r.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
                quorum_proto::identity::normalize_serial(&hex).unwrap_or_default()
            })
            .collect();
        assert_eq!(listed, [serial, "0abc".to_string()]);
        let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())?;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der)?;
        assert_eq!(crl.issuer(), ca_cert.subject());
        assert!(crl.next_update().is_some());
        assert!(ca.crl(&[("not hex".into(), 0)]).is_err());
        Ok(())
    }

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    fn test_ca() -> Result<(tempfile::TempDir, Ca), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), "pigsty")?;
        let ca = Ca::load(dir.path(), None)?;
        Ok((dir, ca))
    }

    #[test]
    fn csr_refusals_name_sans_as_an_operator_writes_them() -> Result<(), Box<dyn std::error::Error>>
    {
        let (_dir, ca) = test_ca()?;
        let ip: IpAddr = "127.0.0.21".parse()?;
        for (san, shown) in [
            (
                SanType::IpAddress("127.0.0.22".parse()?),
                "it asks for IP 127.0.0.22, but the token allows only IP 127.0.0.21 and URI spiffe://pigsty/agent/127.0.0.21",
            ),
            (
                SanType::URI("spiffe://pigsty/admin/root".try_into()?),
                "it asks for URI spiffe://pigsty/admin/root,",
            ),
            (
                SanType::DnsName("evil.example".try_into()?),
                "it asks for DNS name evil.example,",
            ),
        ] {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![san];
            let csr = params.serialize_request(&key)?.pem()?;
            let err = ca
                .sign_agent_csr(&csr, ip, DAY)
                .err()
                .ok_or("the CSR was signed")?
                .to_string();
            assert!(err.contains(shown), "{err}");
            assert!(
                !err.contains("IpAddress(") && !err.contains("Ia5String"),
                "{err}"
            );
        }
        Ok(())
    }

    #[test]
    fn admin_names_are_plain_words_on_both_ends() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, ca) = test_ca()?;
        // `pki issue admin --name` refuses what the server would refuse.
        let err = ca
            .issue(LeafKind::Admin, &[], Some("alice?x=1#frag"), DAY)
            .err()
            .ok_or("issued")?;
        assert!(matches!(err, PkiError::Usage(_)), "{err}");
        assert!(err.to_string().contains("found '?'"), "{err}");
        assert!(ca
            .issue(LeafKind::Admin, &[], Some("alice.ops-1"), DAY)
            .is_ok());
        // A CA-signed certificate that names such an admin anyway is not an admin.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca.leaf_params(LeafKind::Admin, &[], Some("alice"), DAY)?;
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://pigsty/admin/alice?x=1#frag".try_into()?,
        )];
        let cert = params.signed_by(&key, &ca.issuer()?)?;
        let got = quorum_proto::identity::peer_from_der(cert.der(), "pigsty");
        assert!(
            matches!(
                got,
                Err(quorum_proto::identity::IdentityError::Malformed { .. })
            ),
            "{got:?}"
        );
        Ok(())
    }

    /// Probe F3: `tls.ca_key` is the key file itself, whatever its name, and the certificate
    /// comes from `tls.ca_cert`; a missing file is named, a key of another CA refused.
    #[test]
    fn the_ca_loads_from_exactly_the_files_named() -> Result<(), Box<dyn std::error::Error>> {
        let (dir, ca) = test_ca()?;
        let keys = tempfile::tempdir()?;
        let key = keys.path().join("pigsty-ca.key");
        fs::copy(dir.path().join("ca.key"), &key)?;
        let crt = keys.path().join("trusted.pem");
        fs::copy(dir.path().join("ca.crt"), &crt)?;
        let loaded = Ca::load_files(&crt, &key, Some("pigsty"))?;
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let missing = keys.path().join("ca.key");
        let err = Ca::load_files(&crt, &missing, None).err().ok_or("loaded")?;
        assert!(
            matches!(&err, PkiError::MissingFile { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains(&format!("CA key {} does not exist", missing.display())));
        let (other, _) = test_ca()?;
        let err = Ca::load_files(&crt, &other.path().join("ca.key"), None)
            .err()
            .ok_or("a foreign key was accepted")?;
        assert!(
            err.to_string()
                .contains("does not belong to the CA certificate"),
            "{err}"
        );
        Ok(())
    }

    /// Probe F1: without --dir or a config naming tls.ca_key, the default files/pki/ca is
    /// relative to the current directory, and the message says so with the absolute path.
    /// A config that names only the trusted certificate catches a CA that is not it.
    #[test]
    fn a_missing_default_ca_says_where_it_looked() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("files/pki/ca");
        let loc = CaLocation {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            trust_domain: None,
            source: CaSource::Default {
                config: None,
                trusted: None,
            },
        };
        let err = load_located(&loc).err().ok_or("loaded")?.to_string();
        assert!(
            err.contains(&format!("no CA in {}", dir.display()))
                && err.contains("under the current directory")
                && err.contains("would create a NEW CA"),
            "{err}"
        );
        init_ca(&dir, "pigsty")?;
        let (other, _) = test_ca()?;
        let loc = CaLocation {
            source: CaSource::Default {
                config: Some(PathBuf::from("/etc/quorum/coordinator.yml")),
                trusted: Some(other.path().join("ca.crt")),
            },
            ..loc
        };
        let err = load_located(&loc)
            .err()
            .ok_or("a CA the coordinator does not trust loaded")?;
        assert!(
            err.to_string()
                .contains("it is not the CA the coordinator trusts"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn token_round_trip_and_forgery() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), "pigsty")?;
        let ca = Ca::load(dir.path(), None)?;
        let ip: IpAddr = "10.10.10.12".parse()?;
        let t = ca.mint_token(ip, 60);
        assert_eq!(ca.verify_token(&t)?.host, ip);
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            ca.verify_token(&forged),
            Err(PkiError::TokenRefused(_))
        ));
        let other = tempfile::tempdir()?;
        init_ca(other.path(), "pigsty")?;
        let other = Ca::load(other.path(), None)?;
        assert!(other.verify_token(&t).is_err());
        Ok(())
    }
}
