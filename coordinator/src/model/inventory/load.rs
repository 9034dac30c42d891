//! The inventory resolver: walks the YAML into Ansible groups and hosts, resolves each host's
//! variables by Ansible's precedence, and builds the etcd and PostgreSQL clusters, collecting
//! every problem on the way instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use quorum_proto::yaml::{self, Node, NodeKind, Value};

use super::{
    sort_members, Diagnostic, EtcdCluster, EtcdInit, EtcdMember, EtcdParams, Infra, InfraHost,
    PgCluster, PgMember, Problem, QuorumExt, Secret, Vip,
};
use crate::model::pigsty::Choice;

/// Pigsty's `etcd_root_password` default.
const DEFAULT_ROOT_PASSWORD: &str = "Etcd.Root";
/// Longest password accepted (etcd has no limit; Pigsty's are short).
const MAX_PASSWORD: usize = 256;

/// What [`resolve`] found.
pub(super) struct Resolved {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    pub etcd: Vec<EtcdCluster>,
    pub pg: Vec<PgCluster>,
    pub infra: Infra,
}

/// Pigsty's `pg_vip_interface` default (roles/pgsql/defaults: "eth0 by default"; its
/// sample inventories set eth1 explicitly).
const DEFAULT_VIP_INTERFACE: &str = "eth0";
/// Pigsty's `pg_vip_address` default (only used when a VIP is enabled without an address).
const DEFAULT_VIP_ADDRESS: &str = "127.0.0.1/24";

/// Resolves inventory `text`; `file` names it in messages. `pigsty_version` is the
/// `--pigsty-version` flag, over the inventory's own version.
pub(super) fn resolve(file: &str, text: &str, pigsty_version: Option<&str>) -> Resolved {
    let mut cx = Cx {
        file: file.to_string(),
        errors: Vec::new(),
        warnings: Vec::new(),
        loc: HashMap::new(),
        pigsty_flag: pigsty_version.map(str::to_string),
    };
    let out = run(&mut cx, text);
    let (etcd, pg, infra) = out.unwrap_or_else(|| {
        (
            Vec::new(),
            Vec::new(),
            Infra {
                hosts: Vec::new(),
                pigsty: Choice::newest("", String::new()),
                admin_ip: None,
            },
        )
    });
    let mut errors = cx.errors;
    let mut warnings = cx.warnings;
    // File order; problems about the whole file (no line) first.
    errors.sort_by_key(|d| d.line.unwrap_or(0));
    warnings.sort_by_key(|d| d.line.unwrap_or(0));
    Resolved {
        errors,
        warnings,
        etcd,
        pg,
        infra,
    }
}

/// Collects problems and knows where each YAML key is.
struct Cx {
    file: String,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Key path (`["all", "children", "etcd", "hosts", "10.10.10.10"]`) → (line, column).
    loc: HashMap<Vec<String>, (usize, usize)>,
    /// `--pigsty-version`.
    pigsty_flag: Option<String>,
}

impl Cx {
    /// The line of the key at `path`, or of its nearest located ancestor (a key that came
    /// from a `<<` merge has no line of its own).
    fn line(&self, path: &[String]) -> Option<usize> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.loc.get(&path[..n]).map(|&(l, _)| l))
    }

    fn diag(&self, line: Option<usize>, hosts: &[&str], problem: Problem) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line,
            column: None,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            problem,
        }
    }

    fn error(&mut self, line: Option<usize>, hosts: &[&str], problem: Problem) {
        let d = self.diag(line, hosts, problem);
        self.errors.push(d);
    }

    fn warn(&mut self, line: Option<usize>, hosts: &[&str], problem: Problem) {
        let d = self.diag(line, hosts, problem);
        if !self.warnings.contains(&d) {
            self.warnings.push(d);
        }
    }

    /// An error about a variable's value. The same value at the same line is one problem,
    /// whichever hosts inherit it: their names are gathered into one diagnostic.
    fn var_error(&mut self, line: Option<usize>, host: Option<&str>, problem: Problem) {
        if let Some(d) = self
            .errors
            .iter_mut()
            .find(|d| d.line == line && d.problem == problem)
        {
            if let Some(h) = host {
                if !d.hosts.iter().any(|x| x == h) {
                    d.hosts.push(h.to_string());
                }
            }
            return;
        }
        let hosts: Vec<&str> = host.into_iter().collect();
        self.error(line, &hosts, problem);
    }
}

/// Where a resolved variable came from.
#[derive(Debug, Clone)]
enum Origin {
    Group { name: String, line: Option<usize> },
    Host { line: Option<usize> },
}

impl Origin {
    fn line(&self) -> Option<usize> {
        match self {
            Origin::Group { line, .. } | Origin::Host { line } => *line,
        }
    }
}

#[derive(Debug, Clone)]
struct Var {
    value: Value,
    line: Option<usize>,
}

#[derive(Debug, Default)]
struct Group {
    name: String,
    /// Order of first appearance.
    order: usize,
    line: Option<usize>,
    vars: BTreeMap<String, Var>,
    /// Hosts listed directly, in file order.
    hosts: Vec<String>,
    children: Vec<String>,
    parents: BTreeSet<String>,
}

