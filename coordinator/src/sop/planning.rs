//! From an operator's request to a stored run: read the inventory, gather what the agents
//! and etcd say right now, plan the SOP, and (unless only a plan was asked for) store the run
//! under the cluster's lock and hand it to the runner.

use std::net::IpAddr;

use quorum_proto::pb;
use tonic::Status;

use crate::clients::patroni::{PgNode, PgRef};
use crate::clients::registry::{AgentState, Registry};
use crate::model::inventory::{EtcdCluster, EtcdInit, EtcdMember, Inventory, PgCluster};
use crate::sop::plan::{
    self, ClusterSpec, Live, MemberSpec, PgTarget, Plan, PlanError, ServiceName, StepKind,
};
use crate::sop::request::{PgPick, Request, SopRequest};
use crate::sop::runner::RunContext;
use crate::sop::store::{now_ms, RunRecord, StepRecord};

pub use crate::sop::request::sop_name;

/// What the planner needs to know now: facts of the SOP's hosts, and etcd's view; and a note
/// for each agent that did not answer with fresh facts.
pub async fn gather_live(
    registry: &Registry,
    etcd: &crate::clients::etcd::EtcdAccess,
    spec: &ClusterSpec,
    hosts: &[IpAddr],
) -> (Live, Vec<String>) {
    let silent = crate::clients::registry::refresh_facts(registry, hosts).await;
    let mut live = agents_live(registry, hosts);
    match etcd.member_list(&spec.client_urls()).await {
        Ok(m) => live.members = Some(m),
        Err(e) => live.members_error = e.to_string(),
    }
    if live.members.is_some() {
        live.leader = etcd.leader(&spec.client_urls()).await.ok();
    }
    for m in &spec.members {
        live.health
            .insert(m.ip, etcd.member_health(&m.client_url).await);
    }
    (live, silent)
}

/// The agents' side of [`Live`]: facts of the connected ones, and which are stale.
fn agents_live(registry: &Registry, hosts: &[IpAddr]) -> Live {
    let mut live = Live::default();
    for h in hosts {
        match registry.state(*h) {
            Some(AgentState::Connected | AgentState::Idle) => {
                if let Some(f) = registry.facts(*h) {
                    live.facts.insert(*h, f);
                }
            }
            Some(AgentState::Stale) => live.stale.push(*h),
            None => {}
        }
    }
    live
}

