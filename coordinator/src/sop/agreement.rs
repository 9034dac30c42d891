//! Inventory against live membership: does `pigsty.yml` name exactly the members etcd lists?
//! Compared by peer URL (what etcd knows a member by before it has a name), at plan time by
//! every etcd SOP and again at run time before each membership change, and shown by
//! `quorum cluster status`. Each disagreement carries the inventory line that fixes it. Pure.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clients::etcd::MemberInfo;

/// One etcd member as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    /// Host IP.
    pub ip: IpAddr,
    /// Member name, `<cluster>-<seq>`.
    pub name: String,
    /// `https://ip:port`.
    pub client_url: String,
    /// `https://ip:peer_port`.
    pub peer_url: String,
}

/// The inventory's membership of one etcd cluster, as planned; kept with a run so its
/// membership steps compare against what the plan assumed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// `etcd_cluster`: member names are `<cluster>-<etcd_seq>`.
    pub cluster: String,
    /// The inventory group that defines it (`all.children.<group>.hosts`).
    pub group: String,
    /// The group's `etcd_port`: a line for a member on another port must say so.
    pub client_port: u16,
    /// The group's `etcd_peer_port`.
    pub peer_port: u16,
    /// The members the inventory names (for member add and remove: as planned, one more or
    /// one less than etcd lists while the change is under way).
    pub members: Vec<MemberSpec>,
}

/// One way the inventory and etcd's member list disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disagreement {
    /// etcd lists a member the inventory does not name.
    NotInInventory {
        /// Its id.
        id: u64,
        /// Its name (empty while an added member has not started).
        name: String,
        /// Its peer URL.
        peer_url: String,
        /// The inventory line that names it, when its host can be read from the URL.
        line: Option<String>,
        /// Whether it is a learner.
        learner: bool,
        /// The group the line goes under.
        group: String,
        /// Its name does not follow `<cluster>-<etcd_seq>`: the cluster's pattern, when so.
        foreign_name: Option<String>,
    },
    /// The inventory names a host etcd does not list.
    NotAMember {
        /// The host.
        ip: IpAddr,
        /// The name the inventory gives it.
        name: String,
        /// Its peer URL.
        peer_url: String,
        /// The group whose line names it.
        group: String,
    },
    /// The inventory names a host etcd lists as a learner that was never promoted: it must
    /// not be in any client list until it is.
    Unpromoted {
        /// The host.
        ip: IpAddr,
        /// The name the inventory gives it.
        name: String,
        /// Its member id.
        id: u64,
    },
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::NotInInventory {
                id,
                name,
                peer_url,
                line,
                learner,
                group,
                foreign_name,
            } => {
                let who = if name.is_empty() {
                    format!("{} {id:x} (not started yet)", if *learner { "learner" } else { "member" })
                } else if *learner {
                    format!("learner {name}")
                } else {
                    format!("member {name}")
                };
                let renamed = match foreign_name {
                    Some(pattern) => format!(
                        " (its name does not follow {pattern}, so Quorum would render another name for it: rather remove it and add it back with `quorum member add`)"
                    ),
                    None => String::new(),
                };
                match line {
                    Some(line) if *learner => write!(
                        f,
                        "{who} ({peer_url}) is not in pigsty.yml: add `{line}` under all.children.{group}.hosts{renamed} and finish its join with `quorum member add`, or remove it (`etcdctl member remove {id:x}`)"
                    ),
                    Some(line) => write!(
                        f,
                        "{who} ({peer_url}) is not in pigsty.yml: add `{line}` under all.children.{group}.hosts{renamed}"
                    ),
                    None => write!(
                        f,
                        "{who} ({peer_url}) is not in pigsty.yml, and its host cannot be read from that URL: add it under all.children.{group}.hosts, or remove it (`etcdctl member remove {id:x}`)"
                    ),
                }
            }
            Disagreement::NotAMember {
                ip,
                name,
                peer_url,
                group,
            } => write!(
                f,
                "{ip} ({name}, {peer_url}) is in pigsty.yml but not a member of etcd: run `quorum member add {ip}`, or remove the line `{ip}: ...` from all.children.{group}.hosts"
            ),
            Disagreement::Unpromoted { ip, name, id } => write!(
                f,
                "{ip} ({name}) is in pigsty.yml but etcd lists it as a learner ({id:x}) that was never promoted: finish the join with `quorum member add {ip}` (it adopts the learner), or remove the learner (`etcdctl member remove {id:x}`) and its line from pigsty.yml"
            ),
        }
    }
}