#[derive(Debug)]
struct Host {
    key: String,
    order: usize,
    ip: Option<IpAddr>,
    vars: BTreeMap<String, Var>,
    /// Every place the host is listed: (group, line of its key).
    listings: Vec<(String, Option<usize>)>,
}

impl Host {
    fn first_line(&self) -> Option<usize> {
        self.listings.first().and_then(|(_, l)| *l)
    }
}

/// A host's (or a group's) variables after precedence.
struct Vars(BTreeMap<String, (Value, Origin)>);

impl Vars {
    fn get(&self, name: &str) -> Option<&(Value, Origin)> {
        self.0.get(name)
    }
}

#[derive(Default)]
struct Tree {
    groups: HashMap<String, Group>,
    hosts: HashMap<String, Host>,
    depth: HashMap<String, usize>,
}

fn run(cx: &mut Cx, text: &str) -> Option<(Vec<EtcdCluster>, Vec<PgCluster>, Infra)> {
    // Before libyaml, whose time grows fast with size and flow depth.
    if let Err(e) = yaml::check_limits(text) {
        let line = match &e {
            yaml::LimitError::TooDeep { line, .. } => Some(*line),
            yaml::LimitError::TooLarge { .. } => None,
        };
        cx.error(
            line,
            &[],
            Problem::OverLimit {
                detail: e.to_string(),
            },
        );
        return None;
    }
    let mut doc: Value = match yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let message = e.message.clone();
            cx.errors.push(Diagnostic {
                file: cx.file.clone(),
                line: e.line,
                column: e.column,
                hosts: Vec::new(),
                problem: Problem::Syntax { message },
            });
            return None;
        }
    };
    // PyYAML (Ansible) applies `<<` merge keys; so do we.
    if let Err(e) = doc.apply_merge() {
        cx.error(
            None,
            &[],
            Problem::Syntax {
                message: format!("invalid `<<` merge: {e}"),
            },
        );
        return None;
    }
    // Positions only; libyaml above is the authority on values. If the span parser disagrees
    // about the text, messages merely lose their line numbers.
    if let Ok(Some(root)) = yaml::parse_spanned(text) {
        index_keys(&root, &mut Vec::new(), &mut cx.loc);
    }
    let Some(top) = doc.as_mapping() else {
        if doc.is_null() {
            cx.error(None, &[], Problem::Empty);
        } else {
            cx.error(
                None,
                &[],
                Problem::WrongType {
                    path: "(top level)".into(),
                    found: kind(&doc),
                    expected: "a mapping of groups (`all:`)",
                },
            );
        }
        return None;
    };
    let mut tree = Tree::default();
    tree.groups.insert(
        "all".into(),
        Group {
            name: "all".into(),
            ..Group::default()
        },
    );
    for (k, v) in top {
        let Some(name) = key_text(k) else {
            cx.error(
                None,
                &[],
                Problem::WrongType {
                    path: "(top level)".into(),
                    found: "a key that is not a name",
                    expected: "group names",
                },
            );
            continue;
        };
        walk_group(cx, &mut tree, &name, v, vec![name.clone()], None);
    }
    compute_depths(cx, &mut tree);
    let etcd = build_etcd(cx, &tree);
    let pg = build_pg(cx, &tree, &etcd);
    let infra = build_infra(cx, &tree);
    Some((etcd, pg, infra))
}

fn index_keys(node: &Node, path: &mut Vec<String>, out: &mut HashMap<Vec<String>, (usize, usize)>) {
    if let NodeKind::Map { entries, .. } = &node.kind {
        for (k, v) in entries {
            if let Some(key) = k.scalar() {
                path.push(key.to_string());
                out.entry(path.clone())
                    .or_insert((k.start.line, k.start.column));
                index_keys(v, path, out);
                path.pop();
            }
        }
    }
}

/// A mapping key as Ansible sees it (a string; numbers and booleans by their text).
fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A value as an operator would recognise it in a message.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => yaml::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_else(|_| kind(other).into()),
    }
}

fn child(path: &[String], more: &[&str]) -> Vec<String> {
    let mut p = path.to_vec();
    p.extend(more.iter().map(|s| s.to_string()));
    p
}