/// Maps a plan refusal to a gRPC status: usage errors are INVALID_ARGUMENT, safety refusals
/// FAILED_PRECONDITION (the CLI's exit codes 2 and 3).
pub fn plan_status(e: PlanError) -> Status {
    match e {
        PlanError::Usage(m) => Status::invalid_argument(m),
        e @ PlanError::Unrenderable { .. } => Status::invalid_argument(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

/// Resolves `--hosts` (IPs or inventory group names, comma-separated) to IPs.
fn resolve_hosts(
    inv: &Inventory,
    cluster: &EtcdCluster,
    service: ServiceName,
    spec: &[String],
) -> Result<Vec<IpAddr>, Status> {
    if spec.is_empty() {
        return Ok(match service {
            ServiceName::Etcd => cluster.members.iter().map(|m| m.ip).collect(),
            ServiceName::Patroni => inv
                .pg_clusters_using(&cluster.name)
                .iter()
                .flat_map(|p| p.patroni_hosts())
                .collect(),
            ServiceName::VipManager => inv
                .pg_clusters_using(&cluster.name)
                .iter()
                .flat_map(|p| p.vip_hosts())
                .collect(),
        });
    }
    let mut out = Vec::new();
    for item in spec
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if let Ok(ip) = item.parse::<IpAddr>() {
            out.push(ip);
            continue;
        }
        let from_etcd: Vec<IpAddr> = inv
            .etcd_clusters()
            .iter()
            .filter(|c| c.group == item || c.name == item)
            .flat_map(|c| c.members.iter().map(|m| m.ip))
            .collect();
        let from_pg: Vec<IpAddr> = inv
            .pg_clusters()
            .iter()
            .filter(|p| p.name == item)
            .flat_map(|p| p.patroni_hosts())
            .collect();
        if from_etcd.is_empty() && from_pg.is_empty() {
            return Err(Status::invalid_argument(format!(
                "--hosts {item}: not an IP address nor an etcd or PostgreSQL group of the inventory"
            )));
        }
        out.extend(from_etcd);
        out.extend(from_pg);
    }
    out.dedup();
    Ok(out)
}

/// The inventory, read off the async runtime ([`Inventory::load_off_runtime`]); invalid is
/// bad input.
pub async fn load_inventory(path: &std::path::Path) -> Result<Inventory, Status> {
    Inventory::load_off_runtime(path)
        .await
        .map_err(Status::invalid_argument)
}

/// Refuses a plan when the inventory's `etcd_data` of a member differs from the data dir its
/// agent manages (`paths.etcd_data`, reported in its facts): the rendered etcd.conf would
/// point etcd at one directory while wipes and the "holds a member" check use the other.
/// Hosts without facts are left to the planner (it refuses a missing agent where it needs one).
fn check_data_dirs<'a>(
    inventory: &str,
    members: impl IntoIterator<Item = &'a EtcdMember>,
    live: &Live,
) -> Result<(), Status> {
    for m in members {
        let Some(agent_dir) = live
            .facts
            .get(&m.ip)
            .and_then(|f| f.data_dir.as_ref())
            .map(|d| d.path.as_str())
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let wanted = &m.params.data_dir;
        if crate::model::inventory::same_dir(wanted, agent_dir) {
            continue;
        }
        let at = m.line.map(|l| format!(":{l}")).unwrap_or_default();
        return Err(Status::invalid_argument(format!(
            "{inventory}{at}: host {ip}: etcd_data of {name} is {wanted}, but the agent on {ip} manages {agent_dir} (paths.etcd_data in its agent.yml): \
             the etcd.conf Quorum renders would move etcd to {wanted} while wipes and the member check use {agent_dir}. \
             Make them the same, in the inventory or in that agent.yml (then restart quorum-agent); nothing was planned",
            ip = m.ip,
            name = m.name,
        )));
    }
    Ok(())
}

/// A planned SOP, ready to store.
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// The cluster's name.
    pub cluster: String,
    /// The runner's context.
    pub context: RunContext,
    /// The inventory digest.
    pub digest: String,
}

/// The planner's view of `cluster`, with the etcd users of the PostgreSQL clusters that use
/// it (Pigsty v4 creates and repairs them with the cluster).
fn spec_of(inv: &Inventory, cluster: &EtcdCluster) -> plan::ClusterSpec {
    let mut spec = plan::cluster_spec(cluster, cluster.params.init);
    spec.pg_users = inv
        .pg_clusters_using(&cluster.name)
        .into_iter()
        .map(|p| p.etcd_user.clone())
        .collect();
    spec.pg_users.sort();
    spec.pg_users.dedup();
    spec
}

