//! Problems found in an inventory: every one located (file, line, column where known), tied to
//! the host or hosts it concerns, and worded so that the operator knows what to change.

use std::fmt;

use serde::Serialize;

/// What is wrong (or suspicious) in an inventory. The text never names the host; the
/// [`Diagnostic`] around it does, so one message reads the same for one host or several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    // ---- errors: the file or its structure ----
    /// The file cannot be read.
    #[error("cannot read the inventory: {error}; check the path (Pigsty keeps it as pigsty.yml in its home directory)")]
    Read {
        /// The I/O error.
        error: String,
    },
    /// The bytes are not UTF-8.
    #[error("the inventory is not UTF-8 text; save it as UTF-8")]
    NotUtf8,
    /// Too big or too deeply nested to parse (checked before any parser sees the text).
    #[error("the inventory was not parsed: {detail}; Pigsty inventories are far smaller and flatter (well under 1 MiB, about ten levels deep), so check that this is the right file")]
    OverLimit {
        /// What limit, by how much (and the line, for nesting).
        detail: String,
    },
    /// libyaml refused the text.
    #[error("YAML syntax error: {message}; fix the YAML here, nothing else was checked")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// No document, or a document without groups.
    #[error("the inventory is empty; define hosts under `all.children.<group>.hosts` as in Pigsty's pigsty.yml")]
    Empty,
    /// A node has the wrong YAML type.
    #[error("`{path}` is {found}, expected {expected}")]
    WrongType {
        /// Dotted path of the node.
        path: String,
        /// What was found ("a list", "a string").
        found: &'static str,
        /// What Ansible's YAML inventory format wants there.
        expected: &'static str,
    },
    /// A host key that is not an IP address.
    #[error("host key `{key}` in group `{group}` is not an IP address; Pigsty keys every host by its IP (write `10.10.10.10: {{ ... }}`)")]
    HostNotIp {
        /// The key as written.
        key: String,
        /// The group it is listed in.
        group: String,
    },
    /// `children` loops back to a group.
    #[error("group `{group}` is its own ancestor through `children`; remove the cycle")]
    GroupCycle {
        /// A group on the cycle.
        group: String,
    },

    // ---- errors: etcd ----
    /// A member of an etcd group without `etcd_seq`.
    #[error("no etcd_seq, but it is in etcd cluster `{cluster}` (Pigsty: \"variable 'etcd_seq' is required for etcd instance\"); add `etcd_seq: <n>`, an integer >= 0 unique in the cluster")]
    MissingEtcdSeq {
        /// The cluster.
        cluster: String,
    },
    /// Two members share an `etcd_seq`.
    #[error("etcd_seq {seq} is already used by {other} (line {other_line}) in etcd cluster `{cluster}`; give every member its own etcd_seq (members are named `{cluster}-<etcd_seq>`)")]
    DuplicateEtcdSeq {
        /// The sequence number.
        seq: u32,
        /// The cluster.
        cluster: String,
        /// The host that has it first.
        other: String,
        /// That host's line (0 when unknown).
        other_line: usize,
    },
    /// Hosts with `etcd_seq` in a group that is not an etcd cluster.
    #[error("etcd_seq is set, but group `{group}` sets no etcd_cluster; add `vars: {{ etcd_cluster: {group} }}` to group `{group}` (Pigsty names an etcd cluster after its group)")]
    EtcdClusterMissing {
        /// The group the host (or its etcd_seq) is listed in.
        group: String,
    },
    /// One host in two etcd clusters.
    #[error("listed in etcd clusters `{first}` and `{second}`; an etcd member belongs to exactly one cluster, so remove it from one of the groups")]
    TwoEtcdClusters {
        /// The cluster listed first.
        first: String,
        /// The other one.
        second: String,
    },
    /// Two groups define one cluster name.
    #[error("groups `{first_group}` and `{group}` both define etcd cluster `{cluster}`; give each group its own etcd_cluster")]
    DuplicateEtcdCluster {
        /// The cluster name.
        cluster: String,
        /// The first group.
        first_group: String,
        /// The second group.
        group: String,
    },
    /// A host-level `etcd_cluster` that contradicts its group.
    #[error("etcd_cluster is `{value}` for this host, but it is listed in the group of etcd cluster `{cluster}`; remove the host-level etcd_cluster")]
    HostClusterMismatch {
        /// The host's value.
        value: String,
        /// The group's cluster.
        cluster: String,
    },
    /// `etcd_seq` (or `pg_seq`) not an integer >= 0.
    #[error("{var} is `{value}`; it must be an integer >= 0")]
    BadSeq {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
    },
    /// A port out of range or not a number.
    #[error("{var} is `{value}`, not a port; use an integer from 1 to 65535")]
    BadPort {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
    },
    /// Client and peer port equal.
    #[error("etcd_port and etcd_peer_port are both {port}; etcd needs two different ports (Pigsty's defaults are 2379 and 2380)")]
    SamePorts {
        /// The port.
        port: u16,
    },
    /// `etcd_init` other than new/existing.
    #[error(
        "etcd_init is `{value}`; use `new` to create a cluster or `existing` to join a running one"
    )]
    BadEtcdInit {
        /// The value as written.
        value: String,
    },
    /// A boolean variable with another value.
    #[error("{var} is `{value}`, not a boolean; use true or false")]
    BadBool {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
    },
    /// A millisecond setting that is not a positive integer.
    #[error("{var} is `{value}`; use a positive integer (milliseconds)")]
    BadMillis {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
    },
    /// A path that is not absolute (or not a one-line string).
    #[error("{var} is `{value}`, not an absolute path; use a path that starts with `/`")]
    BadPath {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
    },
    /// A data dir that is a system directory: wiping the member would empty it.
    #[error("{var} is `{value}`, which is {dir}: wiping this member's data would empty that system directory; use a dedicated directory such as /data/etcd (Pigsty's default)")]
    SystemDataDir {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
        /// The system directory it names.
        dir: &'static str,
    },
    /// A name with characters that would break the rendered files.
    #[error("{var} is `{value}`; use letters, digits, `-`, `_` and `.` only, starting with a letter or digit")]
    BadName {
        /// The variable.
        var: &'static str,
        /// The value as written.
        value: String,
    },

    /// A password that cannot be used.
    #[error("{var} is not a usable password: it must be one line of 1 to 256 characters without control characters")]
    BadPassword {
        /// The variable.
        var: &'static str,
    },
    /// `quorum_pigsty_version` or `--pigsty-version` names no generation Quorum renders.
    #[error("{detail}")]
    BadPigstyVersion {
        /// What is wrong and what to do.
        detail: String,
    },

    // ---- errors: PostgreSQL ----
    /// A PostgreSQL host without `pg_seq`.
    #[error("no pg_seq, but it is in pg cluster `{cluster}`; add `pg_seq: <n>`, an integer >= 0 unique in the cluster")]
    MissingPgSeq {
        /// The cluster.
        cluster: String,
    },
    /// Two instances share a `pg_seq`.
    #[error("pg_seq {seq} is already used by {other} (line {other_line}) in pg cluster `{cluster}`; give every instance its own pg_seq")]
    DuplicatePgSeq {
        /// The sequence number.
        seq: u32,
        /// The cluster.
        cluster: String,
        /// The host that has it first.
        other: String,
        /// That host's line (0 when unknown).
        other_line: usize,
    },
    /// A VIP that is not `ipv4/prefix`.
    #[error("pg_vip_address is `{value}`; with pg_vip_enabled it must be `<ipv4>/<prefix>`, e.g. 10.10.10.2/24")]
    BadVipAddress {
        /// The value as written.
        value: String,
    },

    // ---- warnings ----
    /// An even number of voting members.
    #[error("etcd cluster `{cluster}` has {size} members; an even size tolerates no more failures than {smaller} members do, so use an odd number (3 or 5)")]
    EvenCluster {
        /// The cluster.
        cluster: String,
        /// Its size.
        size: usize,
        /// `size - 1`.
        smaller: usize,
    },
    /// The cluster name differs from its group name.
    #[error("etcd cluster `{cluster}` is defined by group `{group}`; Pigsty's templates list the hosts of the group named after the cluster, so rename the group to `{cluster}`")]
    ClusterNotGroupName {
        /// The cluster.
        cluster: String,
        /// The group.
        group: String,
    },
    /// A group sets `etcd_cluster` but none of its hosts is an etcd member.
    #[error("group `{group}` sets etcd_cluster `{cluster}` but none of its hosts has etcd_seq; it is not treated as an etcd cluster")]
    EtcdGroupWithoutSeq {
        /// The group.
        group: String,
        /// The value.
        cluster: String,
    },
    /// An etcd group with no host.
    #[error("etcd group `{group}` has no hosts; it is ignored")]
    EmptyEtcdGroup {
        /// The group.
        group: String,
    },
    /// A key Ansible does not read in a group.
    #[error("group `{group}` has the key `{key}`, which Ansible ignores (a group has only hosts, vars and children)")]
    UnknownGroupKey {
        /// The group.
        group: String,
        /// The key.
        key: String,
    },
    /// Members with different ports.
    #[error("members of etcd cluster `{cluster}` have different {var} values; Pigsty renders every peer URL with the rendering host's own value, Quorum with each member's own: keep them equal")]
    PortsDiffer {
        /// The cluster.
        cluster: String,
        /// The variable.
        var: &'static str,
    },
    /// A `pg_role` Pigsty does not know.
    #[error("pg_role is `{value}`; Pigsty expects primary, replica or offline")]
    PgRole {
        /// The value (or `(missing)`).
        value: String,
    },
    /// Which etcd cluster PostgreSQL uses is unclear.
    #[error("pg cluster `{cluster}`: {detail}")]
    PgDcs {
        /// The pg cluster.
        cluster: String,
        /// What Quorum concluded.
        detail: String,
    },
}

