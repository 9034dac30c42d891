//! In-place patchers for the two configs Pigsty's pgsql playbooks render with many settings of
//! their own: Patroni's `patroni.yml` (the `etcd3:`/`etcd:` DCS `hosts`) and vip-manager's
//! config (`dcs-endpoints`, or the pre-1.0 `endpoints`/`endpoint`). Quorum does not render
//! those files whole; after an etcd membership change the agent replaces only the endpoint
//! list in the host's own file.
//!
//! Every other byte is kept: comments, key order, quoting, indentation, line endings. The list
//! keeps its form: a comma string stays a string with the same quotes, a block list stays a
//! block list at the same indentation, a flow list stays a flow list.
//!
//! A patcher either returns a whole, correct file or an error; never a partial result. Before
//! returning, it parses its own output and checks that it equals the input with only that list
//! replaced, so a bug here can never hand the agent a broken file to write.

use std::ops::Range;

use crate::yaml::{self, Node, NodeKind, ScalarStyle, Value, YamlError};

/// What went wrong patching or reading a config; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The file is not valid YAML (or holds several documents).
    #[error("{config} does not parse as YAML: {source}; fix the file by hand (or re-render it with Pigsty), then retry")]
    Yaml {
        /// Which config (`patroni.yml`, `vip-manager config`).
        config: &'static str,
        /// The parser's error, with line and column.
        #[source]
        source: YamlError,
    },
    /// The top level is not a mapping.
    #[error(
        "{config} is not a YAML mapping at the top level; it does not look like a {config} file"
    )]
    NotAMapping {
        /// Which config.
        config: &'static str,
    },
    /// The section or key that holds the endpoint list is absent.
    #[error("{config} has no {what}; {hint}")]
    Missing {
        /// Which config.
        config: &'static str,
        /// What is missing, e.g. "`etcd3:` (or legacy `etcd:`) section".
        what: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The file names its DCS in a way Quorum will not rewrite.
    #[error("{config}: `{key}`{} is {form}; {hint}", at_line(*.line))]
    Unsupported {
        /// Which config.
        config: &'static str,
        /// Dotted key path, e.g. `etcd3.hosts`.
        key: String,
        /// 1-based line of the key, when known.
        line: Option<usize>,
        /// What was found.
        form: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The new list is empty: a DCS with no endpoint is never what the operator wants.
    #[error("refusing to write an empty endpoint list into {config}; pass at least one endpoint")]
    EmptyList {
        /// Which config.
        config: &'static str,
    },
    /// A new entry cannot be written safely.
    #[error("endpoint {entry:?} for {config} {reason}; pass entries like `10.10.10.10:2379` or `https://10.10.10.10:2379`")]
    BadEntry {
        /// Which config.
        config: &'static str,
        /// The entry as given.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two keys that must agree do not (vip-manager exits when old and new names differ).
    #[error("{config} sets both `{first}` and `{second}` with different endpoint lists; vip-manager refuses to start like that: keep only `dcs-endpoints`")]
    Conflicting {
        /// Which config.
        config: &'static str,
        /// The first key.
        first: &'static str,
        /// The second key.
        second: &'static str,
    },
    /// The config names a DCS other than etcd (or several).
    #[error(
        "{config} {problem}; Quorum manages only etcd endpoints, so it leaves this file alone"
    )]
    NotEtcd {
        /// Which config.
        config: &'static str,
        /// What was found.
        problem: String,
    },
    /// The patcher's own output failed its check. This is a bug in Quorum, never in the file;
    /// nothing was written.
    #[error("internal check failed patching {config} ({reason}); nothing was written; please report this as a Quorum bug with the file attached")]
    Verify {
        /// Which config.
        config: &'static str,
        /// What did not match.
        reason: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

const PATRONI: &str = "patroni.yml";
const VIP: &str = "vip-manager config";

/// Patroni's etcd DCS sections, newest first.
const PATRONI_SECTIONS: [&str; 2] = ["etcd3", "etcd"];
/// Keys of a Patroni etcd section that name servers in a form Quorum does not rewrite.
const PATRONI_OTHER_SERVER_KEYS: [&str; 4] = ["host", "url", "proxy", "srv"];
/// vip-manager's endpoint keys: the current name first, then the pre-1.0 names it still reads.
const VIP_KEYS: [&str; 3] = ["dcs-endpoints", "endpoints", "endpoint"];
/// vip-manager's DCS type keys: current and pre-1.0 names.
const VIP_TYPE_KEYS: [&str; 3] = ["dcs-type", "type", "endpoint_type"];

/// Returns the etcd hosts Patroni's `patroni.yml` names today (`etcd3.hosts`, or the legacy
/// `etcd.hosts`), as `host:port` strings in file order.
pub fn read_patroni_hosts(text: &str) -> Result<Vec<String>, PatchError> {
    let doc = parse_values(PATRONI, text)?;
    let (section, _) = patroni_section(&doc)?;
    let hosts = doc_get(&doc, &[section, "hosts"]).unwrap_or(&Value::Null);
    list_of(PATRONI, &format!("{section}.hosts"), hosts)
}

/// Replaces the etcd hosts in `patroni.yml` (`etcd3.hosts`, or the legacy `etcd.hosts`) with
/// `hosts` (`host:port` strings, written in the given order), keeping every other byte.
pub fn patch_patroni_hosts(text: &str, hosts: &[String]) -> Result<String, PatchError> {
    check_entries(PATRONI, hosts, EntryForm::HostPort)?;
    let doc = parse_values(PATRONI, text)?;
    let (section, _) = patroni_section(&doc)?;
    let out = patch_lists(PATRONI, text, &doc, &[[section, "hosts"]], hosts)?;
    // Read back through the public reader too: what the agent reports must be what it wrote.
    let back = read_patroni_hosts(&out)?;
    if back != hosts {
        return Err(PatchError::Verify {
            config: PATRONI,
            reason: format!("read back {back:?}, wanted {hosts:?}"),
        });
    }
    Ok(out)
}

/// Returns the etcd endpoints vip-manager's config names today (`dcs-endpoints`, or the
/// pre-1.0 `endpoints`/`endpoint`), as URLs in file order.
pub fn read_vip_endpoints(text: &str) -> Result<Vec<String>, PatchError> {
    let doc = parse_values(VIP, text)?;
    let keys = vip_keys(&doc)?;
    let mut found: Option<(&'static str, Vec<String>)> = None;
    for key in keys {
        let list = list_of(VIP, key, doc_get(&doc, &[key]).unwrap_or(&Value::Null))?;
        match &found {
            None => found = Some((key, list)),
            Some((first, prev)) if *prev != list => {
                return Err(PatchError::Conflicting {
                    config: VIP,
                    first,
                    second: key,
                })
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, l)| l).unwrap_or_default())
}

/// The VIP a vip-manager config manages: `ip`, `netmask` and `interface` (or their pre-1.0
/// names `mask` and `iface`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSettings {
    /// The address.
    pub address: std::net::IpAddr,
    /// The prefix length.
    pub prefix: u8,
    /// The interface it goes on.
    pub interface: String,
}

/// Reads the VIP of a vip-manager config.
pub fn read_vip_settings(text: &str) -> Result<VipSettings, PatchError> {
    let doc = parse_values(VIP, text)?;
    let scalar = |keys: &[&'static str]| -> Option<(&'static str, String)> {
        keys.iter().find_map(|k| {
            doc_get(&doc, &[k]).map(|v| {
                let s = match v {
                    Value::Number(n) => n.to_string(),
                    other => other
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| describe(other)),
                };
                (*k, s.trim().to_string())
            })
        })
    };
    let missing = |what: &str| PatchError::Missing {
        config: VIP,
        what: format!("`{what}:` key"),
        hint: "re-render it with `./pgsql.yml -t pg_vip_config`, then retry",
    };
    let bad = |key: &str, form: String, hint: &'static str| PatchError::Unsupported {
        config: VIP,
        key: key.to_string(),
        line: None,
        form,
        hint,
    };
    let (ip_key, ip) = scalar(&["ip"]).ok_or_else(|| missing("ip"))?;
    let address = ip.parse().map_err(|_| {
        bad(
            ip_key,
            format!("{ip:?}, not an IP address"),
            "write the VIP as `ip: 10.10.10.2`",
        )
    })?;
    let (mask_key, mask) = scalar(&["netmask", "mask"]).ok_or_else(|| missing("netmask"))?;
    let prefix = mask
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 128)
        .ok_or_else(|| {
            bad(
                mask_key,
                format!("{mask:?}, not a prefix length"),
                "write it as `netmask: 24`",
            )
        })?;
    let (_, interface) = scalar(&["interface", "iface"]).ok_or_else(|| missing("interface"))?;
    Ok(VipSettings {
        address,
        prefix,
        interface,
    })
}

