//! Pigsty's inventory (`pigsty.yml`), read the way Ansible and Pigsty's roles read it, resolved
//! into the etcd clusters and PostgreSQL clusters Quorum plans for.
//!
//! # Format
//! Ansible's YAML inventory: `all.vars`, `all.children.<group>.{hosts,vars,children}`, hosts keyed
//! by IP address with their host vars (`10.10.10.10: { etcd_seq: 1 }`). Other top-level groups
//! and `all.hosts` are read too, as Ansible does.
//!
//! # Variable precedence (Ansible's rule, which Quorum follows)
//! Lowest to highest: Pigsty's role defaults, then group vars of every group the host belongs
//! to (directly or through `children`, `all` included) ordered by depth (`all` = 0, its
//! children 1, ...), then by `ansible_group_priority` (default 1), then by group name
//! alphabetically, a later group overriding an earlier one, so children override parents;
//! then host vars, which override everything. A host listed in several places gets the union
//! of its host vars, a later listing overriding an earlier one. Values replace, never merge
//! (Ansible's default `hash_behaviour=replace`). `<<` merge keys are applied as PyYAML does.
//!
//! # etcd clusters
//! An etcd cluster is a group whose own vars set `etcd_cluster`, or the group named `etcd`
//! (Pigsty's default `etcd_cluster` is `etcd`). Its members are every host of that group,
//! sorted as strings by IP exactly like Pigsty's `groups[etcd_cluster]|sort`
//! (`10.10.10.100` sorts before `10.10.10.11`). Each member needs a unique `etcd_seq`; its
//! name is `<etcd_cluster>-<etcd_seq>`.
//!
//! # PostgreSQL clusters
//! Every host with a `pg_cluster` runs Patroni; those with `pg_vip_enabled` also run
//! vip-manager. Pigsty's Patroni and vip-manager templates name the hosts of group `etcd`, so
//! that is the etcd cluster they use (see [`PgCluster::dcs`]).
//!
//! # Quorum extension variables
//! Not Pigsty's: they exist so that tests can run real etcd members on loopback addresses
//! with files in temporary directories, and they default to values under which the rendered
//! files are exactly Pigsty's:
//!
//! | variable | default | effect |
//! |---|---|---|
//! | `quorum_etcd_conf_dir` | `/etc/etcd` | directory of `ca.crt`, `server.crt`, `server.key` named in `etcd.conf` and the etcdctl profile |
//! | `quorum_etcdctl_cacert` | `/etc/pki/ca.crt` | `ETCDCTL_CACERT` in the etcdctl profile |
//! | `quorum_etcd_listen_localhost` | `true` | `listen-client-urls` also lists `https://127.0.0.1:<port>` (three members on 127.0.0.11-13 cannot all bind 127.0.0.1) |
//! | `quorum_etcd_client_cert_auth` | `false` | `client-cert-auth: true` in both transport-security blocks |
//! | `quorum_etcd_grpc_gateway` | `false` | `enable-grpc-gateway: true` (etcd 3.4 with `--config-file` turns the gateway off; Patroni needs it) |
//! | `quorum_etcd_enable_v2` | `false` | `enable-v2: true` (vip-manager 1.x reads the v2 API) |
//! | `quorum_pigsty_version` | unset | the Pigsty generation to render for, over `version` (see [`crate::model::pigsty`]) |
//!
//! # Pigsty generations and etcd RBAC
//! Each etcd cluster renders with the generation of Pigsty its inventory was written for
//! ([`EtcdCluster::pigsty`]). From Pigsty v4 on, etcd runs with RBAC: Quorum talks to it as
//! `root` with `etcd_root_password` (default `Etcd.Root`, as Pigsty's), and each PostgreSQL
//! cluster's Patroni logs in as its own user (`pg_cluster`, or `pg_shard` for Citus) with
//! `pg_etcd_password` (default: the user name). Passwords are [`Secret`]s: never printed,
//! serialized or stored with a run.

mod diag;
mod load;

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::pigsty::{Choice, Generation};

pub use diag::{Diagnostic, InventoryErrors, Problem};

/// Whether two absolute paths name the same directory, compared lexically (`/data/etcd/` is
/// `/data/etcd`); how symbolic links resolve is the agent's business.
pub fn same_dir(a: &str, b: &str) -> bool {
    load::lexical(a) == load::lexical(b)
}