/// One [`Problem`] with where it is and which hosts it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The inventory path as given by the caller.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known (YAML syntax errors).
    pub column: Option<usize>,
    /// The hosts concerned (IP keys as written), empty when the problem is about a group or
    /// the file.
    pub hosts: Vec<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Diagnostic {
    /// `pigsty.yml:12: host 10.10.10.11: <problem>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        match self.hosts.as_slice() {
            [] => write!(f, ": {}", self.problem),
            [one] => write!(f, ": host {one}: {}", self.problem),
            many => write!(f, ": hosts {}: {}", many.join(", "), self.problem),
        }
    }
}

impl std::error::Error for Diagnostic {}

impl Serialize for Diagnostic {
    /// `{"file", "line", "column", "hosts", "message"}`: the message is the full sentence.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Diagnostic", 5)?;
        st.serialize_field("file", &self.file)?;
        st.serialize_field("line", &self.line)?;
        st.serialize_field("column", &self.column)?;
        st.serialize_field("hosts", &self.hosts)?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// Every error found in an inventory (there is at least one), plus the warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryErrors {
    /// The errors, in file order.
    pub errors: Vec<Diagnostic>,
    /// The warnings, in file order.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for InventoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{n} problem{} in the inventory; nothing was changed:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InventoryErrors {}