fn walk_group(
    cx: &mut Cx,
    tree: &mut Tree,
    name: &str,
    value: &Value,
    path: Vec<String>,
    parent: Option<&str>,
) {
    let n = tree.groups.len();
    let line = cx.line(&path);
    let g = tree
        .groups
        .entry(name.to_string())
        .or_insert_with(|| Group {
            name: name.to_string(),
            order: n,
            line,
            ..Group::default()
        });
    if g.line.is_none() {
        g.line = line;
    }
    // Every group hangs under `all`, as in Ansible.
    let parent = parent.unwrap_or("all");
    if name != "all" {
        g.parents.insert(parent.to_string());
        if let Some(p) = tree.groups.get_mut(parent) {
            if !p.children.iter().any(|c| c == name) {
                p.children.push(name.to_string());
            }
        }
    }
    let map = match value {
        Value::Null => return,
        Value::Mapping(m) => m,
        other => {
            cx.error(
                line,
                &[],
                Problem::WrongType {
                    path: path.join("."),
                    found: kind(other),
                    expected: "a group: a mapping with hosts, vars and children",
                },
            );
            return;
        }
    };
    for (k, v) in map {
        match key_text(k).as_deref() {
            Some("hosts") => walk_hosts(cx, tree, name, v, child(&path, &["hosts"])),
            Some("vars") => {
                let vpath = child(&path, &["vars"]);
                let vars = read_vars(cx, v, &vpath);
                if let Some(g) = tree.groups.get_mut(name) {
                    g.vars.extend(vars);
                }
            }
            Some("children") => match v {
                Value::Null => {}
                Value::Mapping(children) => {
                    for (ck, cv) in children {
                        let Some(cname) = key_text(ck) else { continue };
                        let cpath = child(&path, &["children", &cname]);
                        walk_group(cx, tree, &cname, cv, cpath, Some(name));
                    }
                }
                other => {
                    let cpath = child(&path, &["children"]);
                    cx.error(
                        cx.line(&cpath),
                        &[],
                        Problem::WrongType {
                            path: cpath.join("."),
                            found: kind(other),
                            expected: "a mapping of group names",
                        },
                    );
                }
            },
            other => {
                let key = other.map_or_else(|| show(k), str::to_string);
                cx.warn(
                    cx.line(&child(&path, &[&key])),
                    &[],
                    Problem::UnknownGroupKey {
                        group: name.to_string(),
                        key,
                    },
                );
            }
        }
    }
}

fn read_vars(cx: &mut Cx, v: &Value, path: &[String]) -> Vec<(String, Var)> {
    match v {
        Value::Null => Vec::new(),
        Value::Mapping(m) => m
            .iter()
            .filter_map(|(k, v)| {
                let k = key_text(k)?;
                let line = cx.line(&child(path, &[&k]));
                Some((
                    k,
                    Var {
                        value: v.clone(),
                        line,
                    },
                ))
            })
            .collect(),
        other => {
            cx.error(
                cx.line(path),
                &[],
                Problem::WrongType {
                    path: path.join("."),
                    found: kind(other),
                    expected: "a mapping of variables",
                },
            );
            Vec::new()
        }
    }
}

fn walk_hosts(cx: &mut Cx, tree: &mut Tree, group: &str, v: &Value, path: Vec<String>) {
    let map = match v {
        Value::Null => return,
        Value::Mapping(m) => m,
        other => {
            cx.error(
                cx.line(&path),
                &[],
                Problem::WrongType {
                    path: path.join("."),
                    found: kind(other),
                    expected: "a mapping of `<ip>: { host vars }`",
                },
            );
            return;
        }
    };
    for (k, hv) in map {
        let Some(key) = key_text(k) else {
            cx.error(
                cx.line(&path),
                &[],
                Problem::WrongType {
                    path: path.join("."),
                    found: "a host key that is not a scalar",
                    expected: "IP address keys",
                },
            );
            continue;
        };
        let hpath = child(&path, &[&key]);
        let line = cx.line(&hpath);
        let ip = key.parse::<IpAddr>().ok();
        if ip.is_none() {
            cx.error(
                line,
                &[&key],
                Problem::HostNotIp {
                    key: key.clone(),
                    group: group.to_string(),
                },
            );
        }
        let vars = match hv {
            Value::Mapping(_) | Value::Null => read_vars(cx, hv, &hpath),
            other => {
                cx.error(
                    line,
                    &[&key],
                    Problem::WrongType {
                        path: hpath.join("."),
                        found: kind(other),
                        expected: "a mapping of host vars (or nothing)",
                    },
                );
                Vec::new()
            }
        };
        let n = tree.hosts.len();
        let host = tree.hosts.entry(key.clone()).or_insert_with(|| Host {
            key: key.clone(),
            order: n,
            ip,
            vars: BTreeMap::new(),
            listings: Vec::new(),
        });
        // A later listing's host vars override an earlier one's, as Ansible parses them.
        host.vars.extend(vars);
        host.listings.push((group.to_string(), line));
        if let Some(g) = tree.groups.get_mut(group) {
            if !g.hosts.contains(&key) {
                g.hosts.push(key);
            }
        }
    }
}

/// Ansible's group depth: `all` is 0, a group is one deeper than its deepest parent.
fn compute_depths(cx: &mut Cx, tree: &mut Tree) {
    fn depth(
        tree: &Tree,
        name: &str,
        memo: &mut HashMap<String, usize>,
        visiting: &mut HashSet<String>,
        cycles: &mut BTreeSet<String>,
    ) -> usize {
        if name == "all" {
            return 0;
        }
        if let Some(&d) = memo.get(name) {
            return d;
        }
        if !visiting.insert(name.to_string()) {
            cycles.insert(name.to_string());
            return 1;
        }
        let parents: Vec<String> = tree
            .groups
            .get(name)
            .map(|g| g.parents.iter().cloned().collect())
            .unwrap_or_default();
        let d = parents
            .iter()
            .map(|p| depth(tree, p, memo, visiting, cycles) + 1)
            .max()
            .unwrap_or(1);
        visiting.remove(name);
        memo.insert(name.to_string(), d);
        d
    }
    let mut memo = HashMap::new();
    let mut cycles = BTreeSet::new();
    let mut names: Vec<String> = tree.groups.keys().cloned().collect();
    names.sort();
    for n in &names {
        depth(tree, n, &mut memo, &mut HashSet::new(), &mut cycles);
    }
    for c in cycles {
        let line = tree.groups.get(&c).and_then(|g| g.line);
        cx.error(line, &[], Problem::GroupCycle { group: c });
    }
    memo.insert("all".into(), 0);
    tree.depth = memo;
}

