//! The `quorum` command line: the coordinator daemon (`serve`) and the operator's commands.
//! Errors become one message and a documented exit code here, at the edge.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quorum_proto::exit::{BadInput, Exit};
use quorum_proto::pb;

use crate::model::pki::{self, LeafKind};
use crate::model::words::{outcome_word, service_state_word};
use crate::operator::client;
use crate::sop::plan::{ActionName, RestartPolicy, ServiceName};
use crate::sop::request::{PgPick, Request, SopRequest};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable table.
    #[default]
    Table,
    /// JSON.
    Json,
}

#[derive(Parser)]
#[command(
    name = "quorum",
    version,
    about = "Quorum: Pigsty's etcd SOPs without SSH. `quorum serve` runs the coordinator; the other commands drive it."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written on stderr: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: quorum_proto::logging::LogFormat,
}

impl Cli {
    /// The command line of this process; on `--help`, `--version` or a usage error, clap's
    /// text is printed and the exit code returned instead.
    pub fn from_args() -> Result<Self, Exit> {
        Self::try_parse().map_err(|e| {
            // Like clap's own `exit`: a closed stdout or stderr is no reason to fail.
            let _ = e.print();
            classify(&anyhow::Error::new(e))
        })
    }

    /// How this process writes its log lines.
    pub fn log_format(&self) -> quorum_proto::logging::LogFormat {
        self.log_format
    }

    /// Whether this invocation is the long-running daemon (as opposed to a one-shot command).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}

/// How the CLI reaches the coordinator (flags, then environment, then --cli-config).
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Coordinator URL, https://IP:PORT.
    #[arg(long, env = "QUORUM_COORDINATOR", global = true)]
    coordinator: Option<String>,
    /// Admin certificate (`quorum pki issue admin`).
    #[arg(long, env = "QUORUM_CERT", global = true)]
    cert: Option<PathBuf>,
    /// Admin private key.
    #[arg(long, env = "QUORUM_KEY", global = true)]
    key: Option<PathBuf>,
    /// The Pigsty CA certificate.
    #[arg(long, env = "QUORUM_CACERT", global = true)]
    cacert: Option<PathBuf>,
    /// CLI config file with coordinator/cert/key/cacert keys.
    #[arg(long, env = "QUORUM_CLI_CONFIG", global = true)]
    cli_config: Option<PathBuf>,
}