/// Replaces the etcd endpoints in vip-manager's config with `endpoints` (URLs such as
/// `https://10.10.10.10:2379`), keeping every other byte. When the file sets both the current
/// and a pre-1.0 key, both are rewritten, since vip-manager refuses differing values.
pub fn patch_vip_endpoints(text: &str, endpoints: &[String]) -> Result<String, PatchError> {
    check_entries(VIP, endpoints, EntryForm::Url)?;
    let doc = parse_values(VIP, text)?;
    let keys = vip_keys(&doc)?;
    let paths: Vec<[&str; 1]> = keys.iter().map(|k| [*k]).collect();
    let out = patch_lists(VIP, text, &doc, &paths, endpoints)?;
    let back = read_vip_endpoints(&out)?;
    if back != endpoints {
        return Err(PatchError::Verify {
            config: VIP,
            reason: format!("read back {back:?}, wanted {endpoints:?}"),
        });
    }
    Ok(out)
}

fn parse_values(config: &'static str, text: &str) -> Result<Value, PatchError> {
    let doc: Value = yaml::from_str(text).map_err(|source| PatchError::Yaml { config, source })?;
    if !doc.is_mapping() {
        return Err(PatchError::NotAMapping { config });
    }
    Ok(doc)
}

fn doc_get<'v>(doc: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(doc, |v, k| v.as_mapping()?.get(*k))
}

