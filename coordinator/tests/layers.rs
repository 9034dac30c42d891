//! The coordinator's modules are grouped in the order data travels (see `src/lib.rs`):
//! operator → daemon → sop → clients → model. A module may import from its own group or a group
//! below it, never from one above, and no modules import each other in a cycle. Read from the
//! sources (test modules aside), so a new `use` that breaks either rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The groups, top first.
const GROUPS: [&str; 5] = ["operator", "daemon", "sop", "clients", "model"];

fn rank(group: &str) -> Option<usize> {
    GROUPS.iter().position(|g| *g == group)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `group::module` of a source file under `src/` (a directory module such as
/// `model/inventory/` counts as one module); `None` for `lib.rs`, `main.rs` and `mod.rs` of a
/// group.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [group, module, ..] if module != "mod" => Some(format!("{group}::{module}")),
        _ => None,
    }
}

/// The code of a file without its test module.
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// Every `crate::group::module` the code names.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut segs = path.split("::").filter(|s| !s.is_empty());
        if let (Some(group), Some(module)) = (segs.next(), segs.next()) {
            if rank(group).is_some() {
                out.insert(format!("{group}::{module}"));
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files).expect("read src/");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(module) = module_of(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read a source file");
        let deps = g.entry(module.clone()).or_default();
        for d in imports(non_test_code(&text)) {
            if d != module {
                deps.insert(d);
            }
        }
    }
    g
}

fn group(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

#[test]
fn no_module_imports_from_a_group_above_it() {
    let g = graph();
    assert!(g.len() > 25, "found only {:?}", g.keys());
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        for d in deps {
            if rank(group(d)) < rank(group(m)) {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports from a group above: {wrong:#?}");
}

#[test]
fn no_modules_import_each_other_in_a_cycle() {
    let g = graph();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checks_see_a_cycle_and_an_upward_import() {
    let code = "use crate::sop::plan::StepKind;\nfn f() { crate::model::words::outcome(\"\"); }\n#[cfg(test)]\nmod tests { use crate::operator::cli; }";
    let found = imports(non_test_code(code));
    assert_eq!(
        found,
        BTreeSet::from(["sop::plan".to_string(), "model::words".to_string()])
    );
    assert!(rank("operator") < rank("model"));
}