impl ConnArgs {
    pub(crate) fn resolve(&self) -> Result<client::Connection, BadInput> {
        client::resolve(
            self.coordinator.clone(),
            self.cert.clone(),
            self.key.clone(),
            self.cacert.clone(),
            self.cli_config.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator daemon.
    Serve {
        /// The coordinator config file.
        #[arg(long, short = 'c', default_value = "/etc/quorum/coordinator.yml")]
        config: PathBuf,
        /// Break-glass: run on the local SQLite store even though `store:` names PostgreSQL
        /// (when pg-meta is down, say because etcd lost quorum under it). Refused while the
        /// shared store shows a live lease, unless --force; takes an epoch above the last one
        /// seen, so agents refuse the old leader.
        #[arg(long)]
        standalone: bool,
        /// With --standalone: start even while a live lease is visible.
        #[arg(long, requires = "standalone")]
        force: bool,
    },
    /// Certificates from the Pigsty CA.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// The run store: copy a standalone coordinator's runs to the shared store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// List agents: IP, version, last seen, state (`agents revoke IP`: cut one off).
    Agents {
        #[command(subcommand)]
        command: Option<AgentsCommand>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Read and check a Pigsty inventory.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Print the files Pigsty's templates would render for a host.
    #[command(subcommand)]
    Render(RenderCommand),
    /// etcd cluster SOPs: create (`./etcd.yml`), remove (`-t etcd_clean`), purge (`-t etcd_purge`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Refresh /etc/etcd/etcd.conf on every member, one at a time (`-t etcd_conf` + restart).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Refresh the etcdctl profile on every host (`-t etcd_env`).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Start, stop, restart or reload a service on hosts (`ansible -f N -b -a 'systemctl ...'`).
    Service {
        /// The action.
        #[arg(value_enum)]
        action: ActionArg,
        /// The service.
        #[arg(value_enum)]
        service: ServiceArg,
        /// IPs or inventory group names, comma-separated (default: the service's hosts).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// How many hosts at once (etcd stops and restarts are always one at a time).
        #[arg(long, default_value_t = 1)]
        forks: usize,
        #[command(flatten)]
        sop: SopArgs,
    },
    /// Membership: add a member as a learner and promote it; remove a member.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Patroni: point it at the etcd cluster's members (`./pgsql.yml -t pg_conf` + reload).
    #[command(subcommand)]
    Patroni(PatroniCommand),
    /// vip-manager: point it at the etcd cluster's members (`./pgsql.yml -t pg_vip_config`).
    #[command(subcommand)]
    Vip(VipCommand),
    /// Runs: list, show, resume, abort.
    #[command(subcommand)]
    Run(RunCommand),
    /// etcd snapshots kept on the coordinator: list, save one now, print restore steps.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Pigsty's monitoring: register this coordinator's /metrics and Quorum's alert rules on
    /// the infra nodes (through their agents), or remove both.
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run one ad-hoc task on one agent (SOPs are the guarded way to change a cluster).
    Task {
        /// The agent's host IP.
        #[arg(long)]
        host: IpAddr,
        /// Seconds to wait for the report.
        #[arg(long, default_value_t = 120)]
        timeout: u32,
        /// Confirm a task that stops, restarts or wipes something.
        #[arg(long)]
        yes: bool,
        #[command(subcommand)]
        task: TaskCommand,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Flags every SOP takes.
#[derive(Args, Debug, Clone)]
pub struct SopArgs {
    /// The etcd cluster (default: the only one in the inventory).
    #[arg(long)]
    cluster: Option<String>,
    /// Go on without the verified etcd snapshot otherwise taken before a destructive step
    /// (member remove, cluster remove/purge, stops and restarts of etcd).
    #[arg(long)]
    no_snapshot: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// How an SOP runs: plan only, confirmation, output, connection.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Print the plan and the diff of every file it would change; change nothing.
    #[arg(long)]
    plan: bool,
    /// Do not ask before wiping members' data.
    #[arg(long)]
    yes: bool,
    /// Output format of the plan or the final run.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of the PostgreSQL SOPs (`patroni reload`, `vip reload`).
#[derive(Args, Debug, Clone)]
pub struct PgSopArgs {
    /// The PostgreSQL cluster (`pg_cluster`; default: the only one in the inventory).
    #[arg(long, conflicts_with = "all")]
    cluster: Option<String>,
    /// Every PostgreSQL cluster of the inventory.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    run: RunArgs,
}

impl PgSopArgs {
    /// The SOP flags and the PostgreSQL clusters picked: the run locks the etcd cluster the
    /// coordinator derives from the PostgreSQL cluster, so `cluster` is left for it to find.
    fn split(self) -> (SopArgs, PgPick) {
        let pick = match (self.cluster, self.all) {
            (Some(c), _) => PgPick::Cluster(c),
            (None, true) => PgPick::All,
            (None, false) => PgPick::Only,
        };
        let sop = SopArgs {
            cluster: None,
            no_snapshot: false,
            run: self.run,
        };
        (sop, pick)
    }
}

#[derive(Subcommand)]
enum PatroniCommand {
    /// Per instance, one at a time, replicas before the primary: write the etcd members into
    /// patroni.yml, reload Patroni, gate on it running with a leader. Patroni applies a new
    /// etcd host list only when it restarts: --restart-patroni restarts instead, switching the
    /// primary over to a replica first (never a failover).
    Reload {
        /// Restart Patroni (replicas first; the primary after a switchover) so it uses the new
        /// etcd host list now.
        #[arg(long)]
        restart_patroni: bool,
        #[command(flatten)]
        pg: PgSopArgs,
    },
}

#[derive(Subcommand)]
enum VipCommand {
    /// Per instance with a VIP, the primary last: write the etcd members into vip-manager's
    /// config, restart vip-manager, gate on the VIP being on the primary's host only.
    Reload(PgSopArgs),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create the cluster (`./etcd.yml`); honors etcd_clean and etcd_safeguard.
    Create(SopArgs),
    /// Stop and wipe every member (`-t etcd_clean`); refused while etcd_safeguard is set.
    Remove(SopArgs),
    /// Stop and wipe every member ignoring etcd_safeguard (`-t etcd_purge`); a host's local
    /// agent safeguard still refuses.
    Purge(SopArgs),
    /// Members, learners, the leader, each member's raft index and health, the inventory
    /// compared with etcd's member list, and the agents; exit 1 if anything is wrong.
    Status(ClusterQuery),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write etcd.conf on every member one at a time; restart a member if its config changed.
    Reload {
        /// Restart every member, changed or not (Pigsty's `systemctl restart etcd -f 1`).
        #[arg(long, conflicts_with = "no_restart")]
        restart: bool,
        /// Write only; restart nobody.
        #[arg(long)]
        no_restart: bool,
        #[command(flatten)]
        sop: SopArgs,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Add IP as a learner, start it with `initial-cluster-state: existing`, promote it once
    /// in sync, then refresh every member's etcd.conf and profile.
    Add {
        /// The new member's host IP (in the inventory's etcd group, or give --seq).
        ip: IpAddr,
        /// etcd_seq for a host not yet in the inventory.
        #[arg(long)]
        seq: Option<u32>,
        #[command(flatten)]
        sop: SopArgs,
    },
    /// Refresh the others' etcd.conf without IP, remove it (moving leadership away first if it
    /// leads), stop and wipe it, refresh profiles.
    ///
    /// When the host's agent is unreachable (the host died), the member still leaves etcd,
    /// and the stop, wipe and retirement on that host wait as a run that starts when its agent
    /// connects again.
    Remove {
        /// The member's host IP.
        ip: IpAddr,
        /// The host is gone for good: record no cleanup for when its agent returns, and drop
        /// one recorded by an earlier remove.
        #[arg(long)]
        forget: bool,
        #[command(flatten)]
        sop: SopArgs,
    },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Write /etc/profile.d/etcdctl.sh on every host.
    Refresh(SopArgs),
}

/// A read of one etcd cluster: which, how to print it, where the coordinator is.
#[derive(Args, Debug, Clone)]
pub struct ClusterQuery {
    /// The etcd cluster (default: the only one in the inventory).
    #[arg(long)]
    cluster: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// The snapshots kept (newest first), of one cluster or of all.
    List {
        /// The etcd cluster (default: every cluster).
        #[arg(long)]
        cluster: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Take a verified snapshot now and keep it.
    Save(ClusterQuery),
    /// Print the exact steps that restore a snapshot onto the inventory's members (Quorum
    /// never runs a restore by itself).
    Restore {
        /// The snapshot's id (`quorum snapshot list`).
        id: String,
        /// Print the steps (required: a restore is never run by Quorum).
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        query: ClusterQuery,
    },
}

#[derive(Subcommand)]
enum MonitorCommand {
    /// Write the coordinator's scrape target (job `infra`, `cls: quorum`) and Quorum's alert
    /// rules where each infra node's metrics stack reads them, and reload its rule engine.
    Register(MonitorArgs),
    /// Remove that target and those rules from the infra nodes.
    Deregister(MonitorArgs),
}

/// Which infra nodes, and how long to wait for them.
#[derive(Args, Debug, Clone)]
struct MonitorArgs {
    /// Infra node IPs, comma-separated (default: every host of the inventory's `infra` group).
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// Seconds to wait for all reports.
    #[arg(long, default_value_t = 120)]
    timeout: u32,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Subcommand)]
enum RunCommand {
    /// Runs, newest first.
    List {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// One run with every step, its outcome and output.
    Show {
        /// Run id.
        id: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Continue a failed or interrupted run from its first unfinished step, and follow it.
    Resume {
        /// Run id.
        id: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Stop a run after its current step and release the cluster.
    Abort {
        /// Run id.
        id: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Revoke the agent's certificate: its open session ends at once and every later call
    /// with it is refused, until the host enrolls again with a new token.
    Revoke {
        /// The agent's host IP.
        ip: IpAddr,
        /// Why, for the deny list and the refusal the agent sees.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy the runs, locks and revocations of this host's SQLite store (what `serve
    /// --standalone` wrote) into the shared PostgreSQL store of `store:`. Run it before the
    /// shared coordinators start again: it takes the lease for the copy and is refused while
    /// a coordinator holds it. Runs already there are left as they are.
    Export {
        /// The coordinator config (its state_dir holds the SQLite store; `store:` names
        /// PostgreSQL).
        #[arg(long, short = 'c', default_value = "/etc/quorum/coordinator.yml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the CA (ca.crt, ca.key) unless one exists; an existing Pigsty CA is used as is.
    Init {
        /// CA directory (ca.crt, ca.key). Default: the CA the coordinator config names
        /// (tls.ca_cert, tls.ca_key), else files/pki/ca under the current directory (Pigsty's
        /// home on the admin node).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Coordinator config to read the CA's location from (default
        /// /etc/quorum/coordinator.yml, when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Trust domain of the role URIs.
        #[arg(long, default_value = quorum_proto::identity::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Issue a leaf certificate and key signed by the CA.
    Issue {
        /// What the certificate is for.
        #[arg(value_enum)]
        kind: LeafKind,
        /// IP SAN(s): the agent's host, the coordinator's addresses, the etcd member's IP.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Admin name, or etcd member name (etcd-N).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: 30s, 15m, 12h, 90d. Default: agent 90d (agents renew by themselves),
        /// admin 30d, coordinator 365d (replace it with --force; the coordinator picks the new
        /// files up without a restart), etcd 7300d (Pigsty's `cert_validity`).
        #[arg(long, value_parser = parse_lifetime)]
        ttl: Option<std::time::Duration>,
        /// Lifetime in days (0.3.0's flag; --ttl replaces it).
        #[arg(long, hide = true, conflicts_with = "ttl")]
        days: Option<u32>,
        /// CA directory (ca.crt, ca.key). Default: the CA the coordinator config names
        /// (tls.ca_cert, tls.ca_key), else files/pki/ca under the current directory (Pigsty's
        /// home on the admin node).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Coordinator config to read the CA's location from (default
        /// /etc/quorum/coordinator.yml, when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output directory: <kind>.crt and <kind>.key (etcd: server.crt/server.key), plus ca.crt.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing certificate and key in --out.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate by serial (any role): the coordinator refuses it from now on.
    Revoke {
        /// The serial, hex (`openssl x509 -noout -serial -in CERT`; colons are fine).
        #[arg(long)]
        serial: String,
        /// Why, for the deny list and the refusal its holder sees.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print (or write) the coordinator's deny list as a CRL signed by the CA, PEM.
    Crl {
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Mint a one-time, short-lived bootstrap token for `quorum-agent enroll` on one host.
    Token {
        /// The host's IP: the only IP the enrolled certificate will name.
        #[arg(long)]
        host: IpAddr,
        /// Time to live: 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// CA directory (ca.crt, ca.key). Default: the CA the coordinator config names
        /// (tls.ca_cert, tls.ca_key), else files/pki/ca under the current directory (Pigsty's
        /// home on the admin node).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Coordinator config to read the CA's location from (default
        /// /etc/quorum/coordinator.yml, when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// Print the resolved clusters, or every problem found.
    Check {
        /// The Pigsty inventory.
        #[arg(short = 'i', long, default_value = "pigsty.yml")]
        inventory: PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
        /// Render for this Pigsty release (e.g. v3.6.1), whatever the inventory's `version`
        /// or `quorum_pigsty_version` says.
        #[arg(long = "pigsty-version", value_name = "VERSION")]
        pigsty_version: Option<String>,
    },
}

#[derive(Subcommand)]
enum RenderCommand {
    /// /etc/etcd/etcd.conf of one member.
    EtcdConf {
        /// The member's IP.
        #[arg(long)]
        host: IpAddr,
        /// The Pigsty inventory.
        #[arg(short = 'i', long, default_value = "pigsty.yml")]
        inventory: PathBuf,
        /// Override etcd_init (new | existing).
        #[arg(long)]
        init: Option<String>,
        /// Render for this Pigsty release (e.g. v3.6.1), whatever the inventory says.
        #[arg(long = "pigsty-version", value_name = "VERSION")]
        pigsty_version: Option<String>,
    },
    /// /etc/profile.d/etcdctl.sh of one host.
    EtcdctlEnv {
        /// The host's IP.
        #[arg(long)]
        host: IpAddr,
        /// The Pigsty inventory.
        #[arg(short = 'i', long, default_value = "pigsty.yml")]
        inventory: PathBuf,
        /// Render for this Pigsty release (e.g. v3.6.1), whatever the inventory says.
        #[arg(long = "pigsty-version", value_name = "VERSION")]
        pigsty_version: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceArg {
    Etcd,
    Patroni,
    VipManager,
}

impl ServiceArg {
    fn model(self) -> ServiceName {
        match self {
            ServiceArg::Etcd => ServiceName::Etcd,
            ServiceArg::Patroni => ServiceName::Patroni,
            ServiceArg::VipManager => ServiceName::VipManager,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ActionArg {
    Start,
    Stop,
    Restart,
    Reload,
    Status,
}

impl ActionArg {
    fn model(self) -> ActionName {
        match self {
            ActionArg::Start => ActionName::Start,
            ActionArg::Stop => ActionName::Stop,
            ActionArg::Restart => ActionName::Restart,
            ActionArg::Reload => ActionName::Reload,
            ActionArg::Status => ActionName::Status,
        }
    }
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Report the host's facts.
    Facts,
    /// Write the host's etcd.conf as the inventory renders it (the agent renders the file
    /// from typed fields; no text is sent).
    WriteEtcdConf {
        /// The Pigsty inventory.
        #[arg(short = 'i', long, default_value = "pigsty.yml")]
        inventory: PathBuf,
        /// Override etcd_init (new | existing).
        #[arg(long)]
        init: Option<String>,
    },
    /// Place ca.crt, server.crt and server.key.
    WriteEtcdCerts {
        /// CA certificate.
        #[arg(long)]
        ca_file: PathBuf,
        /// Server certificate.
        #[arg(long)]
        cert_file: PathBuf,
        /// Server key.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Write the host's etcdctl profile as the inventory renders it (typed fields, no text).
    WriteEtcdctlProfile {
        /// The Pigsty inventory.
        #[arg(short = 'i', long, default_value = "pigsty.yml")]
        inventory: PathBuf,
    },
    /// Start, stop, restart, reload or query a managed service.
    Service {
        /// The service.
        #[arg(value_enum)]
        service: ServiceArg,
        /// The action.
        #[arg(value_enum)]
        action: ActionArg,
    },
    /// Replace the etcd hosts in patroni.yml, then reload (or restart) Patroni.
    SetPatroniDcsHosts {
        /// ip:port entries, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Restart Patroni instead of reloading (a reload does not apply new etcd hosts).
        #[arg(long)]
        restart: bool,
    },
    /// Replace the DCS endpoints in vip-manager's config, then restart it.
    SetVipEndpoints {
        /// https://ip:port entries, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
    },
    /// Wipe the etcd data dir (refused while etcd runs unless --purge; always under the local safeguard).
    WipeEtcdData {
        /// Stop etcd first if it runs.
        #[arg(long)]
        purge: bool,
    },
}

fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    crate::model::config::parse_duration(s)
}

/// A token's time to live: a lifetime as `parse_duration` reads it, in seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    parse_lifetime(s).map(|d| d.as_secs())
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> Exit {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) if is_transport_failure(status) => eprintln!(
                    "error: the coordinator closed the connection ({}: {}); if it is running, it refused \
                     our TLS client certificate: check that --cert was issued by the coordinator's CA, \
                     names a role, and has not expired (see the coordinator's log)",
                    status.code(),
                    status.message()
                ),
                // The exit code says the kind; the message says what and what to do.
                Some(status) => eprintln!("error: {}", status.message()),
                None => eprintln!("error: {e:#}"),
            }
            classify(&e)
        }
    }
}

/// A call that failed below gRPC (connection closed, handshake refused), not by the server's word.
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown
    ) && status.metadata().is_empty()
}

/// The one error → exit-code mapping of `quorum` (README "Exit codes"). Bad input is named
/// by its type (config, certificate files, CA, a flag, clap's usage errors); an error no rule
/// names ran into something outside the input (a file that cannot be written, a port in use)
/// and is `Failed`, not `Usage`.
fn classify(e: &anyhow::Error) -> Exit {
    if e.is::<client::Unreachable>() {
        return Exit::Unreachable;
    }
    if e.is::<crate::daemon::server::ExportRefused>() {
        return Exit::Refused;
    }
    match e.downcast_ref::<crate::sop::store::StoreError>() {
        Some(crate::sop::store::StoreError::Locked { .. }) => return Exit::Refused,
        Some(crate::sop::store::StoreError::Config(_)) => return Exit::Usage,
        _ => {}
    }
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        if is_transport_failure(status) {
            return Exit::Unreachable;
        }
        return match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition => Exit::Refused,
            tonic::Code::Unauthenticated | tonic::Code::Unavailable => Exit::Unreachable,
            tonic::Code::InvalidArgument | tonic::Code::NotFound => Exit::Usage,
            _ => Exit::Failed,
        };
    }
    let pki_error = e.downcast_ref::<pki::PkiError>().or_else(|| {
        e.downcast_ref::<crate::daemon::server::ConfiguredCaError>()
            .map(|c| &c.0)
    });
    if let Some(pki_error) = pki_error {
        return match pki_error {
            pki::PkiError::Read { .. }
            | pki::PkiError::HalfCa { .. }
            | pki::PkiError::NoCa { .. }
            | pki::PkiError::MissingFile { .. }
            | pki::PkiError::BadCa { .. }
            | pki::PkiError::Usage(_) => Exit::Usage,
            pki::PkiError::CsrRefused(_) | pki::PkiError::TokenRefused(_) => Exit::Refused,
            pki::PkiError::Io { .. } | pki::PkiError::Generate(_) => Exit::Failed,
        };
    }
    if let Some(clap_error) = e.downcast_ref::<clap::Error>() {
        // --help and --version are "errors" to clap, printed on stdout.
        return if clap_error.use_stderr() {
            Exit::Usage
        } else {
            Exit::Ok
        };
    }
    if e.is::<BadInput>()
        || e.is::<crate::model::config::ConfigError>()
        || e.is::<quorum_proto::tls::TlsError>()
    {
        return Exit::Usage;
    }
    Exit::Failed
}

async fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Serve {
            config,
            standalone,
            force,
        } => {
            // Everything the daemon creates (run store, used tokens, member keys) is its own.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            let cfg = crate::model::config::CoordinatorConfig::load(&config)?;
            crate::daemon::server::serve(
                cfg,
                crate::daemon::server::ServeOptions { standalone, force },
            )
            .await?;
            Ok(Exit::Ok)
        }
        Command::Pki(cmd) => pki_command(cmd).await,
        Command::Store(StoreCommand::Export { config }) => {
            let cfg = crate::model::config::CoordinatorConfig::load(&config)?;
            let summary = crate::daemon::server::export_store(cfg).await?;
            println!("{summary}");
            Ok(Exit::Ok)
        }
        Command::Agents {
            command: Some(AgentsCommand::Revoke { ip, reason }),
            conn,
            ..
        } => {
            revoke(
                pb::revoke_request::Target::AgentIp(ip.to_string()),
                reason,
                &conn,
            )
            .await
        }
        Command::Agents {
            command: None,
            output,
            conn,
        } => agents(output, &conn).await,
        Command::Inventory(InventoryCommand::Check {
            inventory,
            output,
            pigsty_version,
        }) => crate::operator::inventory::inventory_check(
            &inventory,
            output == Format::Json,
            pigsty_version.as_deref(),
        ),
        Command::Render(RenderCommand::EtcdConf {
            host,
            inventory,
            init,
            pigsty_version,
        }) => crate::operator::inventory::render_etcd_conf_cmd(
            &inventory,
            host,
            init.as_deref(),
            pigsty_version.as_deref(),
        ),
        Command::Render(RenderCommand::EtcdctlEnv {
            host,
            inventory,
            pigsty_version,
        }) => crate::operator::inventory::render_etcdctl_env_cmd(
            &inventory,
            host,
            pigsty_version.as_deref(),
        ),
        Command::Task {
            host,
            timeout,
            yes,
            task,
            conn,
        } => ad_hoc_task(host, timeout, yes, task, &conn).await,
        Command::Monitor(cmd) => {
            let (deregister, args) = match cmd {
                MonitorCommand::Register(a) => (false, a),
                MonitorCommand::Deregister(a) => (true, a),
            };
            monitor_command(deregister, args).await
        }
        Command::Cluster(cmd) => {
            let (sop, args) = match cmd {
                ClusterCommand::Create(a) => (SopRequest::ClusterCreate, a),
                ClusterCommand::Remove(a) => (SopRequest::ClusterRemove, a),
                ClusterCommand::Purge(a) => (SopRequest::ClusterPurge, a),
                ClusterCommand::Status(q) => {
                    let mut client = client::admin_client(&q.conn.resolve()?).await?;
                    return crate::operator::status::status_command(
                        &mut client,
                        q.cluster,
                        q.output == Format::Json,
                    )
                    .await;
                }
            };
            sop_command(sop, args).await
        }
        Command::Config(ConfigCommand::Reload {
            restart,
            no_restart,
            sop,
        }) => {
            let restart = if restart {
                RestartPolicy::Always
            } else if no_restart {
                RestartPolicy::Never
            } else {
                RestartPolicy::IfChanged
            };
            sop_command(SopRequest::ConfigReload { restart }, sop).await
        }
        Command::Patroni(PatroniCommand::Reload {
            restart_patroni,
            pg,
        }) => {
            let (sop, pg) = pg.split();
            let request = SopRequest::PatroniReload {
                pg,
                restart_patroni,
            };
            sop_command(request, sop).await
        }
        Command::Vip(VipCommand::Reload(pg)) => {
            let (sop, pg) = pg.split();
            sop_command(SopRequest::VipReload { pg }, sop).await
        }
        Command::Env(EnvCommand::Refresh(sop)) => sop_command(SopRequest::EnvRefresh, sop).await,
        Command::Service {
            action,
            service,
            hosts,
            forks,
            sop,
        } => {
            let request = SopRequest::Service {
                service: service.model(),
                action: action.model(),
                hosts,
                forks,
            };
            sop_command(request, sop).await
        }
        Command::Run(cmd) => run_command(cmd).await,
        Command::Snapshot(cmd) => {
            use crate::operator::snapshot::{run, SnapshotOp};
            let (op, cluster, output, conn) = match cmd {
                SnapshotCommand::List {
                    cluster,
                    output,
                    conn,
                } => (SnapshotOp::List, cluster, output, conn),
                SnapshotCommand::Save(q) => (SnapshotOp::Save, q.cluster, q.output, q.conn),
                SnapshotCommand::Restore {
                    plan: false, id, ..
                } => {
                    eprintln!(
                        "error: Quorum prints the restore steps of a snapshot but never runs them: use `quorum snapshot restore --plan {id}` and follow them"
                    );
                    return Ok(Exit::Usage);
                }
                SnapshotCommand::Restore { id, query: q, .. } => {
                    (SnapshotOp::RestorePlan(id), q.cluster, q.output, q.conn)
                }
            };
            run(op, cluster, output == Format::Json, &conn.resolve()?).await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "quorum", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Command::Member(MemberCommand::Add { ip, seq, sop }) => {
            sop_command(SopRequest::MemberAdd { host: ip, seq }, sop).await
        }
        Command::Member(MemberCommand::Remove { ip, forget, sop }) => {
            sop_command(SopRequest::MemberRemove { host: ip, forget }, sop).await
        }
    }
}

async fn sop_command(sop: SopRequest, a: SopArgs) -> anyhow::Result<Exit> {
    let request = Request {
        cluster: a.cluster,
        plan_only: a.run.plan,
        confirmed: false,
        no_snapshot: a.no_snapshot,
        sop,
    };
    let mut client = client::admin_client(&a.run.conn.resolve()?).await?;
    crate::operator::runs::start_sop(
        &mut client,
        request,
        a.run.yes,
        a.run.output == Format::Json,
    )
    .await
}

async fn run_command(cmd: RunCommand) -> anyhow::Result<Exit> {
    match cmd {
        RunCommand::List { output, conn } => {
            let mut client = client::admin_client(&conn.resolve()?).await?;
            crate::operator::runs::list(&mut client, output == Format::Json).await
        }
        RunCommand::Show { id, output, conn } => {
            let mut client = client::admin_client(&conn.resolve()?).await?;
            crate::operator::runs::show(&mut client, &id, output == Format::Json).await
        }
        RunCommand::Resume { id, conn } => {
            let mut client = client::admin_client(&conn.resolve()?).await?;
            // The run as it was, so the follow prints only what this resume does.
            let before = client
                .get_run(pb::GetRunRequest { run_id: id.clone() })
                .await?
                .into_inner();
            let run = client
                .resume_run(pb::GetRunRequest { run_id: id.clone() })
                .await?
                .into_inner();
            let done = before
                .steps
                .iter()
                .filter(|s| s.state() == pb::StepState::Done)
                .count();
            match before
                .steps
                .iter()
                .find(|s| s.state() != pb::StepState::Done)
            {
                Some(from) if done > 0 => eprintln!(
                    "run {} resumed at step {} of {}: the {done} step(s) before it were done earlier and are not run again (`quorum run show {}` lists them)",
                    run.run_id,
                    from.index + 1,
                    before.steps.len(),
                    run.run_id
                ),
                _ => eprintln!("run {} resumed", run.run_id),
            }
            crate::operator::runs::follow(
                &mut client,
                &id,
                false,
                crate::operator::runs::printed_as(&before),
            )
            .await
        }
        RunCommand::Abort { id, conn } => {
            let mut client = client::admin_client(&conn.resolve()?).await?;
            let run = client
                .abort_run(pb::GetRunRequest { run_id: id })
                .await?
                .into_inner();
            println!(
                "run {} aborted; cluster {} released",
                run.run_id, run.cluster
            );
            Ok(Exit::Ok)
        }
    }
}

async fn pki_command(cmd: PkiCommand) -> anyhow::Result<Exit> {
    match cmd {
        PkiCommand::Revoke {
            serial,
            reason,
            conn,
        } => revoke(pb::revoke_request::Target::Serial(serial), reason, &conn).await,
        PkiCommand::Crl { out, conn } => crl(out, &conn).await,
        PkiCommand::Init {
            dir,
            config,
            trust_domain,
        } => {
            let loc = pki::locate_ca(dir.as_deref(), config.as_deref())?;
            if let pki::CaSource::Config(cfg) = &loc.source {
                if loc.cert.exists() && loc.key.exists() {
                    let ca = pki::Ca::load_files(&loc.cert, &loc.key, loc.trust_domain.as_deref())?;
                    println!(
                        "using the existing CA {} (key {}, named by {}; {}); nothing changed",
                        loc.cert.display(),
                        loc.key.display(),
                        cfg.display(),
                        ca.key_algorithm()
                    );
                    return Ok(Exit::Ok);
                }
            }
            let Some(dir) = loc.dir() else {
                return Err(BadInput(format!(
                    "{} names the CA files {} and {}; `quorum pki init` makes ca.crt and ca.key in one directory, so pass --dir, or name <dir>/ca.crt and <dir>/ca.key in the config",
                    match &loc.source {
                        pki::CaSource::Config(c) => c.display().to_string(),
                        _ => "the coordinator config".into(),
                    },
                    loc.cert.display(),
                    loc.key.display()
                ))
                .into());
            };
            match pki::init_ca(dir, &trust_domain)? {
                pki::InitOutcome::Created => {
                    println!("created CA {}/ca.crt (key ca.key, 0600)", dir.display())
                }
                pki::InitOutcome::Existing(alg) => println!(
                    "using the existing CA in {} ({alg}); nothing changed",
                    dir.display()
                ),
            }
            Ok(Exit::Ok)
        }
        PkiCommand::Issue {
            kind,
            ips,
            name,
            ttl,
            days,
            dir,
            config,
            out,
            force,
        } => {
            let ca = pki::load_located(&pki::locate_ca(dir.as_deref(), config.as_deref())?)?;
            let base = match kind {
                LeafKind::Agent => "agent",
                LeafKind::Admin => "admin",
                LeafKind::Coordinator => "coordinator",
                LeafKind::Etcd => "server",
            };
            let crt = out.join(format!("{base}.crt"));
            let key = out.join(format!("{base}.key"));
            if !force && (crt.exists() || key.exists()) {
                return Err(BadInput(format!(
                    "{} or {} already exists; pass --force to replace them",
                    crt.display(),
                    key.display()
                ))
                .into());
            }
            let ttl = match (ttl, days) {
                (Some(ttl), _) => ttl,
                (None, Some(days)) => parse_lifetime(&format!("{days}d")).map_err(BadInput)?,
                (None, None) => match kind {
                    LeafKind::Agent => pki::DEFAULT_AGENT_CERT_TTL,
                    LeafKind::Admin => crate::model::config::DEFAULT_ADMIN_CERT_TTL,
                    LeafKind::Coordinator => crate::model::config::DEFAULT_COORDINATOR_CERT_TTL,
                    LeafKind::Etcd => crate::model::config::PIGSTY_LEAF_TTL,
                },
            };
            let (cert_pem, key_pem) = ca.issue(kind, &ips, name.as_deref(), ttl)?;
            std::fs::create_dir_all(&out)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
            pki::write_replace(&key, key_pem.as_bytes(), 0o600)?;
            pki::write_replace(&crt, cert_pem.as_bytes(), 0o644)?;
            let ca_out = out.join("ca.crt");
            if !ca_out.exists() {
                pki::write_replace(&ca_out, ca.cert_pem().as_bytes(), 0o644)?;
            }
            let until = quorum_proto::tls::first_cert_der(cert_pem.as_bytes())
                .and_then(|der| quorum_proto::identity::validity_from_der(&der).ok())
                .map(|(_, not_after)| {
                    crate::operator::runs::local_time(not_after.saturating_mul(1000))
                })
                .unwrap_or_default();
            println!(
                "wrote {} and {} (valid until {until})",
                crt.display(),
                key.display()
            );
            Ok(Exit::Ok)
        }
        PkiCommand::Token {
            host,
            ttl,
            dir,
            config,
        } => {
            let ca = pki::load_located(&pki::locate_ca(dir.as_deref(), config.as_deref())?)?;
            println!("{}", ca.mint_token(host, ttl));
            Ok(Exit::Ok)
        }
    }
}

/// `quorum agents revoke IP` and `quorum pki revoke --serial HEX`.
async fn revoke(
    target: pb::revoke_request::Target,
    reason: String,
    conn: &ConnArgs,
) -> anyhow::Result<Exit> {
    let mut client = client::admin_client(&conn.resolve()?).await?;
    let revoked = client
        .revoke(pb::RevokeRequest {
            target: Some(target),
            reason,
        })
        .await?
        .into_inner()
        .revoked;
    for r in &revoked {
        let whose = if r.subject.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.subject)
        };
        println!(
            "revoked certificate serial {}{whose} at {}: {}",
            r.serial,
            crate::operator::runs::local_time(r.revoked_unix.saturating_mul(1000)),
            r.reason
        );
    }
    println!(
        "the coordinator refuses these certificates from now on and has closed their open sessions; a revoked agent's host can enroll again with a new token (`quorum pki token --host IP`)"
    );
    Ok(Exit::Ok)
}

/// `quorum pki crl`: the deny list as a CRL signed by the CA.
async fn crl(out: Option<PathBuf>, conn: &ConnArgs) -> anyhow::Result<Exit> {
    let mut client = client::admin_client(&conn.resolve()?).await?;
    let crl = client.crl(pb::CrlRequest {}).await?.into_inner();
    match out {
        None => print!("{}", crl.pem),
        Some(path) => {
            pki::write_replace(&path, crl.pem.as_bytes(), 0o644)?;
            eprintln!(
                "wrote {} ({} revoked serials, valid {} days)",
                path.display(),
                crl.entries,
                pki::CRL_VALID_DAYS
            );
        }
    }
    Ok(Exit::Ok)
}

fn facts_json(f: &pb::Facts) -> serde_json::Value {
    let services: serde_json::Map<String, serde_json::Value> = f
        .services
        .iter()
        .map(|(k, v)| {
            let state = pb::ServiceState::try_from(*v)
                .map(service_state_word)
                .unwrap_or("unknown");
            (k.clone(), serde_json::Value::from(state))
        })
        .collect();
    let files: serde_json::Map<String, serde_json::Value> = f
        .files
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::json!({"exists": v.exists, "sha256": v.sha256, "path": v.path, "problem": v.problem}),
            )
        })
        .collect();
    serde_json::json!({
        "agent_version": f.agent_version,
        "host_ip": f.host_ip,
        "hostname": f.hostname,
        "safeguard": f.safeguard,
        "counters": f.counters.as_ref().map(|c| serde_json::json!({
            "started_unix": c.started_unix,
            "tasks": c.tasks,
            "journal_answers": c.journal_answers,
            "sessions": c.sessions,
            "connect_failures": c.connect_failures,
            "journal_bytes": c.journal_bytes,
            "cert_not_after_unix": c.cert_not_after_unix,
        })),
        "services": services,
        "files": files,
        "data_dir": f.data_dir.as_ref().map(|d| serde_json::json!({
            "path": d.path, "has_member": d.has_member, "member_id": d.member_id
        })),
    })
}

/// The word for a service state.
/// Agents whose certificate expires within this many days are warned about.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// Where an agent's certificate is in its renewal cycle: `ok` before 60 % of its lifetime,
/// `due` between 60 and 75 % (it renews at a random point there), `overdue` past 75 % (it
/// tried and could not: unreachable or refused), `expired`; `-` when the coordinator has not
/// seen its certificate. The count of renewals since its enrollment follows.
fn renewal_state(a: &pb::AgentView, now: i64) -> String {
    let (nb, na) = (a.cert_not_before_unix, a.cert_not_after_unix);
    if na == 0 {
        return "-".into();
    }
    let word = if now >= na {
        "expired"
    } else if nb <= 0 || na <= nb {
        "ok"
    } else {
        let elapsed = (now - nb) as f64 / (na - nb) as f64;
        if elapsed < 0.60 {
            "ok"
        } else if elapsed <= 0.75 {
            "due"
        } else {
            "overdue"
        }
    };
    format!("{word} ({})", a.cert_renewals)
}

/// A span of seconds in its largest whole unit: 45s, 12m, 5h, 89d.
fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 3 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Warns (on standard error, so JSON output stays clean) about agents whose certificate
/// expires within [`EXPIRY_WARNING_DAYS`] or has expired.
fn expiry_warning(agents: &[pb::AgentView], now: i64) {
    let soon: Vec<String> = agents
        .iter()
        .filter(|a| {
            a.cert_not_after_unix > 0 && a.cert_not_after_unix - now < EXPIRY_WARNING_DAYS * 86_400
        })
        .map(|a| {
            if a.cert_not_after_unix <= now {
                format!("{} (expired)", a.agent_id)
            } else {
                format!("{} (in {})", a.agent_id, span(a.cert_not_after_unix - now))
            }
        })
        .collect();
    if soon.is_empty() {
        return;
    }
    eprintln!(
        "warning: {} agent certificate(s) expire within {EXPIRY_WARNING_DAYS} days: {}. Agents renew by themselves at 60-75 % of the lifetime (agent_cert_ttl in coordinator.yml); one listed here is short-lived by configuration, or cannot renew: see RENEWAL above and `journalctl -u quorum-agent` on the host. An expired one needs a new enrollment: `quorum pki token --host IP`, then `quorum-agent enroll` on the host",
        soon.len(),
        soon.join(", ")
    );
}

async fn agents(output: Format, conn: &ConnArgs) -> anyhow::Result<Exit> {
    let mut client = client::admin_client(&conn.resolve()?).await?;
    let agents = client
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    match output {
        Format::Json => {
            let v: Vec<serde_json::Value> = agents
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "agent_id": a.agent_id,
                        "version": a.version,
                        "state": a.state,
                        "last_seen_unix": a.last_seen_unix,
                        "cert_not_after_unix": a.cert_not_after_unix,
                        "cert_not_before_unix": a.cert_not_before_unix,
                        "cert_serial": a.cert_serial,
                        "cert_renewals": a.cert_renewals,
                        "cert_renewal": renewal_state(a, quorum_proto::tls::unix_now()),
                        "facts": a.facts.as_ref().map(facts_json),
                        // The facts are the last the agent sent; a stale agent's say nothing of now.
                        "facts_stale": a.state == "stale",
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let now = quorum_proto::tls::unix_now();
            println!(
                "{:<16} {:<10} {:<10} {:>10}  {:<9} {:<12} {:<9} ETCD",
                "AGENT", "VERSION", "STATE", "LAST SEEN", "SAFEGUARD", "CERT EXPIRES", "RENEWAL"
            );
            for a in &agents {
                // A stale agent's last facts say nothing of now.
                let etcd = if a.state == "stale" {
                    format!(
                        "unknown (stale since {})",
                        crate::operator::runs::local_time(a.last_seen_unix.saturating_mul(1000))
                    )
                } else {
                    a.facts
                        .as_ref()
                        .and_then(|f| f.services.get("etcd"))
                        .and_then(|s| pb::ServiceState::try_from(*s).ok())
                        .map(service_state_word)
                        .unwrap_or("-")
                        .to_string()
                };
                let safeguard = a.facts.as_ref().map(|f| f.safeguard).unwrap_or(false);
                let expires = if a.cert_not_after_unix == 0 {
                    "-".to_string()
                } else if a.cert_not_after_unix <= now {
                    "expired".to_string()
                } else {
                    format!("in {}", span(a.cert_not_after_unix - now))
                };
                println!(
                    "{:<16} {:<10} {:<10} {:>9}s  {:<9} {:<12} {:<9} {}",
                    a.agent_id,
                    a.version,
                    a.state,
                    (now - a.last_seen_unix).max(0),
                    if safeguard { "on" } else { "off" },
                    expires,
                    renewal_state(a, now),
                    etcd
                );
            }
            // What the agents could not tell or would not read, under the table: an unknown
            // etcd state blocks every wipe on that host, a managed file that is a link or a
            // FIFO blocks every write to it.
            for a in &agents {
                if a.state == "stale" {
                    println!(
                        "warning: {}: no poll since {}: its services' states are unknown, and SOPs that touch this host are refused until quorum-agent there polls again",
                        a.agent_id,
                        crate::operator::runs::local_time(a.last_seen_unix.saturating_mul(1000))
                    );
                    continue;
                }
                let Some(f) = &a.facts else { continue };
                let etcd = f
                    .services
                    .get("etcd")
                    .map(|s| pb::ServiceState::try_from(*s).unwrap_or(pb::ServiceState::Unknown));
                if matches!(
                    etcd,
                    Some(pb::ServiceState::Unknown | pb::ServiceState::Unspecified)
                ) {
                    println!(
                        "warning: {}: etcd state unknown: wipes are refused until the agent can tell (its log says why)",
                        a.agent_id
                    );
                }
                for (key, file) in &f.files {
                    if !file.problem.is_empty() {
                        println!("warning: {}: {key}: {}", a.agent_id, file.problem);
                    }
                }
            }
        }
    }
    expiry_warning(&agents, quorum_proto::tls::unix_now());
    Ok(Exit::Ok)
}

/// The word for an outcome.
/// Room left in a gRPC message for the rest of a task request (ids, field tags).
const TASK_ENVELOPE_BYTES: usize = 4096;

/// Largest file a task may carry: what fits in one message beside the rest of the request.
pub const MAX_TASK_FILE_BYTES: usize = quorum_proto::MAX_MESSAGE_BYTES - TASK_ENVELOPE_BYTES;

/// Reads a file a task carries. One that cannot be read, or too big for a message, is bad input
/// (exit 2), refused here before anything is sent, instead of tonic's "decoded message length
/// too large" afterwards.
fn read_arg_file(path: &PathBuf) -> Result<String, BadInput> {
    let unreadable = |e: std::io::Error| BadInput(format!("cannot read {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_TASK_FILE_BYTES as u64 {
        return Err(BadInput(format!(
            "{} is {size} bytes, over the {MAX_TASK_FILE_BYTES} bytes a task can carry (the coordinator takes messages of at most {} bytes); nothing was sent. Check that this is the right file: etcd.conf, the etcdctl profile and certificates are a few KiB",
            path.display(),
            quorum_proto::MAX_MESSAGE_BYTES
        )));
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

async fn ad_hoc_task(
    host: IpAddr,
    timeout: u32,
    yes: bool,
    task: TaskCommand,
    conn: &ConnArgs,
) -> anyhow::Result<Exit> {
    use pb::task::Kind;
    let (kind, destructive) = match task {
        TaskCommand::Facts => (Kind::CollectFacts(pb::CollectFacts {}), false),
        TaskCommand::WriteEtcdConf { inventory, init } => {
            let conf = crate::operator::inventory::member_conf_spec(
                &inventory,
                host,
                init.as_deref(),
                None,
            )
            .ok_or_else(|| BadInput("no task was sent (see above)".into()))?;
            (
                Kind::WriteEtcdConf(pb::WriteEtcdConf { conf: Some(conf) }),
                false,
            )
        }
        TaskCommand::WriteEtcdCerts {
            ca_file,
            cert_file,
            key_file,
        } => (
            Kind::WriteEtcdCerts(pb::WriteEtcdCerts {
                ca_crt: read_arg_file(&ca_file)?,
                server_crt: read_arg_file(&cert_file)?,
                server_key: read_arg_file(&key_file)?,
            }),
            false,
        ),
        TaskCommand::WriteEtcdctlProfile { inventory } => {
            let profile = crate::operator::inventory::host_profile_spec(&inventory, host, None)
                .ok_or_else(|| BadInput("no task was sent (see above)".into()))?;
            (
                Kind::WriteEtcdctlProfile(pb::WriteEtcdctlProfile {
                    profile: Some(profile),
                }),
                false,
            )
        }
        TaskCommand::Service { service, action } => {
            let service = match service {
                ServiceArg::Etcd => pb::Service::Etcd,
                ServiceArg::Patroni => pb::Service::Patroni,
                ServiceArg::VipManager => pb::Service::VipManager,
            };
            let (action, destructive) = match action {
                ActionArg::Start => (pb::Action::Start, false),
                ActionArg::Stop => (pb::Action::Stop, true),
                ActionArg::Restart => (pb::Action::Restart, true),
                ActionArg::Reload => (pb::Action::Reload, false),
                ActionArg::Status => (pb::Action::Status, false),
            };
            (
                Kind::ServiceAction(pb::ServiceAction {
                    service: service as i32,
                    action: action as i32,
                    if_changed: vec![],
                    force: true,
                    ..Default::default()
                }),
                destructive,
            )
        }
        TaskCommand::SetPatroniDcsHosts { hosts, restart } => (
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts { hosts, restart }),
            restart,
        ),
        TaskCommand::SetVipEndpoints { endpoints } => (
            Kind::SetVipEndpoints(pb::SetVipEndpoints {
                endpoints,
                defer_restart: false,
            }),
            true,
        ),
        TaskCommand::WipeEtcdData { purge } => {
            (
                // Names no member: the operator's ad-hoc wipe is not checked against one.
                Kind::WipeEtcdData(pb::WipeEtcdData {
                    purge,
                    ..Default::default()
                }),
                true,
            )
        }
    };
    if destructive && !yes {
        eprintln!(
            "refused: this task stops, restarts or wipes something on {host} outside any SOP, without the quorum guard; \
             pass --yes if you mean it (prefer the SOP commands)"
        );
        return Ok(Exit::Refused);
    }
    let req = pb::RunTaskRequest {
        agent_id: host.to_string(),
        task: Some(pb::Task {
            id: String::new(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: Some(kind),
        }),
        timeout_secs: timeout,
        // The coordinator checks it too: a raw call without it is refused.
        confirmed: yes,
    };
    // Several files (write-etcd-certs) can be over the limit together though each is not.
    let size = prost::Message::encoded_len(&req);
    if size > quorum_proto::MAX_MESSAGE_BYTES {
        return Err(BadInput(format!(
            "this task is {size} bytes with its files, over the coordinator's message limit of {} bytes; nothing was sent",
            quorum_proto::MAX_MESSAGE_BYTES
        ))
        .into());
    }
    let mut client = client::admin_client(&conn.resolve()?).await?;
    let mut request = tonic::Request::new(req);
    request.set_timeout(Duration::from_secs(u64::from(timeout) + 10));
    let result = client.run_task(request).await?.into_inner();
    let outcome = pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Unspecified);
    println!("{} {} {}", host, result.task_id, outcome_word(outcome));
    if !result.output.is_empty() {
        println!("{}", result.output.trim_end());
    }
    Ok(match outcome {
        pb::Outcome::Refused => Exit::Refused,
        pb::Outcome::Failed | pb::Outcome::Unspecified => Exit::Failed,
        _ => Exit::Ok,
    })
}

/// `quorum monitor register|deregister`: one line per infra node, its outcome and what its
/// agent did. Exit 0 when every node did it; 3 when one refused; 1 when one failed.
async fn monitor_command(deregister: bool, args: MonitorArgs) -> anyhow::Result<Exit> {
    let mut client = client::admin_client(&args.conn.resolve()?).await?;
    let mut request = tonic::Request::new(pb::MonitoringRequest {
        deregister,
        hosts: args.hosts,
        timeout_secs: args.timeout,
    });
    request.set_timeout(Duration::from_secs(u64::from(args.timeout) + 10));
    let mut stream = client.monitoring(request).await?.into_inner();
    let mut exit = Exit::Ok;
    while let Some(result) = stream.message().await? {
        let outcome = pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Unspecified);
        println!("{} {}", result.agent_id, outcome_word(outcome));
        for line in result.output.lines() {
            println!("  {line}");
        }
        match outcome {
            pb::Outcome::Refused if exit == Exit::Ok => exit = Exit::Refused,
            pb::Outcome::Failed | pb::Outcome::Unspecified => exit = Exit::Failed,
            _ => {}
        }
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(not_before: i64, not_after: i64, renewals: u32) -> pb::AgentView {
        pb::AgentView {
            cert_not_before_unix: not_before,
            cert_not_after_unix: not_after,
            cert_renewals: renewals,
            ..Default::default()
        }
    }

    #[test]
    fn the_renewal_state_follows_the_lifetime() {
        // Valid from 1000 to 1100: renews between 1060 and 1075.
        let v = view(1000, 1100, 2);
        assert_eq!(renewal_state(&v, 1010), "ok (2)");
        assert_eq!(renewal_state(&v, 1070), "due (2)");
        assert_eq!(renewal_state(&v, 1080), "overdue (2)");
        assert_eq!(renewal_state(&v, 1100), "expired (2)");
        assert_eq!(renewal_state(&view(0, 0, 0), 10), "-");
        assert_eq!(span(59), "59s");
        assert_eq!(span(600), "10m");
        assert_eq!(span(36_000), "10h");
        assert_eq!(span(90 * 86_400), "90d");
    }

    fn io(what: &str) -> std::io::Error {
        std::io::Error::other(what.to_string())
    }

    #[test]
    fn bad_input_is_usage_by_its_type() {
        let missing = PathBuf::from("/nonexistent/quorum-test/coordinator.yml");
        let config = crate::model::config::CoordinatorConfig::load(&missing).unwrap_err();
        assert_eq!(classify(&config.into()), Exit::Usage);
        let tls = quorum_proto::tls::TlsMaterial::load(&missing, &missing, &missing).unwrap_err();
        assert_eq!(classify(&tls.into()), Exit::Usage);
        let flag = BadInput("no admin certificate given".into());
        assert_eq!(classify(&flag.into()), Exit::Usage);
        let unreadable_ca = pki::PkiError::Read {
            path: missing.clone(),
            source: io("permission denied"),
        };
        assert_eq!(classify(&unreadable_ca.into()), Exit::Usage);
        let configured = crate::daemon::server::ConfiguredCaError(pki::PkiError::MissingFile {
            what: "CA key (tls.ca_key)".into(),
            path: missing.clone(),
            hint: "restore it".into(),
        });
        assert_eq!(classify(&configured.into()), Exit::Usage);
        assert_eq!(
            classify(&pki::PkiError::Usage("--name is required".into()).into()),
            Exit::Usage
        );
    }

    #[test]
    fn clap_errors_are_usage_and_help_is_not() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(_) => Exit::Ok,
            Err(e) => classify(&e.into()),
        };
        assert_eq!(parse(&["quorum", "--no-such-flag"]), Exit::Usage);
        assert_eq!(
            parse(&["quorum", "pki", "token", "--host", "10.0.0.1", "--ttl", "5y"]),
            Exit::Usage
        );
        assert_eq!(parse(&["quorum"]), Exit::Usage);
        assert_eq!(parse(&["quorum", "--help"]), Exit::Ok);
        assert_eq!(parse(&["quorum", "--version"]), Exit::Ok);
    }

    #[test]
    fn an_error_no_rule_names_is_failed_not_usage() {
        // `quorum pki issue` that cannot write its certificate, `quorum serve` on a port in use.
        let write = pki::PkiError::Io {
            action: "cannot write",
            path: PathBuf::from("/etc/quorum/admin.crt"),
            source: io("no space left on device"),
        };
        assert_eq!(classify(&write.into()), Exit::Failed);
        let bind = anyhow::anyhow!("cannot listen on 127.0.0.1:7443: address in use");
        assert_eq!(classify(&bind), Exit::Failed);
        assert_eq!(classify(&io("broken pipe").into()), Exit::Failed);
    }

    #[test]
    fn grpc_statuses_keep_their_codes() {
        let status = |s: tonic::Status| classify(&s.into());
        assert_eq!(status(tonic::Status::invalid_argument("bad")), Exit::Usage);
        assert_eq!(status(tonic::Status::not_found("no run")), Exit::Usage);
        assert_eq!(
            status(tonic::Status::failed_precondition("guard")),
            Exit::Refused
        );
        assert_eq!(
            status(tonic::Status::permission_denied("role")),
            Exit::Refused
        );
        assert_eq!(
            status(tonic::Status::unavailable("gone")),
            Exit::Unreachable
        );
        assert_eq!(
            status(tonic::Status::unauthenticated("cert")),
            Exit::Unreachable
        );
        assert_eq!(status(tonic::Status::internal("store")), Exit::Failed);
        let unreachable = client::Unreachable("cannot reach the coordinator".into());
        assert_eq!(classify(&unreachable.into()), Exit::Unreachable);
    }
}