/// Plans `req` against the inventory at `inventory_path` and the live state.
pub async fn plan_request(
    inventory_path: &std::path::Path,
    registry: &Registry,
    etcd: &crate::clients::etcd::EtcdAccess,
    req: &Request,
) -> Result<Planned, Status> {
    let inv = load_inventory(inventory_path).await?;
    match &req.sop {
        SopRequest::PatroniReload { pg, .. } | SopRequest::VipReload { pg } => {
            return plan_pg(&inv, req, pg, registry, etcd).await;
        }
        _ => {}
    }
    let cluster = inv
        .etcd_cluster(req.cluster.as_deref())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    etcd.remember(cluster);
    if let SopRequest::MemberAdd { .. } | SopRequest::MemberRemove { .. } = req.sop {
        return plan_membership(&inv, cluster, req, registry, etcd).await;
    }
    let spec = spec_of(&inv, cluster);
    let mut hosts: Vec<IpAddr> = spec.members.iter().map(|m| m.ip).collect();
    let service_target = if let SopRequest::Service {
        service,
        action,
        hosts: given,
        forks,
    } = &req.sop
    {
        let targets = resolve_hosts(&inv, cluster, *service, given)?;
        hosts.extend(targets.iter().copied());
        Some((*service, *action, targets, *forks))
    } else {
        None
    };
    hosts.sort();
    hosts.dedup();
    let (live, silent) = gather_live(registry, etcd, &spec, &hosts).await;
    check_data_dirs(inv.file(), &cluster.members, &live)?;
    let mut plan = match &req.sop {
        SopRequest::ClusterCreate => plan::plan_cluster_create(&spec, &live),
        SopRequest::ClusterRemove => plan::plan_cluster_remove(&spec, &live, false),
        SopRequest::ClusterPurge => plan::plan_cluster_remove(&spec, &live, true),
        SopRequest::ConfigReload { restart } => plan::plan_config_reload(&spec, &live, *restart),
        SopRequest::EnvRefresh => plan::plan_env_refresh(&spec, &live),
        SopRequest::Service { .. } => {
            let Some((service, action, targets, forks)) = service_target else {
                return Err(Status::internal("service target lost"));
            };
            plan::plan_service(&spec, &live, service, action, &targets, forks)
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "{} is not an SOP an operator starts",
                other.name()
            )))
        }
    }
    .map_err(plan_status)?;
    if req.sop != SopRequest::ClusterCreate {
        snapshot_before_destruction(&mut plan, &spec.name, req.no_snapshot, &live)?;
    }
    plan.notes.splice(0..0, silent);
    Ok(Planned {
        context: RunContext {
            endpoints: spec.client_urls(),
            request: Some(req.sop.clone()),
            notes: plan.notes.clone(),
            roster: Some(spec.roster()),
            ..RunContext::default()
        },
        plan,
        cluster: spec.name.clone(),
        digest: inv.digest().to_string(),
    })
}

/// The PostgreSQL clusters a `patroni reload` / `vip reload` names: `pg_cluster=NAME`,
/// `all=true`, or the only one.
fn select_pg<'a>(inv: &'a Inventory, pick: &PgPick) -> Result<Vec<&'a PgCluster>, Status> {
    let all = inv.pg_clusters();
    let names = || {
        all.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if all.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{} defines no PostgreSQL cluster (no host with pg_cluster and pg_seq)",
            inv.file()
        )));
    }
    if let PgPick::Cluster(name) = pick {
        return match all.iter().find(|p| &p.name == name) {
            Some(p) => Ok(vec![p]),
            None => Err(Status::invalid_argument(format!(
                "--cluster {name}: no such PostgreSQL cluster in {}; it has: {}",
                inv.file(),
                names()
            ))),
        };
    }
    if *pick == PgPick::All || all.len() == 1 {
        return Ok(all.iter().collect());
    }
    Err(Status::invalid_argument(format!(
        "{} has several PostgreSQL clusters ({}); name one with --cluster or pass --all",
        inv.file(),
        names()
    )))
}

