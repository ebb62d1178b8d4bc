//! The crate's modules import each other without cycles: each concern has
//! one owner, and dependencies point one way. A module is a source file
//! (`src/a/b.rs` or `src/a/b/mod.rs` is `a::b`); an edge is any `crate::`
//! or `super::` path in its code (comments and doc links do not count) that
//! names another module. A module reaching into its own ancestors (a child
//! using its parent's items, such as `grpc::pb`) is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of `src/`, by path (`grpc::edge`), with its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The code of a file without its comments (line comments, doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `crate::`/`super::` reference starting at `text` names,
/// with groups expanded: `a::{b, c::{d}}` is `a::b`, `a::c::d`.
fn paths(prefix: &str, text: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut path = prefix.to_owned();
    let mut rest = text.trim_start();
    loop {
        let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        if name.is_empty() {
            break;
        }
        if let Some(next) = after.strip_prefix("::") {
            path.push_str(name);
            path.push_str("::");
            rest = next;
            continue;
        }
        path.push_str(name);
        return vec![path];
    }
    let Some(inner) = rest.strip_prefix('{') else {
        return vec![path.trim_end_matches("::").to_owned()];
    };
    // The group up to its closing brace, split at top-level commas.
    let (mut depth, mut items, mut item) = (1, Vec::new(), String::new());
    for ch in inner.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            break;
        }
        if ch == ',' && depth == 1 {
            items.push(std::mem::take(&mut item));
        } else {
            item.push(ch);
        }
    }
    items.push(item);
    items
        .iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| paths(&path, i))
        .collect()
}

/// Each module's imports of other modules.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let text = code(&std::fs::read_to_string(file).expect("read module"));
        let parent: Vec<&str> = module.split("::").collect();
        let parent = parent[..parent.len().saturating_sub(1)].join("::");
        let mut names = Vec::new();
        for (marker, base) in [("crate::", String::new()), ("super::", parent)] {
            let base = if base.is_empty() {
                base
            } else {
                format!("{base}::")
            };
            for (at, _) in text.match_indices(marker) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                names.extend(paths(&base, &text[at + marker.len()..]));
            }
        }
        let mut targets = BTreeSet::new();
        for name in names {
            let parts: Vec<&str> = name.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target
                && target != *module
                && !module.starts_with(&format!("{target}::"))
            {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn the_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 30, "only {} modules found", edges.len());
    assert!(
        edges["startup"].contains("detection") && edges["grpc::edge"].contains("grpc::catalog"),
        "the graph misses known imports: {edges:?}"
    );
    let found = cycles(&edges);
    assert!(found.is_empty(), "import cycles between modules: {found:?}");
}

/// The checker sees a cycle when there is one: two modules written to a
/// scratch tree that import each other, one through a group.
#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("b")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::{b::inner::X, c};\n").expect("write");
    std::fs::write(src.join("b/mod.rs"), "pub mod inner;\n").expect("write");
    std::fs::write(
        src.join("b/inner.rs"),
        "pub struct X;\n// crate::c is only a comment\nfn f() { crate::a::g(); }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("c.rs"),
        "/// [`crate::a`] is a doc link\npub fn h() {}\n",
    )
    .expect("write");
    let edges = graph(src);
    assert_eq!(
        edges["a"],
        BTreeSet::from(["b::inner".to_owned(), "c".to_owned()])
    );
    assert!(edges["c"].is_empty(), "{edges:?}");
    assert_eq!(
        cycles(&edges),
        vec![vec!["a".to_owned(), "b::inner".to_owned()]]
    );
}