/// Pigsty's `etcd_init`: how a member starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdInit {
    /// Create a new cluster with every member (`initial-cluster-state: new`).
    New,
    /// Join a running cluster after `member add` (`initial-cluster-state: existing`). A
    /// learner join is the same: the learner flag goes to `member add`, not to the config.
    Existing,
}

impl EtcdInit {
    /// The value written in `etcd.conf`.
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdInit::New => "new",
            EtcdInit::Existing => "existing",
        }
    }
}

impl FromStr for EtcdInit {
    type Err = String;
    /// Accepts `new` and `existing`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "new" => Ok(EtcdInit::New),
            "existing" => Ok(EtcdInit::Existing),
            other => Err(format!("etcd_init `{other}` is not `new` or `existing`")),
        }
    }
}

/// A password from the inventory: its Debug says only that it is set, and it is never
/// serialized (it is skipped wherever it sits in a serialized struct).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The password itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Quorum's own extension variables (see the module docs); defaults keep Pigsty's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumExt {
    /// `quorum_etcd_conf_dir`: where `ca.crt`, `server.crt`, `server.key` live.
    pub conf_dir: String,
    /// `quorum_etcdctl_cacert`: `ETCDCTL_CACERT` in the profile.
    pub etcdctl_cacert: String,
    /// `quorum_etcd_listen_localhost`: also listen on `https://127.0.0.1:<port>`.
    pub listen_localhost: bool,
    /// `quorum_etcd_client_cert_auth`: `client-cert-auth: true` for client and peer TLS.
    pub client_cert_auth: bool,
    /// `quorum_etcd_grpc_gateway`: `enable-grpc-gateway: true`.
    pub grpc_gateway: bool,
    /// `quorum_etcd_enable_v2`: `enable-v2: true`.
    pub enable_v2: bool,
}

impl Default for QuorumExt {
    fn default() -> Self {
        QuorumExt {
            conf_dir: "/etc/etcd".into(),
            etcdctl_cacert: "/etc/pki/ca.crt".into(),
            listen_localhost: true,
            client_cert_auth: false,
            grpc_gateway: false,
            enable_v2: false,
        }
    }
}

/// The resolved `etcd_*` parameters of one host (or of a cluster's group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdParams {
    /// `etcd_safeguard` (default false): refuse to purge a running instance.
    pub safeguard: bool,
    /// `etcd_clean` (default true): at init, purge an existing running instance.
    pub clean: bool,
    /// `etcd_data` (default `/data/etcd`).
    pub data_dir: String,
    /// `etcd_port` (default 2379).
    pub port: u16,
    /// `etcd_peer_port` (default 2380).
    pub peer_port: u16,
    /// `etcd_init` (default new).
    pub init: EtcdInit,
    /// `etcd_learner` (default false): join as a learner.
    pub learner: bool,
    /// `etcd_election_timeout` in ms (default 1000).
    pub election_timeout: u32,
    /// `etcd_heartbeat_interval` in ms (default 100).
    pub heartbeat_interval: u32,
    /// `node_admin_username` when `node_admin_enabled` (defaults `dba`, true) and it is not
    /// empty or `root`: Pigsty v4's profile exports `ETCDCTL_USER` for root and this user.
    pub admin_user: Option<String>,
    /// Quorum's extension variables.
    pub quorum: QuorumExt,
}

impl Default for EtcdParams {
    /// Pigsty's `roles/etcd/defaults/main.yml`.
    fn default() -> Self {
        EtcdParams {
            safeguard: false,
            clean: true,
            data_dir: "/data/etcd".into(),
            port: 2379,
            peer_port: 2380,
            init: EtcdInit::New,
            learner: false,
            election_timeout: 1000,
            heartbeat_interval: 100,
            admin_user: Some("dba".into()),
            quorum: QuorumExt::default(),
        }
    }
}

/// One etcd member as the inventory describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdMember {
    /// The host's IP (its inventory key).
    pub ip: IpAddr,
    /// `etcd_seq`.
    pub seq: u32,
    /// `<etcd_cluster>-<etcd_seq>`: the etcd member name.
    pub name: String,
    /// Whether the host is in group `infra` (its etcdctl profile then uses the infra cert).
    pub infra: bool,
    /// Line of the host's key in the etcd group, when known.
    pub line: Option<usize>,
    /// Its place in Ansible's `groups[etcd_cluster]` (inventory order, 0-based): Pigsty v4's
    /// `ETCDCTL_ENDPOINTS` lists members in this order, unsorted.
    pub position: usize,
    /// The host's resolved parameters.
    pub params: EtcdParams,
}

