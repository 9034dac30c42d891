//! Pigsty's generations: which of Pigsty's etcd templates an inventory was written for, and
//! what each one renders differently. Read from Pigsty's own tags (`roles/etcd/templates/`,
//! `roles/etcd/defaults/`, `roles/etcd/tasks/`); `tests/golden/pigsty/` holds their renders
//! of every inventory Pigsty ships at those tags, which `tests/tests/pigsty_golden.rs` checks
//! Quorum against.
//!
//! | generation | Pigsty tags | etcd.conf | etcdctl.sh | RBAC |
//! |---|---|---|---|---|
//! | v2.6 | v2.6 – v3.0 | no `quota-backend-bytes` | `ETCDCTL_API=3`, `/etc/pki/ca.crt`, infra cert on infra hosts; root 0644 | no |
//! | v3.1 | v3.1 – v3.4 | quota 16 GiB | as v2.6 | no |
//! | v3.5 | v3.5 | quota 16 GiB | no `ETCDCTL_API`; root 0644 | no |
//! | v3.6 | v3.6 – v3.7 | quota 16 GiB | as v3.5; etcd:etcd 0755 | no |
//! | v4.0 | v4.0 – v4.3 | quota 16 GiB | `/etc/etcd/ca.crt`, server cert on members only, endpoints in inventory order, `ETCDCTL_USER` for root and the admin user; root 0755 | yes: `/etc/etcd/etcd.pass`, root user, `auth enable` |
//! | v4.4 | v4.4 | quota 8 GiB | as v4.0 | yes |
//! | v4.5 | v4.5 and later | quota 8 GiB | as v4.0; root 0644 | yes |
//!
//! The generation comes, highest first, from `--pigsty-version` (the coordinator's and the
//! inventory commands' flag), the inventory variable `quorum_pigsty_version`, and Pigsty's own
//! `version` (every inventory Pigsty ships sets it in `all.vars`). None of them, or a version
//! Quorum does not know, means the newest generation; [`Choice::why`] says which it was.

use std::fmt;

use serde::Serialize;

/// One generation of Pigsty's etcd templates (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Generation {
    /// Pigsty v2.6 – v3.0.
    #[serde(rename = "v2.6")]
    V2_6,
    /// Pigsty v3.1 – v3.4.
    #[serde(rename = "v3.1")]
    V3_1,
    /// Pigsty v3.5.
    #[serde(rename = "v3.5")]
    V3_5,
    /// Pigsty v3.6 – v3.7.
    #[serde(rename = "v3.6")]
    V3_6,
    /// Pigsty v4.0 – v4.3.
    #[serde(rename = "v4.0")]
    V4_0,
    /// Pigsty v4.4.
    #[serde(rename = "v4.4")]
    V4_4,
    /// Pigsty v4.5 and later.
    #[serde(rename = "v4.5")]
    V4_5,
}

/// Pigsty v3's `quota-backend-bytes` (16 GiB).
const QUOTA_16G: u64 = 17_179_869_184;
/// Pigsty v4.4's `quota-backend-bytes` (8 GiB).
const QUOTA_8G: u64 = 8_589_934_592;

/// Owner and mode of `/etc/profile.d/etcdctl.sh`, as the generation's task sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProfileFile {
    /// root:root 0644.
    Root0644,
    /// root:root 0755.
    Root0755,
    /// etcd:etcd 0755.
    Etcd0755,
}

impl Generation {
    /// Every generation, oldest first.
    pub const ALL: [Generation; 7] = [
        Generation::V2_6,
        Generation::V3_1,
        Generation::V3_5,
        Generation::V3_6,
        Generation::V4_0,
        Generation::V4_4,
        Generation::V4_5,
    ];

    /// The newest generation: what an inventory without a known version gets.
    pub const NEWEST: Generation = Generation::V4_5;

