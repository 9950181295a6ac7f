//! The architecture, checked from the sources (in the spirit of rust-analyzer's
//! tidy tests): which room may reach which, and that no two modules import each
//! other. ARCHITECTURE.md names the invariant each check keeps. Test modules
//! (`#[cfg(test)] mod … { … }`) are left out: a test may read a clock to make a
//! base instant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, by path relative to the crate, without its
/// test module.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"), without_test_modules(&text))
        })
        .collect()
}

/// `text` without its `#[cfg(test)] mod … { … }` blocks (matched by braces).
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else { break };
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

/// Code without comments, so a doc comment may name what the code must not use.
fn code_only(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The lines of `text` that use one of `forbidden`.
fn offences(text: &str, forbidden: &[&str]) -> Vec<String> {
    code_only(text)
        .lines()
        .filter(|line| forbidden.iter().any(|f| line.contains(f)))
        .map(|line| line.trim().to_owned())
        .collect()
}

/// Applies one rule to every file `applies` selects; fails naming each offence.
fn check(rule: &str, applies: impl Fn(&str) -> bool, forbidden: &[&str]) {
    let found: Vec<String> = sources()
        .iter()
        .filter(|(path, _)| applies(path))
        .flat_map(|(path, text)| offences(text, forbidden).into_iter().map(move |line| format!("{path}: {line}")))
        .collect();
    assert!(found.is_empty(), "{rule}:\n{}", found.join("\n"));
}

#[test]
fn the_core_does_no_io_reads_no_clock_and_uses_nothing_outside_itself() {
    let files = sources().into_keys().filter(|p| p.starts_with("src/core/")).count();
    assert!(files >= 5, "the core's files are found ({files})");
    check(
        "src/core/ is pure",
        |p| p.starts_with("src/core/"),
        &[
            "sea_orm", "actix", "awc", "tokio", "Instant::now", "SystemTime", "Utc::now", "std::fs", "std::net",
            "std::thread", "crate::supervisor", "crate::front", "crate::tools", "crate::config", "crate::metrics",
            "crate::app",
        ],
    );
}

#[test]
fn the_front_touches_the_database_only_in_the_status_reads() {
    check(
        "only src/front/api/status.rs reads the database",
        |p| p.starts_with("src/front/") && p != "src/front/api/status.rs",
        &["sea_orm", "store::", "DatabaseConnection", "entity::"],
    );
}

#[test]
fn the_proxy_touches_no_database_and_no_actor() {
    check(
        "the request path has no database, store or actor round trip",
        |p| p.starts_with("src/front/proxy/"),
        &["sea_orm", "store", "DatabaseConnection", "entity::", "actix::", "supervisor::actors", "Addr<"],
    );
}

#[test]
fn the_supervisor_never_reaches_into_the_front_or_the_tools() {
    check(
        "src/supervisor/ depends on core only",
        |p| p.starts_with("src/supervisor/"),
        &["crate::front", "crate::tools", "crate::app"],
    );
}

#[test]
fn queries_live_in_the_store_only() {
    check(
        "SeaORM entities and query traits are used in src/supervisor/store.rs only",
        |p| p != "src/supervisor/store.rs",
        &["entity::", "EntityTrait", "QueryFilter", "QuerySelect", "ConnectionTrait", "ActiveModel"],
    );
}

#[test]
fn only_the_cluster_actor_writes_through_the_store() {
    check(
        "store::write, store::record_event and the lease's writes are called from the ClusterActor only",
        |p| p != "src/supervisor/actors/cluster.rs" && p != "src/supervisor/store.rs",
        &[
            "store::write",
            "store::record_event",
            "store::acquire_lease",
            "store::renew_lease",
            "store::release_lease",
            "store::fence",
            "store::next_generation",
        ],
    );
}

#[test]
fn the_node_actor_holds_no_database_handle() {
    check(
        "the NodeActor reports transitions and holds no database",
        |p| p == "src/supervisor/actors/node.rs",
        &["sea_orm", "store", "DatabaseConnection"],
    );
}

/// The module a source file defines: `src/front/api/mod.rs` → `front::api`.
fn module_of(path: &str) -> String {
    let rel = path.trim_start_matches("src/").trim_end_matches(".rs");
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    match rel {
        "lib" | "main" => String::new(),
        _ => rel.replace('/', "::"),
    }
}

/// Every path a file names through `crate::` or `super::`, with `use` groups
/// (`a::{b, c::d}`) expanded, made absolute.
fn referenced_paths(module: &str, text: &str) -> Vec<String> {
    let code = code_only(text);
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(start) = ["crate::", "super::"].iter().filter_map(|p| rest.find(p)).min() {
        let tail = &rest[start..];
        let end = path_end(tail);
        expand(&tail[..end], &mut paths);
        rest = &tail[end..];
    }
    paths.into_iter().filter_map(|p| absolute(module, &p)).collect()
}

/// The length of the path at the start of `text`, including a balanced `{...}` group.
fn path_end(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    text.len()
}

fn expand(path: &str, out: &mut Vec<String>) {
    let Some(open) = path.find('{') else {
        out.push(path.trim_end_matches(':').to_owned());
        return;
    };
    let (prefix, group) = (&path[..open], &path[open + 1..path.len() - 1]);
    let mut depth = 0;
    let mut item = String::new();
    for c in group.chars().chain(std::iter::once(',')) {
        match c {
            ',' if depth == 0 => {
                let item = std::mem::take(&mut item);
                let item = item.trim();
                match item {
                    "" => {}
                    "self" => out.push(prefix.trim_end_matches(':').to_owned()),
                    _ => expand(&format!("{prefix}{item}"), out),
                }
            }
            '{' => {
                depth += 1;
                item.push(c);
            }
            '}' => {
                depth -= 1;
                item.push(c);
            }
            _ => item.push(c),
        }
    }
}

/// `super::x` seen from `module`, or `crate::x`, as a path from the crate root.
fn absolute(module: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    let mut rest = path;
    if let Some(r) = rest.strip_prefix("crate::") {
        parts.clear();
        rest = r;
    } else {
        while let Some(r) = rest.strip_prefix("super::") {
            parts.pop()?;
            rest = r;
        }
    }
    parts.extend(rest.split("::").filter(|s| !s.is_empty()));
    Some(parts.join("::"))
}

/// Module → the modules it uses, leaving out its own submodules (a module
/// declares and uses its children; that is not a cycle).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let modules: BTreeSet<String> = files.keys().map(|p| module_of(p)).filter(|m| !m.is_empty()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        let from = module_of(path);
        if from.is_empty() {
            continue;
        }
        for target in referenced_paths(&from, text) {
            // the longest module that is a prefix of the path
            let Some(to) = modules
                .iter()
                .filter(|m| target == **m || target.starts_with(&format!("{m}::")))
                .max_by_key(|m| m.len())
            else {
                continue;
            };
            let own_child = to.starts_with(&format!("{from}::"));
            if *to != from && !own_child {
                graph.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    graph
}

/// One cycle of `graph`, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = module_graph();
    assert!(graph.get("front::server").is_some_and(|uses| uses.contains("front::api")), "the graph is read: {graph:#?}");
    assert!(graph.get("core::reconcile").is_some_and(|uses| uses.contains("core::model")), "the graph is read: {graph:#?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("modules import each other: {}", cycle.join(" → "));
    }
}

#[test]
fn the_checks_catch_what_they_are_meant_to() {
    assert_eq!(offences("let t = std::time::Instant::now(); // fine", &["Instant::now"]).len(), 1);
    assert!(offences("/// never Instant::now here", &["Instant::now"]).is_empty(), "comments do not count");
    let file = "fn a() {}\n#[cfg(test)]\nmod tests {\n fn t() { let x = Instant::now(); { } }\n}\nfn b() { Instant::now(); }\n";
    assert_eq!(offences(&without_test_modules(file), &["Instant::now"]), ["fn b() { Instant::now(); }"], "code after a test module counts");
    let paths = referenced_paths("front::api::actions", "use super::{status::capacity_of, apply};\nuse crate::core::{model::{A, B}, reconcile};");
    assert_eq!(
        paths,
        ["front::api::status::capacity_of", "front::api::apply", "core::model::A", "core::model::B", "core::reconcile"]
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(find_cycle(&graph), Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()]));
    graph.get_mut("b").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}