/// One etcd cluster: its name, its members sorted as strings by IP, and its group's
/// parameters (what a host added to the group without host vars would get).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdCluster {
    /// `etcd_cluster`: the cluster name and `initial-cluster-token`.
    pub name: String,
    /// The inventory group that defines it (normally equal to `name`).
    pub group: String,
    /// Members, sorted by IP as strings (Pigsty's order).
    pub members: Vec<EtcdMember>,
    /// The group-level parameters.
    pub params: EtcdParams,
    /// The Pigsty generation its files are rendered for, and why.
    pub pigsty: Choice,
    /// `etcd_root_password` (default `Etcd.Root`): the RBAC root password from Pigsty v4 on.
    #[serde(skip)]
    pub root_password: Secret,
}

impl EtcdCluster {
    /// The generation its files are rendered for.
    pub fn generation(&self) -> Generation {
        self.pigsty.generation
    }

    /// The root credentials Quorum authenticates with, when the generation runs etcd RBAC.
    pub fn root_auth(&self) -> Option<(&'static str, &Secret)> {
        self.generation()
            .v4()
            .then_some(("root", &self.root_password))
    }
}

/// Pigsty's order for members: by IP text, as Jinja's `|sort` orders inventory hostnames.
pub fn sort_members(members: &mut [EtcdMember]) {
    members.sort_by_cached_key(|m| m.ip.to_string());
}

impl EtcdCluster {
    /// The member at `ip`.
    pub fn member(&self, ip: IpAddr) -> Option<&EtcdMember> {
        self.members.iter().find(|m| m.ip == ip)
    }

    /// The same cluster with exactly `members` (sorted as Pigsty sorts them): what member add
    /// and member remove render with, one member more or less than the inventory.
    pub fn with_members(&self, mut members: Vec<EtcdMember>) -> EtcdCluster {
        sort_members(&mut members);
        EtcdCluster {
            members,
            ..self.clone()
        }
    }

    /// The same cluster without the member at `ip` (unchanged when there is none).
    pub fn without_member(&self, ip: IpAddr) -> EtcdCluster {
        self.with_members(
            self.members
                .iter()
                .filter(|m| m.ip != ip)
                .cloned()
                .collect(),
        )
    }

    /// A member for a host not yet in the inventory, with the group's parameters: what
    /// adding `<ip>: { etcd_seq: <seq> }` to the group would give.
    pub fn new_member(&self, ip: IpAddr, seq: u32) -> EtcdMember {
        EtcdMember {
            ip,
            seq,
            name: format!("{}-{seq}", self.name),
            infra: false,
            line: None,
            position: self
                .members
                .iter()
                .map(|m| m.position + 1)
                .max()
                .unwrap_or(0),
            params: self.params.clone(),
        }
    }
}

/// A PostgreSQL VIP (`pg_vip_address` split at `/`, and `pg_vip_interface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    /// The address (`ip:` in vip-manager's config).
    pub address: IpAddr,
    /// The prefix length (`netmask:`).
    pub prefix: u8,
    /// `pg_vip_interface` (default `eth0`, as Pigsty's role defaults).
    pub interface: String,
}

/// One PostgreSQL instance: a host that runs Patroni (and vip-manager when it has a VIP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PgMember {
    /// The host's IP.
    pub ip: IpAddr,
    /// `pg_seq`.
    pub seq: u32,
    /// `<pg_cluster>-<pg_seq>`: Patroni's member name.
    pub name: String,
    /// `pg_role` (primary, replica, offline), empty when unset.
    pub role: String,
    /// The VIP when `pg_vip_enabled`; such hosts run vip-manager.
    pub vip: Option<Vip>,
    /// `patroni_port` (default 8008).
    pub patroni_port: u16,
    /// `patroni_username` (default `postgres`).
    pub patroni_username: String,
    /// `patroni_password` (default `Patroni.API`); never printed.
    #[serde(skip)]
    pub patroni_password: String,
    /// `patroni_ssl_enabled` (default false): the REST API speaks HTTPS.
    pub patroni_ssl: bool,
    /// `pg_namespace` (default `/pg`): etcd key prefix.
    pub namespace: String,
    /// Line of the host's key, when known.
    pub line: Option<usize>,
}