    /// The first Pigsty release of this generation, as `vMAJOR.MINOR`.
    pub fn name(self) -> &'static str {
        match self {
            Generation::V2_6 => "v2.6",
            Generation::V3_1 => "v3.1",
            Generation::V3_5 => "v3.5",
            Generation::V3_6 => "v3.6",
            Generation::V4_0 => "v4.0",
            Generation::V4_4 => "v4.4",
            Generation::V4_5 => "v4.5",
        }
    }

    /// The Pigsty releases it covers, for messages.
    pub fn releases(self) -> &'static str {
        match self {
            Generation::V2_6 => "Pigsty v2.6 to v3.0",
            Generation::V3_1 => "Pigsty v3.1 to v3.4",
            Generation::V3_5 => "Pigsty v3.5",
            Generation::V3_6 => "Pigsty v3.6 to v3.7",
            Generation::V4_0 => "Pigsty v4.0 to v4.3",
            Generation::V4_4 => "Pigsty v4.4",
            Generation::V4_5 => "Pigsty v4.5 and later",
        }
    }

    /// The generation of Pigsty release `major.minor`; `None` before v2.6, which Quorum does
    /// not render.
    pub fn of_release(major: u32, minor: u32) -> Option<Generation> {
        Some(match (major, minor) {
            (2, 6..) | (3, 0) => Generation::V2_6,
            (3, 1..=4) => Generation::V3_1,
            (3, 5) => Generation::V3_5,
            (3, 6..) => Generation::V3_6,
            (4, 0..=3) => Generation::V4_0,
            (4, 4) => Generation::V4_4,
            (4, 5..) | (5.., _) => Generation::V4_5,
            _ => return None,
        })
    }

    /// `quota-backend-bytes` in etcd.conf; `None`: the key is absent.
    pub fn quota_backend_bytes(self) -> Option<u64> {
        match self {
            Generation::V2_6 => None,
            Generation::V3_1 | Generation::V3_5 | Generation::V3_6 | Generation::V4_0 => {
                Some(QUOTA_16G)
            }
            Generation::V4_4 | Generation::V4_5 => Some(QUOTA_8G),
        }
    }

    /// Pigsty v4's templates and tasks: etcd RBAC on (root user, `auth enable`, the
    /// `etcd.pass` file, per-PostgreSQL-cluster users), the v4 etcdctl profile.
    pub fn v4(self) -> bool {
        self >= Generation::V4_0
    }

    /// The profile exports `ETCDCTL_API=3`.
    pub fn exports_api3(self) -> bool {
        self <= Generation::V3_1
    }

    /// Owner and mode of the etcdctl profile.
    pub fn profile_file(self) -> ProfileFile {
        match self {
            Generation::V2_6 | Generation::V3_1 | Generation::V3_5 | Generation::V4_5 => {
                ProfileFile::Root0644
            }
            Generation::V3_6 => ProfileFile::Etcd0755,
            Generation::V4_0 | Generation::V4_4 => ProfileFile::Root0755,
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads a Pigsty version: `v4.5.0`, `4.5`, `v3.6.1-b2`, `v4.0.0-rc2` → (major, minor).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
    let mut parts = s.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Where the generation came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `--pigsty-version`.
    Flag,
    /// The inventory variable `quorum_pigsty_version`.
    InventoryOverride,
    /// Pigsty's `version` variable.
    Version,
    /// Nothing usable: the newest.
    Default,
}

/// The generation an inventory renders with, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The generation.
    pub generation: Generation,
    /// Where it came from.
    pub source: Source,
    /// The version text it was read from (empty for [`Source::Default`] without one).
    pub version: String,
    /// The operator's sentence: which generation and why.
    pub why: String,
}

impl Choice {
    /// The newest generation, chosen for want of a version.
    pub fn newest(version: &str, why: String) -> Choice {
        Choice {
            generation: Generation::NEWEST,
            source: Source::Default,
            version: version.to_string(),
            why,
        }
    }