impl Tree {
    /// `name` and every group above it, `all` included.
    fn ancestors(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(g) = todo.pop() {
            if seen.insert(g.clone()) {
                if let Some(def) = self.groups.get(&g) {
                    todo.extend(def.parents.iter().cloned());
                }
            }
        }
        seen.insert("all".into());
        seen
    }

    /// `name` and every group below it.
    fn descendants(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(g) = todo.pop() {
            if seen.insert(g.clone()) {
                if let Some(def) = self.groups.get(&g) {
                    todo.extend(def.children.iter().cloned());
                }
            }
        }
        seen
    }

    /// Every host of group `name` (listed in it or in a group below it), in file order;
    /// Ansible's `groups[name]`. For `all`, every host.
    fn hosts_of(&self, name: &str) -> Vec<&Host> {
        let mut out: Vec<&Host> = if name == "all" {
            self.hosts.values().collect()
        } else {
            let below = self.descendants(name);
            self.hosts
                .values()
                .filter(|h| h.listings.iter().any(|(g, _)| below.contains(g)))
                .collect()
        };
        out.sort_by_key(|h| h.order);
        out
    }

    /// Every group the host belongs to.
    fn groups_of(&self, host: &Host) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (g, _) in &host.listings {
            out.extend(self.ancestors(g));
        }
        out.insert("all".into());
        out
    }

    /// Variables from `groups` in Ansible's order: depth, then `ansible_group_priority`,
    /// then name; later wins.
    fn group_vars(&self, groups: &BTreeSet<String>) -> Vars {
        let mut ordered: Vec<&Group> = groups.iter().filter_map(|g| self.groups.get(g)).collect();
        ordered.sort_by_key(|g| {
            let priority = g
                .vars
                .get("ansible_group_priority")
                .and_then(|v| as_int(&v.value))
                .unwrap_or(1);
            (
                self.depth.get(&g.name).copied().unwrap_or(1),
                priority,
                g.name.clone(),
            )
        });
        let mut out = BTreeMap::new();
        for g in ordered {
            for (k, v) in &g.vars {
                out.insert(
                    k.clone(),
                    (
                        v.value.clone(),
                        Origin::Group {
                            name: g.name.clone(),
                            line: v.line,
                        },
                    ),
                );
            }
        }
        Vars(out)
    }

    /// A host's variables: its groups' vars, then its own.
    fn host_vars(&self, host: &Host) -> Vars {
        let mut vars = self.group_vars(&self.groups_of(host));
        for (k, v) in &host.vars {
            vars.0
                .insert(k.clone(), (v.value.clone(), Origin::Host { line: v.line }));
        }
        vars
    }
}

/// An integer, or a string of digits (Ansible's `|int` accepts both).
fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A boolean as Ansible's `|bool` reads it: YAML booleans and yes/no/on/off/true/false/1/0.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" => Some(true),
            "false" | "no" | "off" | "0" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A scalar as text (numbers by their digits).
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A Unix user name as `useradd` takes it: `[a-z_][a-z0-9_-]*`, at most 32 characters.
fn user_ok(s: &str) -> bool {
    s.len() <= 32
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

/// Names end up in member names, URLs' neighbours and etcd keys: keep them boring.
fn name_ok(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn path_ok(s: &str) -> bool {
    s.starts_with('/') && !s.chars().any(char::is_control)
}

/// Directories an etcd data dir may never be: a wipe empties the data dir's contents.
const SYSTEM_DIRS: [&str; 11] = [
    "/", "/etc", "/usr", "/var", "/var/lib", "/home", "/root", "/boot", "/tmp", "/data", "/pg",
];

/// `path` with `.`, `..`, repeated and trailing slashes resolved lexically (`/data/etcd/..//`
/// is `/data`); symbolic links are the agent's business.
pub(super) fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The system directory `path` names, if it names one.
fn system_dir(path: &str) -> Option<&'static str> {
    let norm = lexical(path);
    SYSTEM_DIRS.into_iter().find(|d| *d == norm)
}

/// Reads typed variables for one host (or one group when `host` is `None`), reporting bad
/// values and falling back to the default so that checking goes on.
struct Reader<'a> {
    cx: &'a mut Cx,
    vars: &'a Vars,
    host: Option<&'a str>,
    /// Where to point when a problem has no variable of its own (the host's line).
    fallback: Option<usize>,
}