/// Picks the one etcd section of a Patroni config.
fn patroni_section(doc: &Value) -> Result<(&'static str, &Value), PatchError> {
    let present: Vec<&'static str> = PATRONI_SECTIONS
        .into_iter()
        .filter(|s| doc_get(doc, &[s]).is_some())
        .collect();
    let section = match present.as_slice() {
        [] => {
            return Err(PatchError::Missing {
                config: PATRONI,
                what: "`etcd3:` (or legacy `etcd:`) section".into(),
                hint: "this host's Patroni does not use etcd as its DCS; re-render it with `./pgsql.yml -t pg_conf` or leave it out of the etcd refresh",
            })
        }
        [one] => *one,
        _ => {
            return Err(PatchError::NotEtcd {
                config: PATRONI,
                problem: "has both an `etcd3:` and an `etcd:` section, and which one Patroni uses is ambiguous".into(),
            })
        }
    };
    let body = doc_get(doc, &[section]).unwrap_or(&Value::Null);
    let Some(map) = body.as_mapping() else {
        return Err(PatchError::Missing {
            config: PATRONI,
            what: format!("`{section}.hosts` (the `{section}:` section is empty or not a mapping)"),
            hint: "add `hosts: '<ip>:2379,...'` under it",
        });
    };
    if map.get("hosts").is_none() {
        if let Some(other) = PATRONI_OTHER_SERVER_KEYS
            .into_iter()
            .find(|k| map.get(*k).is_some())
        {
            return Err(PatchError::Unsupported {
                config: PATRONI,
                key: format!("{section}.{other}"),
                line: None,
                form: format!("used instead of `{section}.hosts`"),
                hint: "Quorum rewrites only a `hosts:` list; replace the key with `hosts: '<ip>:2379,...'` as Pigsty renders it",
            });
        }
        return Err(PatchError::Missing {
            config: PATRONI,
            what: format!("`{section}.hosts`"),
            hint: "add `hosts: '<ip>:2379,...'` under it, as Pigsty renders it",
        });
    }
    Ok((section, body))
}

