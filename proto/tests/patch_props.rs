//! Property tests of the patchers: for arbitrary YAML around the endpoint list (other keys,
//! comments, quoting, indentation, line endings), patching changes exactly the list, patching
//! twice equals patching once, and the parsed result equals the parsed input with only the
//! list replaced.
//!
//! The generator builds each document as `before + list + after`, so the exact expected
//! output is `before + <new list in the same form> + after`, computed here independently of
//! the patcher.

use proptest::prelude::*;
use quorum_proto::patch::{
    patch_patroni_hosts, patch_vip_endpoints, read_patroni_hosts, read_vip_endpoints, PatchError,
};
use quorum_proto::yaml::{self, Value};

/// How the list is written.
#[derive(Debug, Clone)]
enum Form {
    /// `key: 'a,b'` in the given quote style (0 plain, 1 single, 2 double).
    String(u8),
    /// `key: [a, b]`, quote style, padded `[ a ]`.
    Flow(u8, bool),
    /// `key:` then `- a` lines: item indent, spaces after the dash, quote style, item comments.
    Block(usize, usize, u8, bool),
}

#[derive(Debug, Clone)]
struct Doc {
    before: String,
    list: String,
    after: String,
    form: Form,
    eol: &'static str,
    old: Vec<String>,
    /// Path of the list inside the document.
    path: Vec<String>,
}

fn quote(s: &str, style: u8) -> String {
    match style {
        0 => s.to_string(),
        1 => format!("'{s}'"),
        _ => format!("\"{s}\""),
    }
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            1u8..=254,
            0u8..=254,
            1u8..=254,
            prop_oneof![Just(2379u16), 1024u16..65535]
        )
            .prop_map(|(a, b, c, p)| format!("10.{a}.{b}.{c}:{p}")),
        (1u8..=99).prop_map(|n| format!("etcd-{n}.example.com:2379")),
    ]
}

fn filler_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,8}",
        (0i64..100000).prop_map(|n| n.to_string()),
        "[a-z ]{0,12}".prop_map(|s| format!("'{s} it''s'")),
        "[a-z ]{0,12}".prop_map(|s| format!("\"{s} \\\"q\\\" \\t\"")),
        Just("true".to_string()),
        Just("~".to_string()),
        Just("/pg/cert/ca.crt".to_string()),
    ]
}

fn comment() -> impl Strategy<Value = String> {
    "[a-z :#,'\"-]{0,20}".prop_map(|s| format!("# {s}"))
}

/// One top-level block of unrelated YAML (lines without their line ending).
fn filler(i: usize) -> BoxedStrategy<Vec<String>> {
    let k = format!("key{i}");
    prop_oneof![
        comment().prop_map(|c| vec![c]),
        Just(vec![String::new()]),
        {
            let k = k.clone();
            (filler_scalar(), proptest::option::of(comment())).prop_map(move |(v, c)| {
                vec![match c {
                    Some(c) => format!("{k}: {v}  {c}"),
                    None => format!("{k}: {v}"),
                }]
            })
        },
        {
            let k = k.clone();
            prop::collection::vec(filler_scalar(), 1..4).prop_map(move |vs| {
                let mut lines = vec![format!("{k}:")];
                for (j, v) in vs.iter().enumerate() {
                    lines.push(format!("  sub{j}: {v}"));
                }
                lines
            })
        },
        {
            let k = k.clone();
            prop::collection::vec(filler_scalar(), 1..4).prop_map(move |vs| {
                let mut lines = vec![format!("{k}:")];
                lines.extend(vs.iter().map(|v| format!("  - {v}")));
                lines
            })
        },
        (filler_scalar(), filler_scalar())
            .prop_map(move |(a, b)| vec![format!("{k}: {{a: {a}, b: [{b}]}}")]),
    ]
    .boxed()
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        (0u8..3).prop_map(Form::String),
        (0u8..3, any::<bool>()).prop_map(|(s, p)| Form::Flow(s, p)),
        (0usize..3, 1usize..3, 0u8..3, any::<bool>())
            .prop_map(|(i, g, s, c)| Form::Block(i, g, s, c)),
    ]
}