impl Reader<'_> {
    fn get(&self, var: &str) -> Option<(&Value, Option<usize>)> {
        self.vars.get(var).map(|(v, o)| (v, o.line()))
    }

    fn bad(&mut self, line: Option<usize>, problem: Problem) {
        let line = line.or(self.fallback);
        self.cx.var_error(line, self.host, problem);
    }

    fn bool(&mut self, var: &'static str, default: bool) -> bool {
        let Some((v, line)) = self.get(var) else {
            return default;
        };
        match as_bool(v) {
            Some(b) => b,
            None => {
                let value = show(v);
                self.bad(line, Problem::BadBool { var, value });
                default
            }
        }
    }

    fn port(&mut self, var: &'static str, default: u16) -> u16 {
        let Some((v, line)) = self.get(var) else {
            return default;
        };
        match as_int(v)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p != 0)
        {
            Some(p) => p,
            None => {
                let value = show(v);
                self.bad(line, Problem::BadPort { var, value });
                default
            }
        }
    }

    fn millis(&mut self, var: &'static str, default: u32) -> u32 {
        let Some((v, line)) = self.get(var) else {
            return default;
        };
        match as_int(v)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&p| p != 0)
        {
            Some(p) => p,
            None => {
                let value = show(v);
                self.bad(line, Problem::BadMillis { var, value });
                default
            }
        }
    }

    fn path(&mut self, var: &'static str, default: &str) -> String {
        let Some((v, line)) = self.get(var) else {
            return default.into();
        };
        match as_text(v).filter(|s| path_ok(s)) {
            Some(p) => p,
            None => {
                let value = show(v);
                self.bad(line, Problem::BadPath { var, value });
                default.into()
            }
        }
    }

    fn text(&mut self, var: &'static str, default: &str) -> String {
        self.get(var)
            .and_then(|(v, _)| as_text(v))
            .unwrap_or_else(|| default.into())
    }

    fn name(&mut self, var: &'static str, default: &str) -> Option<String> {
        let Some((v, line)) = self.get(var) else {
            return Some(default.into());
        };
        match as_text(v).filter(|s| name_ok(s)) {
            Some(s) => Some(s),
            None => {
                let value = show(v);
                self.bad(line, Problem::BadName { var, value });
                None
            }
        }
    }

    /// A password: any one line of 1 to 256 bytes (it is written to a file and sent to
    /// etcd, never to a shell). A bad one is reported and `default` used.
    fn password(&mut self, var: &'static str, default: &str) -> Secret {
        let Some((v, line)) = self.get(var) else {
            return Secret::new(default);
        };
        match as_text(v) {
            Some(s) if s.is_empty() => Secret::new(default),
            Some(s) if s.len() <= MAX_PASSWORD && !s.chars().any(char::is_control) => {
                Secret::new(s)
            }
            _ => {
                self.bad(line, Problem::BadPassword { var });
                Secret::new(default)
            }
        }
    }

    /// The generation its files render with (`quorum_pigsty_version`, Pigsty's `version`,
    /// the `--pigsty-version` flag); a bad override is reported.
    fn pigsty(&mut self, flag: Option<&str>) -> Choice {
        let text = |r: &Self, var: &str| r.get(var).and_then(|(v, l)| as_text(v).map(|t| (t, l)));
        let over = text(self, "quorum_pigsty_version");
        let version = text(self, "version");
        match Choice::resolve(
            flag,
            over.as_ref().map(|(t, _)| t.as_str()),
            version.as_ref().map(|(t, _)| t.as_str()),
        ) {
            Ok(c) => c,
            Err(detail) => {
                let line = if flag.is_some() {
                    None
                } else {
                    over.and_then(|(_, l)| l)
                };
                let why = format!("{detail} (rendering the newest generation meanwhile)");
                self.bad(line, Problem::BadPigstyVersion { detail });
                Choice::newest("", why)
            }
        }
    }

    /// `node_admin_username` when `node_admin_enabled` and it is neither empty nor `root`
    /// (Pigsty v4's etcdctl profile guard).
    fn admin_user(&mut self) -> Option<String> {
        if !self.bool("node_admin_enabled", true) {
            return None;
        }
        let Some((v, line)) = self.get("node_admin_username") else {
            return Some("dba".into());
        };
        match as_text(v) {
            Some(u) if u.is_empty() || u == "root" => None,
            Some(u) if user_ok(&u) => Some(u),
            _ => {
                let value = show(v);
                self.bad(
                    line,
                    Problem::BadName {
                        var: "node_admin_username",
                        value,
                    },
                );
                None
            }
        }
    }

    /// `etcd_seq` / `pg_seq`: `Ok(None)` when unset, `Err` when bad (already reported).
    fn seq(&mut self, var: &'static str) -> Result<Option<(u32, Option<usize>)>, ()> {
        let Some((v, line)) = self.get(var) else {
            return Ok(None);
        };
        match as_int(v).and_then(|n| u32::try_from(n).ok()) {
            Some(s) => Ok(Some((s, line))),
            None => {
                let value = show(v);
                self.bad(line, Problem::BadSeq { var, value });
                Err(())
            }
        }
    }

    fn etcd_params(&mut self) -> EtcdParams {
        let d = EtcdParams::default();
        let port = self.port("etcd_port", d.port);
        let peer_port = self.port("etcd_peer_port", d.peer_port);
        if port == peer_port {
            let line = self
                .get("etcd_peer_port")
                .and_then(|(_, l)| l)
                .or_else(|| self.get("etcd_port").and_then(|(_, l)| l));
            self.bad(line, Problem::SamePorts { port });
        }
        let init = match self.get("etcd_init") {
            None => d.init,
            Some((v, line)) => match as_text(v).and_then(|s| s.parse::<EtcdInit>().ok()) {
                Some(i) => i,
                None => {
                    let value = show(v);
                    self.bad(line, Problem::BadEtcdInit { value });
                    d.init
                }
            },
        };
        let q = QuorumExt::default();
        let data_dir = self.path("etcd_data", &d.data_dir);
        if let Some(dir) = system_dir(&data_dir) {
            let line = self.get("etcd_data").and_then(|(_, l)| l);
            self.bad(
                line,
                Problem::SystemDataDir {
                    var: "etcd_data",
                    value: data_dir.clone(),
                    dir,
                },
            );
        }
        EtcdParams {
            safeguard: self.bool("etcd_safeguard", d.safeguard),
            clean: self.bool("etcd_clean", d.clean),
            data_dir,
            port,
            peer_port,
            init,
            learner: self.bool("etcd_learner", d.learner),
            election_timeout: self.millis("etcd_election_timeout", d.election_timeout),
            heartbeat_interval: self.millis("etcd_heartbeat_interval", d.heartbeat_interval),
            admin_user: self.admin_user(),
            quorum: QuorumExt {
                conf_dir: self.path("quorum_etcd_conf_dir", &q.conf_dir),
                etcdctl_cacert: self.path("quorum_etcdctl_cacert", &q.etcdctl_cacert),
                listen_localhost: self.bool("quorum_etcd_listen_localhost", q.listen_localhost),
                client_cert_auth: self.bool("quorum_etcd_client_cert_auth", q.client_cert_auth),
                grpc_gateway: self.bool("quorum_etcd_grpc_gateway", q.grpc_gateway),
                enable_v2: self.bool("quorum_etcd_enable_v2", q.enable_v2),
            },
        }
    }
}