/// One PostgreSQL cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PgCluster {
    /// `pg_cluster`.
    pub name: String,
    /// Instances, sorted by IP as strings.
    pub members: Vec<PgMember>,
    /// The etcd cluster its Patroni and vip-manager use: the one defined by group `etcd`
    /// (Pigsty's templates read `groups['etcd']`), else the only etcd cluster, else none.
    pub dcs: Option<String>,
    /// Its etcd user and role under RBAC (Pigsty v4): `pg_shard` for a Citus cluster
    /// (`pg_mode: citus`), else `pg_cluster`.
    pub etcd_user: String,
    /// `pg_etcd_password`, or the user name when unset or empty (Pigsty's default).
    #[serde(skip)]
    pub etcd_password: Secret,
    /// `pg_namespace` (default `/pg`): the user's role may read and write
    /// `<pg_namespace>/<etcd_user>/`.
    pub namespace: String,
}

impl PgCluster {
    /// Hosts that run Patroni: every instance.
    pub fn patroni_hosts(&self) -> Vec<IpAddr> {
        self.members.iter().map(|m| m.ip).collect()
    }

    /// Hosts that run vip-manager: instances with `pg_vip_enabled`.
    pub fn vip_hosts(&self) -> Vec<IpAddr> {
        self.members
            .iter()
            .filter(|m| m.vip.is_some())
            .map(|m| m.ip)
            .collect()
    }
}

/// Why [`Inventory::etcd_cluster`] found no single cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The inventory defines no etcd cluster.
    #[error("{file} defines no etcd cluster; add a group `etcd` with `hosts: {{ <ip>: {{ etcd_seq: 1 }} }}` and `vars: {{ etcd_cluster: etcd }}`")]
    NoCluster {
        /// The inventory file.
        file: String,
    },
    /// Several clusters and no name given.
    #[error("{file} defines several etcd clusters ({names}); name one with --cluster")]
    Ambiguous {
        /// The inventory file.
        file: String,
        /// The cluster names, comma-separated.
        names: String,
    },
    /// No cluster of that name.
    #[error("{file} has no etcd cluster `{name}`; it defines {names}")]
    NotFound {
        /// The inventory file.
        file: String,
        /// The name asked for.
        name: String,
        /// The cluster names, comma-separated.
        names: String,
    },
}

/// Pigsty's `infra` group: where its metrics stack runs.
#[derive(Debug, Clone, Serialize)]
pub struct Infra {
    /// Its hosts, by IP.
    pub hosts: Vec<InfraHost>,
    /// The Pigsty generation (`version` in `all.vars`, as for etcd clusters).
    pub pigsty: Choice,
    /// `admin_ip` in `all.vars`: the admin node, where the coordinator runs.
    pub admin_ip: Option<IpAddr>,
}

/// One host of the `infra` group.
#[derive(Debug, Clone, Serialize)]
pub struct InfraHost {
    /// Its IP.
    pub ip: IpAddr,
    /// `infra_seq`.
    pub seq: Option<u32>,
}

/// A loaded, valid inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    file: String,
    digest: String,
    etcd_clusters: Vec<EtcdCluster>,
    pg_clusters: Vec<PgCluster>,
    infra: Infra,
    #[serde(skip)]
    warnings: Vec<Diagnostic>,
}