/// The vip-manager endpoint keys present at the top level, after checking the DCS is etcd.
fn vip_keys(doc: &Value) -> Result<Vec<&'static str>, PatchError> {
    for key in VIP_TYPE_KEYS {
        if let Some(v) = doc_get(doc, &[key]) {
            if v.as_str() != Some("etcd") {
                return Err(PatchError::NotEtcd {
                    config: VIP,
                    problem: format!("sets `{key}: {}`", describe(v)),
                });
            }
        }
    }
    let keys: Vec<&'static str> = VIP_KEYS
        .into_iter()
        .filter(|k| doc_get(doc, &[k]).is_some())
        .collect();
    if keys.is_empty() {
        return Err(PatchError::Missing {
            config: VIP,
            what: "`dcs-endpoints:` key".into(),
            hint: "re-render it with `./pgsql.yml -t pg_vip_config` (it writes `dcs-endpoints:`), then retry",
        });
    }
    Ok(keys)
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// The entries of an endpoint value: a comma string or a list of strings.
fn list_of(config: &'static str, key: &str, v: &Value) -> Result<Vec<String>, PatchError> {
    match v {
        Value::String(s) => Ok(split_comma(s)),
        Value::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.trim().to_string()),
                other => Err(PatchError::Unsupported {
                    config,
                    key: key.to_string(),
                    line: None,
                    form: format!("a list with the non-string entry {}", describe(other)),
                    hint: "write each endpoint as a string such as `10.10.10.10:2379`",
                }),
            })
            .collect(),
        other => Err(PatchError::Unsupported {
            config,
            key: key.to_string(),
            line: None,
            form: format!("{} rather than a list or a comma string", describe(other)),
            hint: "write it as a list of endpoints or as `'a:2379,b:2379'`",
        }),
    }
}

fn split_comma(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// How the entries of an endpoint list are written.
#[derive(Clone, Copy)]
enum EntryForm {
    /// Patroni's `host:port`.
    HostPort,
    /// vip-manager's `http(s)://host:port`.
    Url,
}

/// Whether `s` is `host:port`: an IPv4 address, a bracketed IPv6 address or a DNS name, then
/// a port from 1 to 65535. Anything else (`a]:2379`, `*alias:2379`) is not an etcd endpoint,
/// however safely it could be quoted.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    port_ok && host_ok
}