fn sorted_groups(tree: &Tree) -> Vec<&Group> {
    let mut gs: Vec<&Group> = tree.groups.values().collect();
    gs.sort_by_key(|g| g.order);
    gs
}

/// Pigsty's `infra` group (the hosts that run its metrics stack, each with `infra_seq`), the
/// generation of its files, and `admin_ip`.
fn build_infra(cx: &mut Cx, tree: &Tree) -> Infra {
    let flag = cx.pigsty_flag.clone();
    // The infra group's variables over all's (Pigsty sets `version` and `admin_ip` in
    // all.vars; an infra group may say more).
    let all = tree.group_vars(&tree.ancestors("infra"));
    let reader = Reader {
        cx: &mut *cx,
        vars: &all,
        host: None,
        fallback: None,
    };
    // A bad version is reported with the etcd clusters (which read the same variables); here
    // it only falls back to the newest generation, as they do.
    let text = |r: &Reader, var: &str| r.get(var).and_then(|(v, _)| as_text(v));
    let pigsty = Choice::resolve(
        flag.as_deref(),
        text(&reader, "quorum_pigsty_version").as_deref(),
        text(&reader, "version").as_deref(),
    )
    .unwrap_or_else(|detail| Choice::newest("", detail));
    let admin_ip = reader
        .get("admin_ip")
        .and_then(|(v, _)| as_text(v))
        .and_then(|t| t.parse().ok());
    let mut hosts = Vec::new();
    if tree.groups.contains_key("infra") {
        for h in tree.hosts_of("infra") {
            let Some(ip) = h.ip else { continue };
            let vars = tree.host_vars(h);
            let seq = vars
                .get("infra_seq")
                .and_then(|(v, _)| as_int(v))
                .and_then(|n| u32::try_from(n).ok());
            hosts.push(InfraHost { ip, seq });
        }
    }
    hosts.sort_by_key(|h| h.ip);
    Infra {
        hosts,
        pigsty,
        admin_ip,
    }
}

