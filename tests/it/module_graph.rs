//! No import circles (issue 11): the top-level modules of each crate, linked by the `crate::x`
//! paths their code uses outside tests and comments, form a graph without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, except `tests.rs` files (test modules).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// `text` without comments and without `#[cfg(test)] mod x { … }` blocks.
fn code_outside_tests(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect();
    let text = lines.join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after
            .find('{')
            .filter(|&o| after[..o].contains("mod ") && !after[..o].contains(';'))
        else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The identifiers that follow `crate::`, and those inside `crate::{a, b::c}`.
fn imported(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').map(|part| ident(part.trim())));
        } else {
            found.insert(ident(after));
        }
    }
    found
}

/// Each top-level module of the crate in `src` and the other top-level modules it imports.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let top = |path: &Path| -> String {
        let first = path.strip_prefix(src).unwrap().components().next().unwrap();
        let name = first.as_os_str().to_str().unwrap();
        name.trim_end_matches(".rs").to_owned()
    };
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| top(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top(file);
        if from == "lib" || from == "main" {
            continue;
        }
        let code = code_outside_tests(&std::fs::read_to_string(file).unwrap());
        let to: Vec<String> = imported(&code)
            .into_iter()
            .filter(|m| modules.contains(m) && *m != from)
            .collect();
        graph.entry(from).or_default().extend(to);
    }
    graph
}

/// A cycle of `graph` as the path around it, if it has one.
fn a_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_owned());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(cycle) = walk(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| walk(graph, start, &mut Vec::new(), &mut done))
}

fn crate_src(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn the_daemons_modules_import_each_other_in_no_circle() {
    let graph = module_graph(&crate_src("src"));
    assert!(graph["outbox"].contains("model"), "the walk sees imports");
    assert_eq!(a_cycle(&graph), None);
}

#[test]
fn the_channels_crates_modules_import_each_other_in_no_circle() {
    let graph = module_graph(&crate_src("channels/src"));
    assert!(graph["slack"].contains("http"), "the walk sees imports");
    assert_eq!(a_cycle(&graph), None);
}

#[test]
fn a_circle_is_found_and_named() {
    let graph = BTreeMap::from([
        ("config".to_owned(), BTreeSet::from(["outbox".to_owned()])),
        ("outbox".to_owned(), BTreeSet::from(["policy".to_owned()])),
        ("policy".to_owned(), BTreeSet::from(["config".to_owned()])),
    ]);
    assert_eq!(
        a_cycle(&graph),
        Some(vec![
            "config".into(),
            "outbox".into(),
            "policy".into(),
            "config".into()
        ])
    );
}

#[test]
fn imports_in_tests_and_comments_are_not_edges() {
    let code = code_outside_tests(
        "use crate::model::State; // see crate::rules\n\
         #[cfg(test)]\nmod tests {\n    use crate::policy::Gate;\n    fn f() { {} }\n}\n\
         fn g() -> crate::{clock, window::Zone} {}\n",
    );
    assert_eq!(
        imported(&code),
        BTreeSet::from(["model".into(), "clock".into(), "window".into()])
    );
}