/// `https://10.10.10.11:2380` → `10.10.10.11` (IPv6 in brackets too).
pub fn host_of_url(url: &str) -> Option<IpAddr> {
    let rest = url.split("://").nth(1)?;
    let hostport = rest.split('/').next()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The port of a URL, if it names one.
fn port_of_url(url: &str) -> Option<u16> {
    let rest = url.split("://").nth(1)?;
    let hostport = rest.split('/').next()?;
    let (_, port) = hostport.rsplit_once(':')?;
    port.parse().ok()
}

impl Roster {
    /// The `etcd_seq` a live member's name implies, when it follows `<cluster>-<seq>`.
    pub fn seq_of(&self, name: &str) -> Option<u32> {
        name.strip_prefix(&self.cluster)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The inventory line for a live member: `10.10.10.11: { etcd_seq: 1 }`, with its ports
    /// when they are not the group's. `None` when the host cannot be read from its URL.
    pub fn line_for(&self, m: &MemberInfo) -> Option<String> {
        let peer = m.peer_urls.first()?;
        let ip = host_of_url(peer)?;
        let mut vars = vec![match self.seq_of(&m.name) {
            Some(seq) => format!("etcd_seq: {seq}"),
            None => "etcd_seq: <n>".to_string(),
        }];
        if let Some(p) = port_of_url(peer).filter(|p| *p != self.peer_port && self.peer_port != 0) {
            vars.push(format!("etcd_peer_port: {p}"));
        }
        if let Some(p) = m
            .client_urls
            .first()
            .and_then(|u| port_of_url(u))
            .filter(|p| *p != self.client_port && self.client_port != 0)
        {
            vars.push(format!("etcd_port: {p}"));
        }
        let key = match ip {
            IpAddr::V6(_) => format!("'{ip}'"),
            IpAddr::V4(_) => ip.to_string(),
        };
        Some(format!("{key}: {{ {} }}", vars.join(", ")))
    }

    /// Every way the live member list `live` and the inventory disagree, by peer URL. The
    /// member with peer URL `changing` (the one a member add or remove is bringing in or
    /// taking out) is left out on both sides: it may be there or not.
    pub fn compare(&self, live: &[MemberInfo], changing: Option<&str>) -> Vec<Disagreement> {
        let skip = |url: &str| changing == Some(url);
        let mut out = Vec::new();
        for m in live {
            if m.peer_urls.iter().any(|u| skip(u)) {
                continue;
            }
            let known = self
                .members
                .iter()
                .any(|s| m.peer_urls.contains(&s.peer_url));
            if !known {
                out.push(Disagreement::NotInInventory {
                    id: m.id,
                    name: m.name.clone(),
                    peer_url: m.peer_urls.join(","),
                    line: self.line_for(m),
                    learner: m.is_learner,
                    group: self.group.clone(),
                    foreign_name: (!m.name.is_empty() && self.seq_of(&m.name).is_none())
                        .then(|| format!("{}-<etcd_seq>", self.cluster)),
                });
            }
        }
        for s in &self.members {
            if skip(&s.peer_url) {
                continue;
            }
            match live.iter().find(|m| m.peer_urls.contains(&s.peer_url)) {
                None => out.push(Disagreement::NotAMember {
                    ip: s.ip,
                    name: s.name.clone(),
                    peer_url: s.peer_url.clone(),
                    group: self.group.clone(),
                }),
                Some(m) if m.is_learner => out.push(Disagreement::Unpromoted {
                    ip: s.ip,
                    name: s.name.clone(),
                    id: m.id,
                }),
                Some(_) => {}
            }
        }
        out
    }
}

/// The refusal for `problems`, one line each.
pub fn refusal(cluster: &str, problems: &[Disagreement]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    format!(
        "pigsty.yml and etcd's member list of cluster {cluster} disagree (compared by peer URL); nothing was changed. Fix the inventory (or the cluster) first:\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn spec(i: u8) -> MemberSpec {
        let a = ip(&format!("127.0.0.{}", 10 + i));
        MemberSpec {
            ip: a,
            name: format!("etcd-{i}"),
            client_url: format!("https://{a}:2379"),
            peer_url: format!("https://{a}:2380"),
        }
    }

    fn live(i: u8, learner: bool) -> MemberInfo {
        let s = spec(i);
        MemberInfo {
            id: u64::from(i) * 0x1111,
            name: s.name,
            peer_urls: vec![s.peer_url],
            client_urls: vec![s.client_url],
            is_learner: learner,
        }
    }

    fn roster(members: &[u8]) -> Roster {
        Roster {
            cluster: "etcd".into(),
            group: "etcd".into(),
            client_port: 2379,
            peer_port: 2380,
            members: members.iter().map(|i| spec(*i)).collect(),
        }
    }

    #[test]
    fn the_same_members_agree() {
        let live = [live(1, false), live(2, false), live(3, false)];
        assert!(roster(&[1, 2, 3]).compare(&live, None).is_empty());
    }

    #[test]
    fn a_live_member_missing_from_the_inventory_gets_its_exact_line() {
        let live = [live(1, false), live(2, false), live(3, false)];
        let d = roster(&[2, 3]).compare(&live, None);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].to_string(),
            "member etcd-1 (https://127.0.0.11:2380) is not in pigsty.yml: add `127.0.0.11: { etcd_seq: 1 }` under all.children.etcd.hosts"
        );
    }

    #[test]
    fn an_inventory_host_that_is_no_member_is_named_with_both_fixes() {
        let live = [live(1, false), live(2, false)];
        let d = roster(&[1, 2, 4]).compare(&live, None);
        assert_eq!(
            d[0].to_string(),
            "127.0.0.14 (etcd-4, https://127.0.0.14:2380) is in pigsty.yml but not a member of etcd: run `quorum member add 127.0.0.14`, or remove the line `127.0.0.14: ...` from all.children.etcd.hosts"
        );
    }

    #[test]
    fn an_unpromoted_learner_in_the_inventory_disagrees() {
        let live = [live(1, false), live(2, false), live(3, true)];
        let d = roster(&[1, 2, 3]).compare(&live, None);
        assert!(
            matches!(d.as_slice(), [Disagreement::Unpromoted { id, .. }] if *id == 0x3333),
            "{d:?}"
        );
    }

    #[test]
    fn the_member_being_added_or_removed_may_differ() {
        let before = [live(1, false), live(2, false), live(3, false)];
        let joining = spec(4).peer_url;
        assert!(roster(&[1, 2, 3, 4])
            .compare(&before, Some(&joining))
            .is_empty());
        let mut during = before.to_vec();
        during.push(live(4, true));
        assert!(roster(&[1, 2, 3, 4])
            .compare(&during, Some(&joining))
            .is_empty());
        let leaving = spec(3).peer_url;
        assert!(roster(&[1, 2]).compare(&before, Some(&leaving)).is_empty());
        // Anything else still disagrees (e2e probe F3a: .11 live, not in the inventory).
        let d = roster(&[2, 3, 4]).compare(&before, Some(&joining));
        assert_eq!(d.len(), 1);
        assert!(d[0]
            .to_string()
            .contains("add `127.0.0.11: { etcd_seq: 1 }`"));
    }

    #[test]
    fn other_ports_and_foreign_names_are_spelled_out() {
        let mut m = live(5, false);
        m.peer_urls = vec!["https://127.0.0.15:2480".into()];
        m.client_urls = vec!["https://127.0.0.15:2479".into()];
        let r = roster(&[]);
        assert_eq!(
            r.line_for(&m).as_deref(),
            Some("127.0.0.15: { etcd_seq: 5, etcd_peer_port: 2480, etcd_port: 2479 }")
        );
        m.name = "node-a".into();
        let d = r.compare(&[m], None);
        assert!(
            d[0].to_string().contains("does not follow etcd-<etcd_seq>"),
            "{}",
            d[0]
        );
        assert_eq!(r.seq_of("etcd-12"), Some(12));
        assert_eq!(r.seq_of("etcdx-1"), None);
    }

    #[test]
    fn hosts_are_read_from_urls() {
        assert_eq!(
            host_of_url("https://10.10.10.10:2380"),
            Some(ip("10.10.10.10"))
        );
        assert_eq!(host_of_url("https://[::1]:2379"), "::1".parse().ok());
        assert_eq!(host_of_url("nonsense"), None);
    }
}