    /// The generation for `flag` (`--pigsty-version`), `override_var`
    /// (`quorum_pigsty_version`) and `version` (Pigsty's), highest first. A value that is
    /// not a version, or one older than v2.6, is an error for the flag and the override (the
    /// operator asked for it), and falls through to the newest generation for `version`.
    pub fn resolve(
        flag: Option<&str>,
        override_var: Option<&str>,
        version: Option<&str>,
    ) -> Result<Choice, String> {
        let pick = |given: &str, what: &str| -> Result<Generation, String> {
            let (major, minor) = parse_version(given).ok_or_else(|| {
                format!("{what} `{given}` is not a Pigsty version such as v4.5.0")
            })?;
            Generation::of_release(major, minor).ok_or_else(|| {
                format!(
                    "{what} `{given}` is older than Pigsty v2.6, the oldest generation Quorum renders; upgrade Pigsty, or name a generation Quorum knows (v2.6 to v4.5)"
                )
            })
        };
        if let Some(f) = flag {
            let g = pick(f, "--pigsty-version")?;
            return Ok(Choice {
                generation: g,
                source: Source::Flag,
                version: f.to_string(),
                why: format!("--pigsty-version {f} ({})", g.releases()),
            });
        }
        if let Some(o) = override_var {
            let g = pick(o, "quorum_pigsty_version")?;
            return Ok(Choice {
                generation: g,
                source: Source::InventoryOverride,
                version: o.to_string(),
                why: format!(
                    "quorum_pigsty_version: {o} in the inventory ({})",
                    g.releases()
                ),
            });
        }
        let newest = Generation::NEWEST;
        Ok(match version {
            Some(v) => match pick(v, "version") {
                Ok(g) => Choice {
                    generation: g,
                    source: Source::Version,
                    version: v.to_string(),
                    why: format!("version: {v} in the inventory ({})", g.releases()),
                },
                Err(_) => Choice::newest(
                    v,
                    format!(
                        "version: {v} in the inventory is not a Pigsty release Quorum knows; using the newest generation ({}); set quorum_pigsty_version to choose another",
                        newest.releases()
                    ),
                ),
            },
            None => Choice::newest(
                "",
                format!(
                    "the inventory sets no version; using the newest generation ({}); set version or quorum_pigsty_version to choose another",
                    newest.releases()
                ),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_release_maps_to_its_generation() {
        for (v, g) in [
            ("v2.6.0", Generation::V2_6),
            ("v2.7.0", Generation::V2_6),
            ("v3.0.4", Generation::V2_6),
            ("v3.1.0", Generation::V3_1),
            ("v3.4.1", Generation::V3_1),
            ("v3.5.0", Generation::V3_5),
            ("v3.6.1", Generation::V3_6),
            ("v3.7.0", Generation::V3_6),
            ("v4.0.0-rc2", Generation::V4_0),
            ("v4.3.0-b1", Generation::V4_0),
            ("v4.4.0", Generation::V4_4),
            ("v4.5.0", Generation::V4_5),
            ("4.6", Generation::V4_5),
            ("v5.0.0", Generation::V4_5),
        ] {
            let (major, minor) = parse_version(v).unwrap_or((0, 0));
            assert_eq!(Generation::of_release(major, minor), Some(g), "{v}");
        }
        assert_eq!(Generation::of_release(2, 5), None);
        assert_eq!(parse_version("latest"), None);
    }

    #[test]
    fn quota_and_profile_follow_pigsty_tags() {
        assert_eq!(Generation::V2_6.quota_backend_bytes(), None);
        assert_eq!(Generation::V3_6.quota_backend_bytes(), Some(QUOTA_16G));
        assert_eq!(Generation::V4_0.quota_backend_bytes(), Some(QUOTA_16G));
        assert_eq!(Generation::V4_4.quota_backend_bytes(), Some(QUOTA_8G));
        assert!(Generation::V3_1.exports_api3() && !Generation::V3_5.exports_api3());
        assert!(!Generation::V3_6.v4() && Generation::V4_0.v4());
        assert_eq!(Generation::V3_6.profile_file(), ProfileFile::Etcd0755);
        assert_eq!(Generation::V4_5.profile_file(), ProfileFile::Root0644);
    }

    #[test]
    fn the_choice_says_where_it_came_from() -> Result<(), String> {
        let c = Choice::resolve(Some("v3.6.1"), Some("v4.5.0"), Some("v2.7.0"))?;
        assert_eq!((c.generation, c.source), (Generation::V3_6, Source::Flag));
        let c = Choice::resolve(None, Some("v4.0.0"), Some("v2.7.0"))?;
        assert_eq!(
            (c.generation, c.source),
            (Generation::V4_0, Source::InventoryOverride)
        );
        let c = Choice::resolve(None, None, Some("v2.7.0"))?;
        assert_eq!(
            (c.generation, c.source),
            (Generation::V2_6, Source::Version)
        );
        assert!(c.why.contains("version: v2.7.0"), "{}", c.why);
        let c = Choice::resolve(None, None, Some("main"))?;
        assert_eq!(
            (c.generation, c.source),
            (Generation::NEWEST, Source::Default)
        );
        assert!(c.why.contains("not a Pigsty release"), "{}", c.why);
        let c = Choice::resolve(None, None, None)?;
        assert!(c.why.contains("sets no version"), "{}", c.why);
        let e = Choice::resolve(Some("v1.5.0"), None, None)
            .err()
            .unwrap_or_default();
        assert!(e.contains("older than Pigsty v2.6"), "{e}");
        let e = Choice::resolve(None, Some("bogus"), None)
            .err()
            .unwrap_or_default();
        assert!(e.contains("quorum_pigsty_version `bogus`"), "{e}");
        Ok(())
    }
}