/// The planner's view of PostgreSQL clusters on etcd cluster `etcd`: their instances,
/// who leads now (asked from Patroni), and the etcd member list to write.
async fn pg_targets(
    pgs: &[&PgCluster],
    etcd: &EtcdCluster,
    strict: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<PgTarget>, Status> {
    let mut out = Vec::new();
    for p in pgs {
        if let Some(m) = p.members.iter().find(|m| m.patroni_ssl) {
            let why = format!(
                "{} ({}) sets patroni_ssl_enabled: Quorum reaches Patroni's REST API over plain HTTP only in this version",
                m.name, m.ip
            );
            if strict {
                return Err(Status::failed_precondition(format!(
                    "{why}; refresh its Patroni with `./pgsql.yml -t pg_conf` instead"
                )));
            }
            // A membership change must not be held up by it: it goes on without this
            // cluster's refresh, and says so.
            notes.push(format!(
                "{why}, so this run does not refresh PostgreSQL cluster {}: run `./pgsql.yml -l {} -t pg_conf,pg_vip_config` after it",
                p.name, p.name
            ));
            continue;
        }
        let pg = PgRef {
            name: p.name.clone(),
            members: p
                .members
                .iter()
                .map(|m| PgNode {
                    ip: m.ip,
                    name: m.name.clone(),
                    api: format!("http://{}", std::net::SocketAddr::new(m.ip, m.patroni_port)),
                    vip: m.vip.is_some(),
                })
                .collect(),
        };
        let leader = match pg.cluster().await {
            Ok(c) => c.leader().and_then(|l| pg.node_of(l)).map(|n| n.ip),
            Err(e) if strict => {
                return Err(Status::failed_precondition(format!(
                    "{e}; Quorum orders the instances by role (replicas before the primary) and gates on Patroni, so it needs the REST API (patroni_port) reachable from the coordinator"
                )))
            }
            Err(e) => {
                notes.push(format!(
                    "{e}: the refresh of {} visits its instances in IP order, and its gates wait for Patroni to answer",
                    p.name
                ));
                None
            }
        };
        out.push(PgTarget {
            pg,
            leader,
            // As Pigsty renders them (pg_conf, pg_vip_config): one rule for plans and files.
            dcs_hosts: crate::model::render::patroni_dcs_hosts(etcd),
            dcs_endpoints: crate::model::render::vip_endpoints(etcd),
        });
    }
    Ok(out)
}

/// Plans `patroni reload` and `vip reload`. The run locks the etcd cluster the PostgreSQL
/// clusters use, so it never overlaps a membership change that refreshes the same files.
async fn plan_pg(
    inv: &Inventory,
    req: &Request,
    pick: &PgPick,
    registry: &Registry,
    etcd: &crate::clients::etcd::EtcdAccess,
) -> Result<Planned, Status> {
    let pgs = select_pg(inv, pick)?;
    let mut dcs: Vec<&str> = pgs.iter().filter_map(|p| p.dcs.as_deref()).collect();
    dcs.sort();
    dcs.dedup();
    let etcd_name = match (dcs.as_slice(), pgs.iter().find(|p| p.dcs.is_none())) {
        (_, Some(p)) => {
            return Err(Status::invalid_argument(format!(
                "PostgreSQL cluster {} has no etcd cluster to point at: define the group `etcd` in {}",
                p.name,
                inv.file()
            )))
        }
        ([one], None) => *one,
        _ => {
            return Err(Status::invalid_argument(format!(
                "the chosen PostgreSQL clusters use different etcd clusters ({}); run one --cluster at a time",
                dcs.join(", ")
            )))
        }
    };
    let cluster = inv
        .etcd_cluster(Some(etcd_name))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    etcd.remember(cluster);
    let spec = spec_of(inv, cluster);
    let mut notes = Vec::new();
    // Patroni and vip-manager get the inventory's etcd members: refuse if that is not
    // etcd's member list (a host that never joined, or a learner not yet promoted, must
    // never be in a client list).
    match etcd.member_list(&spec.client_urls()).await {
        Ok(members) => {
            let problems = spec.roster().compare(&members, None);
            if !problems.is_empty() {
                return Err(plan_status(PlanError::InventoryDisagrees {
                    cluster: spec.name.clone(),
                    problems,
                }));
            }
        }
        Err(e) => notes.push(format!(
            "etcd's member list of cluster {} could not be read ({e}): pigsty.yml was not compared with it",
            spec.name
        )),
    }
    let targets = pg_targets(&pgs, cluster, true, &mut notes).await?;
    let hosts: Vec<IpAddr> = targets
        .iter()
        .flat_map(|t| t.pg.members.iter().map(|m| m.ip))
        .collect();
    let silent = crate::clients::registry::refresh_facts(registry, &hosts).await;
    let live = agents_live(registry, &hosts);
    let mut plan = match req.sop {
        SopRequest::PatroniReload {
            restart_patroni, ..
        } => plan::plan_patroni_reload(&targets, &live, restart_patroni),
        _ => plan::plan_vip_reload(&targets, &live),
    }
    .map_err(plan_status)?;
    plan.notes.splice(0..0, silent);
    plan.notes.extend(notes);
    Ok(Planned {
        context: RunContext {
            endpoints: spec.client_urls(),
            request: Some(req.sop.clone()),
            notes: plan.notes.clone(),
            ..RunContext::default()
        },
        plan,
        cluster: spec.name.clone(),
        digest: inv.digest().to_string(),
    })
}

/// Plans `member add` / `member remove`: the cluster with one member more or less than now.
async fn plan_membership(
    inv: &Inventory,
    cluster: &EtcdCluster,
    req: &Request,
    registry: &Registry,
    etcd: &crate::clients::etcd::EtcdAccess,
) -> Result<Planned, Status> {
    let (host, seq, forget) = match req.sop {
        SopRequest::MemberAdd { host, seq } => (host, seq, false),
        SopRequest::MemberRemove { host, forget } => (host, None, forget),
        _ => return Err(Status::internal("not a membership SOP")),
    };
    let in_inventory = cluster.member(host).cloned();
    // Patroni and vip-manager of the PostgreSQL clusters on this etcd cluster follow the change.
    let pgs = inv.pg_clusters_using(&cluster.name);
    let mut pg_hosts: Vec<IpAddr> = pgs.iter().flat_map(|p| p.patroni_hosts()).collect();
    pg_hosts.sort();
    pg_hosts.dedup();
    let (planned_cluster, all_endpoints, plan) = if let SopRequest::MemberAdd { .. } = req.sop {
        let target = match (&in_inventory, seq) {
            (Some(_), _) => cluster.clone(),
            (None, Some(seq)) => {
                if let Some(m) = cluster.members.iter().find(|m| m.seq == seq) {
                    return Err(Status::invalid_argument(format!(
                        "--seq {seq} is taken by {} ({}); pick a free one",
                        m.name, m.ip
                    )));
                }
                let mut members = cluster.members.clone();
                members.push(cluster.new_member(host, seq));
                cluster.with_members(members)
            }
            (None, None) => {
                let next = cluster.members.iter().map(|m| m.seq + 1).max().unwrap_or(1);
                return Err(Status::invalid_argument(format!(
                    "{host} is not in the etcd group of cluster {} in {}: add `{host}: {{ etcd_seq: {next} }}` under all.children.{}.hosts (Pigsty's SOP step 2), or pass --seq {next}",
                    cluster.name,
                    inv.file(),
                    cluster.group
                )));
            }
        };
        let mut spec = spec_of(inv, &target);
        // The joining member starts against a running cluster.
        spec.etcd_conf.insert(
            host,
            crate::model::render::etcd_conf_spec(&target, host, EtcdInit::Existing),
        );
        let mut hosts: Vec<IpAddr> = spec.members.iter().map(|m| m.ip).collect();
        hosts.extend(pg_hosts.iter().copied());
        hosts.sort();
        hosts.dedup();
        let (live, silent) = gather_live(registry, etcd, &spec, &hosts).await;
        check_data_dirs(inv.file(), &target.members, &live)?;
        let mut plan = plan::plan_member_add(&spec, host, &live).map_err(plan_status)?;
        plan.notes.splice(0..0, silent);
        let targets = pg_targets(&pgs, &target, false, &mut plan.notes).await?;
        plan::push_pg_refresh(&mut plan, &targets, &live, None).map_err(plan_status)?;
        (spec.roster(), spec.client_urls(), plan)
    } else {
        // Pigsty's SOP takes the host out of the inventory first; then the inventory says
        // nothing about its data dir (the wipe uses the agent's own), and the member is named
        // by etcd's member list (e2e probe F6: never a made-up `etcd-0`).
        let gone_listed = in_inventory.is_some();
        let gone_member =
            in_inventory.unwrap_or_else(|| cluster.new_member(host, seq.unwrap_or(0)));
        let guessed = MemberSpec {
            ip: host,
            name: gone_member.name.clone(),
            client_url: crate::model::render::client_url(&gone_member),
            peer_url: crate::model::render::peer_url(&gone_member),
        };
        let remaining = cluster.without_member(host);
        let spec = spec_of(inv, &remaining);
        let mut hosts: Vec<IpAddr> = spec.members.iter().map(|m| m.ip).collect();
        hosts.push(host);
        hosts.extend(pg_hosts.iter().copied());
        hosts.sort();
        hosts.dedup();
        let (mut live, silent) = gather_live(registry, etcd, &spec, &hosts).await;
        // An agent that did not answer for fresh facts counts as gone for the leaving host:
        // its cleanup waits for it rather than failing the run after the member left.
        if registry.silent_since(host).is_some() && live.facts.remove(&host).is_some() {
            live.stale.push(host);
        }
        check_data_dirs(
            inv.file(),
            remaining
                .members
                .iter()
                .chain(gone_listed.then_some(&gone_member)),
            &live,
        )?;
        if live.members.is_none() {
            live.members = etcd
                .member_list(std::slice::from_ref(&guessed.client_url))
                .await
                .ok();
        }
        let gone = if gone_listed {
            guessed
        } else {
            plan::leaving_member(&live, host, guessed, seq.is_some())
        };
        // The leaving member's own health (a dead one may leave while others are down too),
        // and that of any other voter etcd lists that the inventory lacks: the removal rule
        // weighs every voter.
        live.health
            .insert(gone.ip, etcd.member_health(&gone.client_url).await);
        let unchecked: Vec<(IpAddr, String)> = live
            .members
            .iter()
            .flatten()
            .filter(|m| !m.is_learner)
            .filter_map(|m| {
                let h = m
                    .peer_urls
                    .first()
                    .and_then(|u| crate::sop::agreement::host_of_url(u))?;
                Some((h, m.client_urls.first()?.clone()))
            })
            .filter(|(h, _)| !live.health.contains_key(h))
            .collect();
        for (h, url) in unchecked {
            live.health.insert(h, etcd.member_health(&url).await);
        }
        let mut plan =
            plan::plan_member_remove(&spec, &gone, &live, forget).map_err(plan_status)?;
        snapshot_before_destruction(&mut plan, &spec.name, req.no_snapshot, &live)?;
        plan.notes.splice(0..0, silent);
        let targets = pg_targets(&pgs, &remaining, false, &mut plan.notes).await?;
        let unreachable = (!live.facts.contains_key(&host)).then_some(host);
        plan::push_pg_refresh(&mut plan, &targets, &live, unreachable).map_err(plan_status)?;
        let mut endpoints = spec.client_urls();
        endpoints.push(gone.client_url.clone());
        (spec.roster(), endpoints, plan)
    };
    Ok(Planned {
        context: RunContext {
            endpoints: all_endpoints,
            request: Some(req.sop.clone()),
            notes: plan.notes.clone(),
            roster: Some(planned_cluster.clone()),
            ..RunContext::default()
        },
        plan,
        cluster: planned_cluster.cluster,
        digest: inv.digest().to_string(),
    })
}

/// Invariant 8: a verified snapshot before the plan's first destructive step (member remove,
/// cluster remove and purge, stops and restarts of etcd), unless the operator waived it with
/// `--no-snapshot` (`no_snapshot=true`). A plan that needs one while no member answers is
/// refused now rather than at its snapshot step.
fn snapshot_before_destruction(
    plan: &mut Plan,
    cluster: &str,
    no_snapshot: bool,
    live: &Live,
) -> Result<(), Status> {
    // A restart that follows only unchanged writes will be skipped: it destroys nothing.
    let destroys = plan.steps.iter().any(|s| match &s.kind {
        StepKind::RestartEtcd {
            if_changed, force, ..
        } => {
            *force
                || if_changed.is_empty()
                || if_changed
                    .iter()
                    .any(|i| plan.steps.get(*i).is_none_or(|w| !w.diff.is_empty()))
        }
        other => other.destroys_etcd_state(),
    });
    if !destroys {
        return Ok(());
    }
    if no_snapshot {
        plan.notes.push(
            "no snapshot is taken before the destructive steps: waived with --no-snapshot".into(),
        );
        return Ok(());
    }
    if live.members.is_none() {
        return Err(Status::failed_precondition(format!(
            "no member of etcd cluster {cluster} answers ({}), so no snapshot can be taken before this run destroys data; nothing was changed. Start a member, or pass --no-snapshot to go on without one",
            if live.members_error.is_empty() {
                "no endpoint"
            } else {
                live.members_error.as_str()
            }
        )));
    }
    plan.snapshot_first(cluster);
    plan.notes.push(format!(
        "a verified snapshot of {cluster} is taken and kept on the coordinator before the first destructive step (`quorum snapshot list`)"
    ));
    Ok(())
}

/// A new run id: time-ordered, unique.
pub fn new_run_id() -> String {
    let r: [u8; 3] = rand::random();
    format!("r{}-{}", now_ms(), hex::encode(r))
}

/// The stored form of a planned SOP.
pub fn run_record(
    id: &str,
    sop: &str,
    started_by: &str,
    planned: &Planned,
) -> Result<RunRecord, Status> {
    Ok(RunRecord {
        id: id.to_string(),
        sop: sop.to_string(),
        cluster: planned.cluster.clone(),
        context: serde_json::to_string(&planned.context)
            .map_err(|e| Status::internal(e.to_string()))?,
        state: crate::sop::store::run_state::RUNNING.into(),
        started_by: started_by.to_string(),
        inventory_digest: planned.digest.clone(),
        created_ms: now_ms(),
        finished_ms: 0,
        error: String::new(),
        steps: planned
            .plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepRecord::pending(i, &s.kind))
            .collect(),
    })
}