impl Inventory {
    /// [`Self::load`] off the async runtime: a big inventory takes libyaml seconds, and on a
    /// worker thread that would stall every other call (agents' polls, `quorum agents`)
    /// meanwhile. The error says what is wrong and that nothing was planned.
    pub async fn load_off_runtime(path: &Path) -> Result<Inventory, String> {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || Inventory::load(&owned))
            .await
            .map_err(|e| format!("the inventory reader stopped: {e}"))?
            .map_err(|e| {
                format!("the coordinator's inventory is invalid, nothing was planned:\n{e}")
            })
    }

    /// Reads and resolves the inventory at `path`. Every problem is collected; any error
    /// makes the whole inventory unusable, so nothing is planned from a half-valid file.
    pub fn load(path: &Path) -> Result<Inventory, InventoryErrors> {
        Self::load_as(path, None)
    }

    /// [`Self::load`], rendering for Pigsty release `pigsty_version` (`--pigsty-version`)
    /// whatever the inventory says.
    pub fn load_as(
        path: &Path,
        pigsty_version: Option<&str>,
    ) -> Result<Inventory, InventoryErrors> {
        let file = path.display().to_string();
        let fail = |problem| InventoryErrors {
            errors: vec![Diagnostic {
                file: file.clone(),
                line: None,
                column: None,
                hosts: Vec::new(),
                problem,
            }],
            warnings: Vec::new(),
        };
        // Read one byte past the limit at most: a huge file is refused without loading it.
        let limit = quorum_proto::yaml::MAX_YAML_BYTES;
        let read_error = |e: std::io::Error| {
            fail(Problem::Read {
                error: e.to_string(),
            })
        };
        let mut bytes = Vec::new();
        let handle = std::fs::File::open(path).map_err(read_error)?;
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&handle, limit as u64 + 1),
            &mut bytes,
        )
        .map_err(read_error)?;
        if bytes.len() > limit {
            let size = handle
                .metadata()
                .map(|m| m.len())
                .unwrap_or(bytes.len() as u64);
            return Err(fail(Problem::OverLimit {
                detail: quorum_proto::yaml::LimitError::TooLarge {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    limit,
                }
                .to_string(),
            }));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| fail(Problem::NotUtf8))?;
        Self::parse_as(&file, text, pigsty_version)
    }

    /// Resolves inventory `text`; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Inventory, InventoryErrors> {
        Self::parse_as(file, text, None)
    }

    /// [`Self::parse`] for Pigsty release `pigsty_version` (see [`Self::load_as`]).
    pub fn parse_as(
        file: &str,
        text: &str,
        pigsty_version: Option<&str>,
    ) -> Result<Inventory, InventoryErrors> {
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        let out = load::resolve(file, text, pigsty_version);
        if !out.errors.is_empty() {
            return Err(InventoryErrors {
                errors: out.errors,
                warnings: out.warnings,
            });
        }
        Ok(Inventory {
            file: file.to_string(),
            digest,
            etcd_clusters: out.etcd,
            pg_clusters: out.pg,
            infra: out.infra,
            warnings: out.warnings,
        })
    }

    /// Pigsty's `infra` group.
    pub fn infra(&self) -> &Infra {
        &self.infra
    }

    /// The file name given to [`Inventory::load`] or [`Inventory::parse`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// sha256 (hex) of the inventory bytes, recorded with each run for audit.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Warnings: things that work but that an operator should look at.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Every etcd cluster, in the order their groups appear in the file.
    pub fn etcd_clusters(&self) -> &[EtcdCluster] {
        &self.etcd_clusters
    }

    /// The etcd cluster called `name`, or with `None` the only one.
    pub fn etcd_cluster(&self, name: Option<&str>) -> Result<&EtcdCluster, LookupError> {
        let names = || {
            self.etcd_clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (name, self.etcd_clusters.as_slice()) {
            (_, []) => Err(LookupError::NoCluster {
                file: self.file.clone(),
            }),
            (None, [one]) => Ok(one),
            (None, _) => Err(LookupError::Ambiguous {
                file: self.file.clone(),
                names: names(),
            }),
            (Some(n), all) => {
                all.iter()
                    .find(|c| c.name == n)
                    .ok_or_else(|| LookupError::NotFound {
                        file: self.file.clone(),
                        name: n.to_string(),
                        names: names(),
                    })
            }
        }
    }

    /// The etcd cluster and member at `ip`, if the host is an etcd member.
    pub fn etcd_member(&self, ip: IpAddr) -> Option<(&EtcdCluster, &EtcdMember)> {
        self.etcd_clusters
            .iter()
            .find_map(|c| c.member(ip).map(|m| (c, m)))
    }

    /// Every PostgreSQL cluster, sorted by name.
    pub fn pg_clusters(&self) -> &[PgCluster] {
        &self.pg_clusters
    }

    /// The PostgreSQL clusters whose Patroni and vip-manager use etcd cluster `etcd_cluster`.
    pub fn pg_clusters_using(&self, etcd_cluster: &str) -> Vec<&PgCluster> {
        self.pg_clusters
            .iter()
            .filter(|p| p.dcs.as_deref() == Some(etcd_cluster))
            .collect()
    }
}