fn build_etcd(cx: &mut Cx, tree: &Tree) -> Vec<EtcdCluster> {
    let mut clusters: Vec<EtcdCluster> = Vec::new();
    // Host key → cluster it was first claimed by (also for clusters dropped as invalid, so
    // their hosts are not reported again as cluster-less).
    let mut claimed: HashMap<String, String> = HashMap::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    for g in sorted_groups(tree) {
        if g.name == "all" || !(g.vars.contains_key("etcd_cluster") || g.name == "etcd") {
            continue;
        }
        let gvars = tree.group_vars(&tree.ancestors(&g.name));
        let hosts = tree.hosts_of(&g.name);
        let mut group_reader = Reader {
            cx: &mut *cx,
            vars: &gvars,
            host: None,
            fallback: g.line,
        };
        let Some(cname) = group_reader.name("etcd_cluster", "etcd") else {
            for h in &hosts {
                claimed.entry(h.key.clone()).or_default();
            }
            continue;
        };
        if hosts.is_empty() {
            cx.warn(
                g.line,
                &[],
                Problem::EmptyEtcdGroup {
                    group: g.name.clone(),
                },
            );
            continue;
        }
        let host_vars: Vec<Vars> = hosts.iter().map(|h| tree.host_vars(h)).collect();
        if g.name != "etcd" && !host_vars.iter().any(|v| v.get("etcd_seq").is_some()) {
            cx.warn(
                g.line,
                &[],
                Problem::EtcdGroupWithoutSeq {
                    group: g.name.clone(),
                    cluster: cname,
                },
            );
            continue;
        }
        if let Some(first_group) = defined.get(&cname) {
            cx.error(
                g.line,
                &[],
                Problem::DuplicateEtcdCluster {
                    cluster: cname.clone(),
                    first_group: first_group.clone(),
                    group: g.name.clone(),
                },
            );
            for h in &hosts {
                claimed
                    .entry(h.key.clone())
                    .or_insert_with(|| cname.clone());
            }
            continue;
        }
        defined.insert(cname.clone(), g.name.clone());
        if cname != g.name {
            cx.warn(
                g.line,
                &[],
                Problem::ClusterNotGroupName {
                    cluster: cname.clone(),
                    group: g.name.clone(),
                },
            );
        }
        let flag = cx.pigsty_flag.clone();
        let mut group_reader = Reader {
            cx: &mut *cx,
            vars: &gvars,
            host: None,
            fallback: g.line,
        };
        let params = group_reader.etcd_params();
        let pigsty = group_reader.pigsty(flag.as_deref());
        let root_password = group_reader.password("etcd_root_password", DEFAULT_ROOT_PASSWORD);
        let below = tree.descendants(&g.name);
        let mut members: Vec<EtcdMember> = Vec::new();
        let mut seqs: HashMap<u32, (String, Option<usize>)> = HashMap::new();
        for (position, (h, vars)) in hosts.iter().zip(&host_vars).enumerate() {
            // Point at the host's listing inside this cluster's group.
            let line = h
                .listings
                .iter()
                .find(|(lg, _)| below.contains(lg))
                .and_then(|(_, l)| *l)
                .or_else(|| h.first_line());
            if let Some(first) = claimed.get(&h.key) {
                if !first.is_empty() {
                    cx.error(
                        line,
                        &[&h.key],
                        Problem::TwoEtcdClusters {
                            first: first.clone(),
                            second: cname.clone(),
                        },
                    );
                }
                continue;
            }
            claimed.insert(h.key.clone(), cname.clone());
            let Some(ip) = h.ip else { continue };
            // A group-level contradiction is a host in two etcd groups, reported above; only a
            // host's own etcd_cluster can contradict the group it is listed in.
            if let Some((v, origin @ Origin::Host { .. })) = vars.get("etcd_cluster") {
                let value = show(v);
                if value != cname {
                    cx.error(
                        origin.line().or(line),
                        &[&h.key],
                        Problem::HostClusterMismatch {
                            value,
                            cluster: cname.clone(),
                        },
                    );
                }
            }
            let mut r = Reader {
                cx: &mut *cx,
                vars,
                host: Some(&h.key),
                fallback: line,
            };
            let seq = r.seq("etcd_seq");
            let p = r.etcd_params();
            let (seq, seq_line) = match seq {
                Ok(Some(s)) => s,
                Ok(None) => {
                    cx.error(
                        line,
                        &[&h.key],
                        Problem::MissingEtcdSeq {
                            cluster: cname.clone(),
                        },
                    );
                    continue;
                }
                Err(()) => continue,
            };
            if let Some((other, other_line)) = seqs.get(&seq) {
                cx.error(
                    seq_line.or(line),
                    &[&h.key],
                    Problem::DuplicateEtcdSeq {
                        seq,
                        cluster: cname.clone(),
                        other: other.clone(),
                        other_line: other_line.unwrap_or(0),
                    },
                );
                continue;
            }
            seqs.insert(seq, (h.key.clone(), seq_line.or(line)));
            members.push(EtcdMember {
                ip,
                seq,
                name: format!("{cname}-{seq}"),
                infra: tree.groups_of(h).contains("infra"),
                line,
                position,
                params: p,
            });
        }
        sort_members(&mut members);
        if members.len().is_multiple_of(2) && !members.is_empty() {
            cx.warn(
                g.line,
                &[],
                Problem::EvenCluster {
                    cluster: cname.clone(),
                    size: members.len(),
                    smaller: members.len() - 1,
                },
            );
        }
        for (var, differ) in [
            (
                "etcd_port",
                members
                    .windows(2)
                    .any(|w| w[0].params.port != w[1].params.port),
            ),
            (
                "etcd_peer_port",
                members
                    .windows(2)
                    .any(|w| w[0].params.peer_port != w[1].params.peer_port),
            ),
        ] {
            if differ {
                cx.warn(
                    g.line,
                    &[],
                    Problem::PortsDiffer {
                        cluster: cname.clone(),
                        var,
                    },
                );
            }
        }
        clusters.push(EtcdCluster {
            name: cname,
            group: g.name.clone(),
            members,
            params,
            pigsty,
            root_password,
        });
    }
    // Hosts that carry etcd_seq (their own, or a group's other than `all`) but belong to no
    // etcd group: the group that lists them forgot its etcd_cluster.
    let mut hosts: Vec<&Host> = tree.hosts.values().collect();
    hosts.sort_by_key(|h| h.order);
    for h in hosts {
        if claimed.contains_key(&h.key) {
            continue;
        }
        let vars = tree.host_vars(h);
        let group = match vars.get("etcd_seq") {
            Some((_, Origin::Host { .. })) => h.listings.first().map(|(g, _)| g.clone()),
            Some((_, Origin::Group { name, .. })) if name != "all" => Some(name.clone()),
            _ => None,
        };
        if let Some(group) = group {
            cx.error(
                h.first_line(),
                &[&h.key],
                Problem::EtcdClusterMissing { group },
            );
        }
    }
    clusters
}