/// A DNS name: dot-separated labels of 1-63 letters, digits and inner hyphens, 253 at most,
/// and not all digits (that is a malformed IPv4 address, not a name).
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn check_entries(
    config: &'static str,
    entries: &[String],
    form: EntryForm,
) -> Result<(), PatchError> {
    if entries.is_empty() {
        return Err(PatchError::EmptyList { config });
    }
    for e in entries {
        let reason = if e.is_empty() {
            Some("is empty")
        } else if e.contains(',') {
            // A comma would split one entry in two in the comma-string form.
            Some("contains a comma")
        } else if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("contains whitespace or a control character")
        } else {
            match form {
                EntryForm::HostPort if !is_host_port(e) => Some(
                    "is not host:port (an IP address, [IPv6] or DNS name, then a port from 1 to 65535)",
                ),
                EntryForm::Url
                    if !e
                        .strip_prefix("https://")
                        .or_else(|| e.strip_prefix("http://"))
                        .is_some_and(is_host_port) =>
                {
                    Some("is not http(s)://host:port (an IP address, [IPv6] or DNS name, then a port from 1 to 65535)")
                }
                _ => None,
            }
        };
        if let Some(reason) = reason {
            return Err(PatchError::BadEntry {
                config,
                entry: e.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Where a scalar is written, which decides whether it may go unquoted.
#[derive(Clone, Copy)]
enum Context {
    /// `key: <here>`
    MappingValue,
    /// `- <here>`
    BlockItem,
    /// `[<here>, ...]`
    FlowItem,
}

/// Writes `s` as a scalar in `style`, falling back to single quotes when a plain scalar would
/// read back as something else (a number, a flow indicator, a comment...).
fn write_scalar(s: &str, style: ScalarStyle, ctx: Context) -> String {
    match style {
        ScalarStyle::Plain if plain_ok(s, ctx) => s.to_string(),
        ScalarStyle::DoubleQuoted => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        _ => format!("'{}'", s.replace('\'', "''")),
    }
}

/// Whether `s` reads back as the same string when written plain in `ctx`. Checked by parsing
/// a one-line document in that context, plus a conservative character set so that YAML 1.1
/// readers (Patroni's PyYAML) agree with our YAML 1.2 parser.
fn plain_ok(s: &str, ctx: Context) -> bool {
    // A comma is harmless in a block value (Pigsty's own `hosts: 'a,b'` could be plain) but
    // separates entries in a flow list.
    let extra = if matches!(ctx, Context::MappingValue) {
        ","
    } else {
        ""
    };
    let conservative = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:/@%+=~-".contains(c) || extra.contains(c))
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/')
        && !s.ends_with(':');
    if !conservative {
        return false;
    }
    let want = Value::String(s.to_string());
    match ctx {
        Context::MappingValue => yaml::from_str::<Value>(&format!("k: {s}\n"))
            .ok()
            .and_then(|v| v.as_mapping().and_then(|m| m.get("k")).cloned())
            .is_some_and(|v| v == want),
        Context::BlockItem => yaml::from_str::<Value>(&format!("- {s}\n"))
            .is_ok_and(|v| v == Value::Sequence(vec![want])),
        Context::FlowItem => yaml::from_str::<Value>(&format!("[{s}]\n"))
            .is_ok_and(|v| v == Value::Sequence(vec![want])),
    }
}

/// Finds the node at `path` (mapping keys from the root) in the spanned tree.
fn node_at<'n>(root: &'n Node, path: &[&str]) -> Option<(&'n Node, &'n Node)> {
    let (last, parents) = path.split_last()?;
    let parent = parents.iter().try_fold(root, |n, k| n.get(k))?;
    parent.get_entry(last)
}

/// Rewrites the endpoint value at each of `paths` to `entries`, keeping its form, and checks
/// the result.
fn patch_lists<P: AsRef<[&'static str]>>(
    config: &'static str,
    text: &str,
    doc: &Value,
    paths: &[P],
    entries: &[String],
) -> Result<String, PatchError> {
    let root = yaml::parse_spanned(text)
        .map_err(|source| PatchError::Yaml { config, source })?
        .ok_or(PatchError::NotAMapping { config })?;
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut expected = doc.clone();
    for path in paths {
        let path = path.as_ref();
        let dotted = path.join(".");
        // Refuse what the readers refuse (an empty `hosts:`, a number, a mapping) before
        // planning an edit: an empty value has no token to replace.
        list_of(config, &dotted, doc_get(doc, path).unwrap_or(&Value::Null))?;
        let Some((key_node, node)) = node_at(&root, path) else {
            // The value parser found the key, the span parser did not: refuse rather than guess.
            return Err(PatchError::Verify {
                config,
                reason: format!("the span parser did not find `{dotted}`"),
            });
        };
        let (range, text_new, value_new) =
            list_edit(config, text, &dotted, key_node.start.line, node, entries)?;
        edits.push((range, text_new));
        set_path(&mut expected, path, value_new);
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_string();
    let mut floor = usize::MAX;
    for (range, new) in edits {
        if range.end > floor || range.start > range.end {
            return Err(PatchError::Verify {
                config,
                reason: "two edits overlap".into(),
            });
        }
        floor = range.start;
        out.replace_range(range, &new);
    }
    let got: Value = yaml::from_str(&out).map_err(|e| PatchError::Verify {
        config,
        reason: format!("the patched text does not parse: {e}"),
    })?;
    if got != expected {
        return Err(PatchError::Verify {
            config,
            reason: "the patched text differs from the input in more than the endpoint list".into(),
        });
    }
    Ok(out)
}

fn set_path(doc: &mut Value, path: &[&str], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = doc;
    for k in parents {
        match cur.as_mapping_mut().and_then(|m| m.get_mut(*k)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_mapping_mut() {
        m.insert(Value::String((*last).to_string()), new);
    }
}

/// Plans the replacement of one endpoint value: the byte range to replace, the new text, and
/// the value it must parse to.
fn list_edit(
    config: &'static str,
    text: &str,
    key: &str,
    line: usize,
    node: &Node,
    entries: &[String],
) -> Result<(Range<usize>, String, Value), PatchError> {
    let unsupported = |form: &str, hint: &'static str| PatchError::Unsupported {
        config,
        key: key.to_string(),
        line: Some(line),
        form: form.to_string(),
        hint,
    };
    const REWRITE: &str =
        "write it as a plain list or a comma string (`'a:2379,b:2379'`), as Pigsty renders it";
    if node.anchored || node.tagged {
        return Err(unsupported("anchored or tagged", REWRITE));
    }
    let list_value = Value::Sequence(entries.iter().cloned().map(Value::String).collect());
    match &node.kind {
        NodeKind::Scalar { style, .. } => {
            if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                return Err(unsupported("a block scalar (`|` or `>`)", REWRITE));
            }
            let end = node
                .scalar_end(text)
                .ok_or_else(|| unsupported("a plain string folded over several lines", REWRITE))?;
            let joined = entries.join(",");
            let new = write_scalar(&joined, *style, Context::MappingValue);
            Ok((node.start.offset..end, new, Value::String(joined)))
        }
        NodeKind::Seq {
            items,
            flow: true,
            close,
        } => {
            let open = node.start.offset;
            let close = close
                .map(|c| c.offset)
                .ok_or_else(|| unsupported("a flow list without a closing `]`", REWRITE))?;
            let style = list_style(items, entries, Context::FlowItem)
                .map_err(|f| unsupported(&f, REWRITE))?;
            let inner = text.get(open + 1..close).unwrap_or("");
            // Keep `[ a, b ]` padded when it was padded on one line.
            let pad = if !inner.contains('\n') && inner.starts_with(' ') && inner.ends_with(' ') {
                " "
            } else {
                ""
            };
            let body = entries
                .iter()
                .map(|e| write_scalar(e, style, Context::FlowItem))
                .collect::<Vec<_>>()
                .join(", ");
            Ok((open + 1..close, format!("{pad}{body}{pad}"), list_value))
        }
        NodeKind::Seq {
            items, flow: false, ..
        } => {
            let style = list_style(items, entries, Context::BlockItem)
                .map_err(|f| unsupported(&f, REWRITE))?;
            let (Some(first), Some(last)) = (items.first(), items.last()) else {
                return Err(unsupported("an empty block list", REWRITE));
            };
            // The parser's start mark for an indentless list (`- ` at the key's own indentation)
            // is not on the dash, so find the dash from the first item instead.
            let before_first = &text[..first.start.offset];
            let dash = before_first.trim_end_matches(' ').len().wrapping_sub(1);
            if text.as_bytes().get(dash) != Some(&b'-') {
                return Err(unsupported("a list whose first `-` was not found", REWRITE));
            }
            let line_start = text[..dash].rfind('\n').map_or(0, |i| i + 1);
            let indent = &text[line_start..dash];
            let gap = text.get(dash + 1..first.start.offset).unwrap_or("\n");
            if !indent.chars().all(|c| c == ' ') || gap.is_empty() || !gap.chars().all(|c| c == ' ')
            {
                return Err(unsupported(
                    "a list laid out other than one `- item` per line",
                    REWRITE,
                ));
            }
            let end = last
                .scalar_end(text)
                .ok_or_else(|| unsupported("a list with a multi-line entry", REWRITE))?;
            let eol = match text[dash..].find('\n') {
                Some(i) if text[..dash + i].ends_with('\r') => "\r\n",
                _ => "\n",
            };
            let sep = format!("{eol}{indent}-{gap}");
            let body = entries
                .iter()
                .map(|e| write_scalar(e, style, Context::BlockItem))
                .collect::<Vec<_>>()
                .join(&sep);
            Ok((dash..end, format!("-{gap}{body}"), list_value))
        }
        NodeKind::Map { .. } => Err(unsupported("a mapping", REWRITE)),
        NodeKind::Alias => Err(unsupported("an alias (`*name`)", REWRITE)),
    }
}

/// The style to write every new entry in: the style of the first old entry, except that a
/// plain list where some new entry cannot stay plain is quoted throughout, so that patching
/// the result again gives the same bytes.
fn list_style(items: &[Node], entries: &[String], ctx: Context) -> Result<ScalarStyle, String> {
    let style = first_style(items)?;
    if style == ScalarStyle::Plain && !entries.iter().all(|e| plain_ok(e, ctx)) {
        return Ok(ScalarStyle::SingleQuoted);
    }
    Ok(style)
}

/// The quoting style of the first entry (plain for an empty list); every entry must be a
/// plain or quoted one-line scalar.
fn first_style(items: &[Node]) -> Result<ScalarStyle, String> {
    for i in items {
        match &i.kind {
            NodeKind::Scalar {
                style: ScalarStyle::Literal | ScalarStyle::Folded,
                ..
            } => return Err("a list with a block scalar entry".into()),
            NodeKind::Scalar { .. } if !i.anchored && !i.tagged => {}
            _ => return Err("a list with a non-string entry".into()),
        }
    }
    Ok(match items.first().map(|i| &i.kind) {
        Some(NodeKind::Scalar { style, .. }) => *style,
        _ => ScalarStyle::Plain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_settings_read_current_and_legacy_names() {
        let cur =
            read_vip_settings("ip: 10.10.10.2\nnetmask: 24\ninterface: eth1\ndcs-type: etcd\n")
                .expect("current names");
        assert_eq!(cur.address.to_string(), "10.10.10.2");
        assert_eq!(cur.prefix, 24);
        assert_eq!(cur.interface, "eth1");
        let old = read_vip_settings("ip: 10.0.0.9\nmask: 16\niface: eth0\n").expect("old names");
        assert_eq!((old.prefix, old.interface.as_str()), (16, "eth0"));
        let e = read_vip_settings("ip: nope\nnetmask: 24\ninterface: eth0\n")
            .expect_err("bad ip")
            .to_string();
        assert!(e.contains("`ip`") && e.contains("not an IP address"), "{e}");
        let e = read_vip_settings("ip: 10.0.0.9\ninterface: eth0\n")
            .expect_err("no netmask")
            .to_string();
        assert!(e.contains("`netmask:`"), "{e}");
        assert!(read_vip_settings("ip: [").is_err());
    }

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_check_refuses_lookalikes() {
        assert!(plain_ok("10.10.10.10:2379", Context::MappingValue));
        assert!(plain_ok("https://10.10.10.10:2379", Context::BlockItem));
        assert!(!plain_ok("[::1]:2379", Context::FlowItem));
        assert!(!plain_ok("2379", Context::BlockItem));
        assert!(!plain_ok("true", Context::BlockItem));
        assert!(!plain_ok("null", Context::MappingValue));
    }

    #[test]
    fn string_form_keeps_quotes() {
        let text = "etcd3:\n  hosts: \"a:2379,b:2379\"\n";
        let out = patch_patroni_hosts(text, &v(&["c:2379"])).unwrap();
        assert_eq!(out, "etcd3:\n  hosts: \"c:2379\"\n");
    }
}