/// The wire view of a stored run.
pub fn run_view(run: &RunRecord) -> pb::RunView {
    pb::RunView {
        run_id: run.id.clone(),
        sop: run.sop.clone(),
        cluster: run.cluster.clone(),
        state: crate::model::words::run_state(&run.state) as i32,
        started_by: run.started_by.clone(),
        inventory_digest: run.inventory_digest.clone(),
        created_unix_ms: run.created_ms,
        error: run.error.clone(),
        notes: serde_json::from_str::<RunContext>(&run.context)
            .map(|c| c.notes)
            .unwrap_or_default(),
        wipes: Vec::new(),
        steps: run
            .steps
            .iter()
            .map(|s| pb::StepView {
                index: s.index as u32,
                kind: s.kind.name().into(),
                host: s.host.clone(),
                description: s.description.clone(),
                state: crate::model::words::step_state(&s.state) as i32,
                outcome: crate::model::words::outcome(&s.outcome) as i32,
                output: s.output.clone(),
                started_unix_ms: s.started_ms,
                finished_unix_ms: s.finished_ms,
                diff: String::new(),
                journal: s.journal.map(|j| pb::JournalAnswer {
                    started_unix_ms: j.started_ms,
                    finished_unix_ms: j.finished_ms,
                }),
            })
            .collect(),
        finished_unix_ms: run.finished_ms,
        now_unix_ms: now_ms(),
    }
}

/// The wire view of a plan that is not stored.
pub fn plan_view(sop: &str, planned: &Planned) -> pb::RunView {
    pb::RunView {
        run_id: String::new(),
        sop: sop.to_string(),
        cluster: planned.cluster.clone(),
        state: pb::RunState::Planned as i32,
        started_by: String::new(),
        inventory_digest: planned.digest.clone(),
        created_unix_ms: now_ms(),
        error: String::new(),
        notes: planned.plan.notes.clone(),
        wipes: planned.plan.wipes.clone(),
        steps: planned
            .plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| pb::StepView {
                index: i as u32,
                kind: s.kind.name().into(),
                host: s.kind.hosts_label(),
                description: s.kind.describe(),
                state: pb::StepState::Planned as i32,
                diff: s.diff.clone(),
                ..Default::default()
            })
            .collect(),
        finished_unix_ms: 0,
        now_unix_ms: now_ms(),
    }
}