fn parse_vip(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = s.trim().split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn build_pg(cx: &mut Cx, tree: &Tree, etcd: &[EtcdCluster]) -> Vec<PgCluster> {
    let mut by_name: BTreeMap<String, Vec<PgMember>> = BTreeMap::new();
    // Cluster → (etcd user, its password), from the first instance listed.
    let mut logins: HashMap<String, (String, Secret)> = HashMap::new();
    let mut seqs: HashMap<(String, u32), (String, Option<usize>)> = HashMap::new();
    for h in tree.hosts_of("all") {
        let vars = tree.host_vars(h);
        if vars.get("pg_cluster").is_none() {
            continue;
        }
        let line = h.first_line();
        let Some(ip) = h.ip else { continue };
        let mut r = Reader {
            cx: &mut *cx,
            vars: &vars,
            host: Some(&h.key),
            fallback: line,
        };
        let Some(cluster) = r.name("pg_cluster", "") else {
            continue;
        };
        let seq = r.seq("pg_seq");
        let role = r.text("pg_role", "");
        let vip_enabled = r.bool("pg_vip_enabled", false);
        let interface = r.text("pg_vip_interface", DEFAULT_VIP_INTERFACE);
        let patroni_port = r.port("patroni_port", 8008);
        let patroni_username = r.text("patroni_username", "postgres");
        let patroni_password = r.text("patroni_password", "Patroni.API");
        let patroni_ssl = r.bool("patroni_ssl_enabled", false);
        let namespace = r.text("pg_namespace", "/pg");
        let citus = r.text("pg_mode", "pgsql") == "citus";
        let etcd_user = if citus {
            r.name("pg_shard", &cluster)
                .unwrap_or_else(|| cluster.clone())
        } else {
            cluster.clone()
        };
        let etcd_password = r.password("pg_etcd_password", &etcd_user);
        logins
            .entry(cluster.clone())
            .or_insert((etcd_user, etcd_password));
        let vip = if vip_enabled {
            let (text, vline) = match r.get("pg_vip_address") {
                Some((v, l)) => (show(v), l),
                None => (DEFAULT_VIP_ADDRESS.to_string(), None),
            };
            match parse_vip(&text) {
                Some((address, prefix)) => Some(Vip {
                    address,
                    prefix,
                    interface,
                }),
                None => {
                    r.bad(vline, Problem::BadVipAddress { value: text });
                    None
                }
            }
        } else {
            None
        };
        if !matches!(role.as_str(), "primary" | "replica" | "offline") {
            let value = if role.is_empty() {
                "(missing)".into()
            } else {
                role.clone()
            };
            let rline = vars.get("pg_role").and_then(|(_, o)| o.line()).or(line);
            cx.warn(rline, &[&h.key], Problem::PgRole { value });
        }
        let (seq, seq_line) = match seq {
            Ok(Some(s)) => s,
            Ok(None) => {
                cx.error(line, &[&h.key], Problem::MissingPgSeq { cluster });
                continue;
            }
            Err(()) => continue,
        };
        if let Some((other, other_line)) = seqs.get(&(cluster.clone(), seq)) {
            cx.error(
                seq_line.or(line),
                &[&h.key],
                Problem::DuplicatePgSeq {
                    seq,
                    cluster: cluster.clone(),
                    other: other.clone(),
                    other_line: other_line.unwrap_or(0),
                },
            );
            continue;
        }
        seqs.insert((cluster.clone(), seq), (h.key.clone(), seq_line.or(line)));
        by_name.entry(cluster.clone()).or_default().push(PgMember {
            ip,
            seq,
            name: format!("{cluster}-{seq}"),
            role,
            vip,
            patroni_port,
            patroni_username,
            patroni_password,
            patroni_ssl,
            namespace,
            line,
        });
    }
    let (dcs, detail) = match (etcd.iter().find(|c| c.group == "etcd"), etcd) {
        (Some(c), _) => (Some(c.name.clone()), None),
        (None, [only]) => (
            Some(only.name.clone()),
            Some(format!(
                "no etcd cluster is defined by group `etcd`, which Pigsty's Patroni and vip-manager templates read; Quorum assumes they use the only etcd cluster, `{}`",
                only.name
            )),
        ),
        (None, []) => (
            None,
            Some("the inventory defines no etcd cluster, so Quorum cannot refresh its Patroni and vip-manager DCS endpoints".into()),
        ),
        (None, _) => (
            None,
            Some("no etcd cluster is defined by group `etcd`, which Pigsty's Patroni and vip-manager templates read, and there are several; Quorum will not refresh its DCS endpoints".into()),
        ),
    };
    by_name
        .into_iter()
        .map(|(name, mut members)| {
            members.sort_by_cached_key(|m| m.ip.to_string());
            if let Some(detail) = &detail {
                let line = members.first().and_then(|m| m.line);
                cx.warn(
                    line,
                    &[],
                    Problem::PgDcs {
                        cluster: name.clone(),
                        detail: detail.clone(),
                    },
                );
            }
            let (etcd_user, etcd_password) = logins
                .remove(&name)
                .unwrap_or_else(|| (name.clone(), Secret::new(name.clone())));
            let namespace = members
                .first()
                .map(|m| m.namespace.clone())
                .unwrap_or_else(|| "/pg".into());
            PgCluster {
                name,
                members,
                dcs: dcs.clone(),
                etcd_user,
                etcd_password,
                namespace,
            }
        })
        .collect()
}