/// Builds a document. `section` is `Some(name)` for a Patroni-style nested `name: { key: .. }`
/// and `None` for a top-level key (vip-manager).
fn doc(
    section: Option<&'static str>,
    key: &'static str,
    item: BoxedStrategy<String>,
) -> impl Strategy<Value = Doc> {
    (
        prop::collection::vec(item, 1..5),
        form(),
        prop_oneof![Just("\n"), Just("\r\n")],
        prop_oneof![Just(2usize), Just(4usize)],
        prop::collection::vec(any::<u8>(), 0..4).prop_flat_map(|v| {
            let n = v.len();
            (0..n).map(filler).collect::<Vec<_>>()
        }),
        prop::sample::subsequence(vec![0usize, 1, 2, 3], 0..=4),
        proptest::option::of(comment()),
        proptest::option::of(comment()),
        0usize..5,
    )
        .prop_map(
            move |(old, form, eol, ind, fillers, inner, key_comment, tail_comment, at)| {
                let at = at.min(fillers.len());
                let mut head: Vec<String> = fillers[..at].iter().flatten().cloned().collect();
                let tail: Vec<String> = fillers[at..].iter().flatten().cloned().collect();
                let (key_ind, mut inner_before, mut inner_after) = match section {
                    Some(s) => {
                        head.push(format!("{s}:"));
                        let pad = " ".repeat(ind);
                        let lines = |sel: &[usize]| -> Vec<String> {
                            sel.iter()
                                .map(|k| match k {
                                    0 => format!("{pad}protocol: https"),
                                    1 => format!("{pad}cacert: /pg/cert/ca.crt   # ca"),
                                    2 => format!("{pad}# a comment inside the section"),
                                    _ => String::new(),
                                })
                                .collect()
                        };
                        (
                            ind,
                            lines(&inner[..inner.len() / 2]),
                            lines(&inner[inner.len() / 2..]),
                        )
                    }
                    None => (0, Vec::new(), Vec::new()),
                };
                head.append(&mut inner_before);
                let kpad = " ".repeat(key_ind);
                let mut before = head.iter().map(|l| format!("{l}{eol}")).collect::<String>();
                let comment_after = tail_comment.map(|c| format!("   {c}")).unwrap_or_default();
                let list = match &form {
                    Form::String(st) => {
                        before.push_str(&format!("{kpad}{key}: "));
                        quote(&old.join(","), *st)
                    }
                    Form::Flow(st, pad) => {
                        before.push_str(&format!("{kpad}{key}: ["));
                        let p = if *pad { " " } else { "" };
                        format!(
                            "{p}{}{p}",
                            old.iter()
                                .map(|h| quote(h, *st))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                    Form::Block(iind, gap, st, item_comments) => {
                        let kc = key_comment
                            .clone()
                            .map(|c| format!(" {c}"))
                            .unwrap_or_default();
                        let ipad = " ".repeat(key_ind + iind);
                        before.push_str(&format!("{kpad}{key}:{kc}{eol}{ipad}"));
                        let g = " ".repeat(*gap);
                        let items: Vec<String> = old
                            .iter()
                            .map(|h| format!("-{g}{}", quote(h, *st)))
                            .collect();
                        let sep = if *item_comments {
                            format!("  # item{eol}{ipad}")
                        } else {
                            format!("{eol}{ipad}")
                        };
                        items.join(&sep)
                    }
                };
                let closing = if matches!(form, Form::Flow(..)) {
                    "]"
                } else {
                    ""
                };
                let mut after = format!("{closing}{comment_after}{eol}");
                inner_after.extend(tail);
                after.push_str(
                    &inner_after
                        .iter()
                        .map(|l| format!("{l}{eol}"))
                        .collect::<String>(),
                );
                let path = match section {
                    Some(s) => vec![s.to_string(), key.to_string()],
                    None => vec![key.to_string()],
                };
                Doc {
                    before,
                    list,
                    after,
                    form,
                    eol,
                    old,
                    path,
                }
            },
        )
}

/// The list text the patcher must write for `new`, in the form of `d`.
fn expected_list(d: &Doc, new: &[String]) -> String {
    match &d.form {
        Form::String(st) => quote(&new.join(","), *st),
        Form::Flow(st, pad) => {
            let p = if *pad { " " } else { "" };
            format!(
                "{p}{}{p}",
                new.iter()
                    .map(|h| quote(h, *st))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Form::Block(iind, gap, st, _) => {
            let key_ind = if d.path.len() == 2 {
                // Recover the section indentation from the text before the list.
                let line = d.before.trim_end_matches(' ');
                let line = line.trim_end_matches(['\n', '\r']);
                let last = line.rsplit('\n').next().unwrap_or("");
                last.len() - last.trim_start().len()
            } else {
                0
            };
            let ipad = " ".repeat(key_ind + iind);
            let g = " ".repeat(*gap);
            new.iter()
                .map(|h| format!("-{g}{}", quote(h, *st)))
                .collect::<Vec<_>>()
                .join(&format!("{}{ipad}", d.eol))
        }
    }
}

fn replaced(text: &str, path: &[String], new: &[String], string_form: bool) -> Value {
    let mut v: Value = yaml::from_str(text).unwrap();
    let list = if string_form {
        Value::String(new.join(","))
    } else {
        Value::Sequence(new.iter().cloned().map(Value::String).collect())
    };
    let mut cur = &mut v;
    for k in &path[..path.len() - 1] {
        cur = cur.as_mapping_mut().unwrap().get_mut(k.as_str()).unwrap();
    }
    cur.as_mapping_mut()
        .unwrap()
        .insert(Value::String(path[path.len() - 1].clone()), list);
    v
}

fn url() -> BoxedStrategy<String> {
    host().prop_map(|h| format!("https://{h}")).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        // Keep the work tree clean; a failure prints its minimal input anyway.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn patroni_only_the_list_changes(
        d in prop_oneof![Just("etcd3"), Just("etcd")].prop_flat_map(|s| doc(Some(s), "hosts", host().boxed())),
        new in prop::collection::vec(host(), 1..6),
    ) {
        let text = format!("{}{}{}", d.before, d.list, d.after);
        prop_assert_eq!(read_patroni_hosts(&text).unwrap(), d.old.clone());
        let out = patch_patroni_hosts(&text, &new).unwrap();
        let want = format!("{}{}{}", d.before, expected_list(&d, &new), d.after);
        prop_assert_eq!(&out, &want);
        let parsed: Value = yaml::from_str(&out).unwrap();
        prop_assert_eq!(parsed, replaced(&text, &d.path, &new, matches!(d.form, Form::String(_))));
        prop_assert_eq!(patch_patroni_hosts(&out, &new).unwrap(), out.clone());
        prop_assert_eq!(read_patroni_hosts(&out).unwrap(), new);
    }

    #[test]
    fn vip_only_the_list_changes(
        d in prop_oneof![Just("dcs-endpoints"), Just("endpoints")].prop_flat_map(|k| doc(None, k, url())),
        new in prop::collection::vec(url(), 1..6),
    ) {
        let text = format!("{}{}{}", d.before, d.list, d.after);
        prop_assert_eq!(read_vip_endpoints(&text).unwrap(), d.old.clone());
        let out = patch_vip_endpoints(&text, &new).unwrap();
        let want = format!("{}{}{}", d.before, expected_list(&d, &new), d.after);
        prop_assert_eq!(&out, &want);
        let parsed: Value = yaml::from_str(&out).unwrap();
        prop_assert_eq!(parsed, replaced(&text, &d.path, &new, matches!(d.form, Form::String(_))));
        prop_assert_eq!(patch_vip_endpoints(&out, &new).unwrap(), out.clone());
        prop_assert_eq!(read_vip_endpoints(&out).unwrap(), new);
    }

    /// Entries that cannot stay plain (IPv6 brackets) or look odd (short names, hyphens) still
    /// give a file that parses to the right value, and a second patch changes nothing.
    #[test]
    fn awkward_entries_still_round_trip(
        d in doc(Some("etcd3"), "hosts", host().boxed()),
        new in prop::collection::vec(
            prop_oneof![
                host(),
                Just("[::1]:2379".to_string()),
                Just("[fd00::a]:2379".to_string()),
                "[a-z][a-z0-9-]{0,6}[a-z0-9](\\.[a-z0-9]{1,4}){0,2}:[1-9][0-9]{0,3}",
            ],
            1..5,
        ),
    ) {
        let text = format!("{}{}{}", d.before, d.list, d.after);
        let out = patch_patroni_hosts(&text, &new).unwrap();
        prop_assert!(out.starts_with(&d.before));
        let closing_and_rest = d.after.as_str();
        prop_assert!(out.ends_with(closing_and_rest));
        let parsed: Value = yaml::from_str(&out).unwrap();
        prop_assert_eq!(parsed, replaced(&text, &d.path, &new, matches!(d.form, Form::String(_))));
        prop_assert_eq!(patch_patroni_hosts(&out, &new).unwrap(), out.clone());
        prop_assert_eq!(read_patroni_hosts(&out).unwrap(), new);
    }

    /// An entry of any characters is either refused as not `host:port` or, when it is one,
    /// written so that it reads back as itself: never a file that means something else.
    #[test]
    fn odd_entries_are_refused_or_round_trip(
        d in doc(Some("etcd3"), "hosts", host().boxed()),
        odd in "[a-z0-9'\"#&*!|>%@`{}\\[\\]:.-]{1,12}",
    ) {
        let text = format!("{}{}{}", d.before, d.list, d.after);
        let new = vec![odd];
        match patch_patroni_hosts(&text, &new) {
            Err(PatchError::BadEntry { .. }) => {}
            Ok(out) => {
                let parsed: Value = yaml::from_str(&out).unwrap();
                prop_assert_eq!(parsed, replaced(&text, &d.path, &new, matches!(d.form, Form::String(_))));
                prop_assert_eq!(read_patroni_hosts(&out).unwrap(), new);
            }
            Err(other) => prop_assert!(false, "unexpected error: {}", other),
        }
    }

    /// Arbitrary text never panics the readers or patchers; they return a file or an error.
    #[test]
    fn arbitrary_text_never_panics(text in "(etcd3:|  hosts:| - |[a-z:'\",\\[\\]{}#&*!|>\\-\n ]){0,40}") {
        let _ = read_patroni_hosts(&text);
        let _ = read_vip_endpoints(&text);
        if let Ok(out) = patch_patroni_hosts(&text, &["a:1".to_string()]) {
            prop_assert_eq!(read_patroni_hosts(&out).unwrap(), vec!["a:1".to_string()]);
        }
        let _ = patch_vip_endpoints(&text, &["https://a:1".to_string()]);
    }
}
