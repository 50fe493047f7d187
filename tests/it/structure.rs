//! The service crate's files form no import cycle.
//!
//! Each file of `src/` is a node. A file depends on another when it names an item defined there:
//! through a `use`, a path in its code (`crate::clock::Clock::system()`), a child module's item
//! (`writer::run`) or its parent's (`super::Target`). A name re-exported by a `pub use` leads to
//! the file that defines it, so a `mod.rs` that re-exports its children is not in the way. Unit
//! tests (`#[cfg(test)]` items) are left out: they may reach anywhere. The check fails with the
//! files of each cycle and the reference behind every edge of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use regex::Regex;

#[test]
fn no_file_of_the_service_crate_is_in_an_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = import_cycles(&src);
    assert!(
        cycles.is_empty(),
        "import cycles between files of src/:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_check_finds_a_cycle_through_a_parent_and_its_child() {
    let tree = tempfile::tempdir().expect("temp dir");
    let write = |path: &str, text: &str| {
        let path = tree.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "pub mod store;\npub mod clock;\n");
    write("clock.rs", "pub struct Clock;\n");
    write(
        "store/mod.rs",
        "mod sqlite;\npub use sqlite::Sqlite;\npub struct Error;\npub fn open() -> Sqlite { sqlite::Sqlite::open() }\n",
    );
    write(
        "store/sqlite.rs",
        "use crate::clock::Clock;\n// super::Error in a comment is no reference\npub struct Sqlite;\nimpl Sqlite { pub fn open() -> Self { let _ = \"super::Error\"; Sqlite } }\n#[cfg(test)]\nmod tests { use super::super::Error; }\n",
    );
    assert_eq!(import_cycles(tree.path()), Vec::<String>::new());

    // The child now names an item of its parent, which calls into the child.
    write(
        "store/sqlite.rs",
        "use crate::clock::Clock;\npub struct Sqlite;\nimpl Sqlite { pub fn open() -> Self { let _ = super::Error; Sqlite } }\n",
    );
    let cycles = import_cycles(tree.path());
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].contains("store/mod.rs") && cycles[0].contains("store/sqlite.rs"),
        "{cycles:?}"
    );

    // Reaching the parent's item through its re-export of a sibling is no cycle.
    write(
        "store/mod.rs",
        "mod sqlite;\nmod error;\npub use error::Error;\npub use sqlite::Sqlite;\npub fn open() -> Sqlite { sqlite::Sqlite::open() }\n",
    );
    write("store/error.rs", "pub struct Error;\n");
    write(
        "store/sqlite.rs",
        "use crate::store::{self, Error};\npub struct Sqlite;\nimpl Sqlite { pub fn open() -> Self { let _: store::Error = Error; Sqlite } }\n",
    );
    assert_eq!(import_cycles(tree.path()), Vec::<String>::new());
}

/// One line per cycle: its files, then the reference behind each edge inside it.
pub fn import_cycles(src: &Path) -> Vec<String> {
    let crate_ = Crate::read(src);
    let edges = crate_.edges();
    strongly_connected(crate_.modules.len(), &edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let files: Vec<String> = component
                .iter()
                .map(|&module| crate_.modules[module].display(src))
                .collect();
            let inside: Vec<String> = edges
                .iter()
                .filter(|((from, to), _)| component.contains(from) && component.contains(to))
                .map(|((from, to), why)| {
                    format!(
                        "    {} -> {} ({why})",
                        crate_.modules[*from].display(src),
                        crate_.modules[*to].display(src)
                    )
                })
                .collect();
            format!("  {}\n{}", files.join(", "), inside.join("\n"))
        })
        .collect()
}

type ModulePath = Vec<String>;

/// One `use` leaf: the path as written and the name it brings into scope.
#[derive(Debug, Clone)]
struct Import {
    public: bool,
    path: Vec<String>,
    alias: String,
}

#[derive(Debug)]
struct Module {
    path: ModulePath,
    file: PathBuf,
    /// The code without comments, literals, unit tests and `use` declarations.
    code: String,
    imports: Vec<Import>,
    /// Names of items defined in the file (functions, types, constants, inline modules, macros).
    defines: BTreeSet<String>,
}

impl Module {
    fn display(&self, src: &Path) -> String {
        self.file
            .strip_prefix(src)
            .unwrap_or(&self.file)
            .display()
            .to_string()
    }
}

struct Crate {
    modules: Vec<Module>,
    by_path: HashMap<ModulePath, usize>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        collect_rust_files(src, &mut files);
        let modules: Vec<Module> = files
            .into_iter()
            .filter_map(|file| {
                let path = module_path(src, &file)?;
                let text = std::fs::read_to_string(&file).expect("read a source file");
                Some(Module::parse(path, file, &text))
            })
            .collect();
        let by_path = modules
            .iter()
            .enumerate()
            .map(|(index, module)| (module.path.clone(), index))
            .collect();
        Crate { modules, by_path }
    }

    /// Every edge between two files, with one reference that makes it.
    fn edges(&self) -> BTreeMap<(usize, usize), String> {
        let mut edges = BTreeMap::new();
        for (from, module) in self.modules.iter().enumerate() {
            let imported = module.imports.iter().map(|import| import.path.clone());
            let named = code_paths(&module.code);
            for written in imported.chain(named) {
                let Some(absolute) = self.absolute(from, &written) else {
                    continue;
                };
                if let Some(to) = self.defining_module(&absolute, 0)
                    && to != from
                {
                    edges.entry((from, to)).or_insert_with(|| written.join("::"));
                }
            }
        }
        edges
    }

    /// `written`, as it appears in `module`, from the crate root; `None` for other crates' paths.
    fn absolute(&self, module: usize, written: &[String]) -> Option<ModulePath> {
        let here = &self.modules[module].path;
        let (first, rest) = written.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().checked_sub(1)?].to_vec(),
            name if self.by_path.contains_key(&child(here, name)) => child(here, name),
            name => {
                let import = self.modules[module].imports.iter().find(|import| {
                    import.alias == name && import.path.first().map(String::as_str) != Some(name)
                })?;
                let mut imported = self.absolute(module, &import.path)?;
                imported.extend(rest.iter().cloned());
                return Some(imported);
            }
        };
        let mut rest = rest;
        while let Some((segment, tail)) = rest.split_first() {
            if segment != "super" {
                break;
            }
            base.pop()?;
            rest = tail;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module whose file defines the item `path` names, following `pub use` re-exports;
    /// `None` when `path` names a module itself.
    fn defining_module(&self, path: &[String], depth: usize) -> Option<usize> {
        let mut module = *self.by_path.get(&Vec::new())?;
        let mut walked = 0;
        while let Some(next) = path
            .get(walked)
            .and_then(|segment| self.by_path.get(&child(&self.modules[module].path, segment)))
        {
            module = *next;
            walked += 1;
        }
        let name = path.get(walked)?;
        let found = &self.modules[module];
        if found.defines.contains(name) || depth > 8 {
            return Some(module);
        }
        let reexport = found
            .imports
            .iter()
            .find(|import| import.public && &import.alias == name);
        match reexport.and_then(|import| self.absolute(module, &import.path)) {
            Some(mut target) => {
                target.extend(path[walked + 1..].iter().cloned());
                self.defining_module(&target, depth + 1).or(Some(module))
            }
            None => Some(module),
        }
    }
}

fn child(parent: &[String], name: &str) -> ModulePath {
    let mut path = parent.to_vec();
    path.push(name.to_owned());
    path
}

fn collect_rust_files(folder: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
        .expect("read a source folder")
        .map(|entry| entry.expect("folder entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// `lib.rs` is the root; `a/mod.rs` and `a.rs` are `a`. `main.rs` and `bin/` are other crates.
fn module_path(src: &Path, file: &Path) -> Option<ModulePath> {
    let relative = file.strip_prefix(src).ok()?;
    let mut segments: Vec<String> = relative
        .iter()
        .map(|segment| segment.to_string_lossy().into_owned())
        .collect();
    if segments.first().is_some_and(|first| first == "bin") || segments == ["main.rs"] {
        return None;
    }
    let last = segments.pop()?;
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        other => segments.push(other.strip_suffix(".rs")?.to_owned()),
    }
    Some(segments)
}

impl Module {
    fn parse(path: ModulePath, file: PathBuf, text: &str) -> Module {
        let code = without_test_items(&without_comments_and_literals(text));
        let use_statement = Regex::new(r"(?s)\b(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]+);").expect("regex");
        let mut imports = Vec::new();
        for statement in use_statement.captures_iter(&code) {
            let tree = compact_use_tree(&statement[2]);
            use_tree_leaves(&tree, &[], statement.get(1).is_some(), &mut imports);
        }
        let code = use_statement.replace_all(&code, " ").into_owned();
        let definition = Regex::new(
            r"\b(?:fn|struct|enum|trait|type|const|static|union|mod)\s+([A-Za-z_][A-Za-z0-9_]*)|macro_rules!\s*([A-Za-z_][A-Za-z0-9_]*)",
        )
        .expect("regex");
        let defines = definition
            .captures_iter(&code)
            .filter_map(|found| found.get(1).or_else(|| found.get(2)))
            .map(|name| name.as_str().to_owned())
            .collect();
        Module {
            path,
            file,
            code,
            imports,
            defines,
        }
    }
}

/// The leaves of a `use` tree written without spaces but around `as`: `a::{b,c::{self,D as E}}`.
fn use_tree_leaves(tree: &str, prefix: &[String], public: bool, leaves: &mut Vec<Import>) {
    for part in split_top_level(tree) {
        let (path_part, group) = match part.find("::{") {
            Some(at) if part.ends_with('}') => (&part[..at], Some(&part[at + 3..part.len() - 1])),
            _ => (part, None),
        };
        let (path_part, alias) = match path_part.split_once(" as ") {
            Some((path, alias)) => (path, Some(alias.to_owned())),
            None => (path_part, None),
        };
        let mut path = prefix.to_vec();
        path.extend(
            path_part
                .split("::")
                .filter(|segment| !segment.is_empty())
                .map(str::to_owned),
        );
        if let Some(group) = group {
            use_tree_leaves(group, &path, public, leaves);
            continue;
        }
        if path.last().is_some_and(|last| last == "self") {
            path.pop();
        }
        if path.last().is_some_and(|last| last == "*") || path.is_empty() {
            continue;
        }
        let alias = alias.unwrap_or_else(|| path.last().cloned().unwrap_or_default());
        leaves.push(Import { public, path, alias });
    }
}

/// A `use` tree with its whitespace removed, except the single spaces around `as`.
fn compact_use_tree(tree: &str) -> String {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut compact = String::new();
    for (index, word) in words.iter().enumerate() {
        let around_as = *word == "as" || words.get(index + 1) == Some(&"as");
        compact.push_str(word);
        if around_as && index + 1 < words.len() {
            compact.push(' ');
        }
    }
    compact
}

fn split_top_level(tree: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&tree[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[start..]);
    parts.into_iter().filter(|part| !part.is_empty()).collect()
}

/// Every `a::b::c` path in `code`, as its segments.
fn code_paths(code: &str) -> Vec<Vec<String>> {
    let path = Regex::new(r"(?:^|[^A-Za-z0-9_:])([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
        .expect("regex");
    path.captures_iter(code)
        .map(|found| found[1].split("::").map(str::to_owned).collect())
        .collect()
}

/// `text` with comments, string and character literals blanked out (newlines kept).
fn without_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(end) = raw_string_end(&chars, i) {
            out.push_str("\"\"");
            i = end;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where a raw string starting at `start` (`r"…"`, `r#"…"#`, `br"…"`) ends, if one starts there.
fn raw_string_end(chars: &[char], start: usize) -> Option<usize> {
    let preceded_by_name = start > 0 && (chars[start - 1].is_alphanumeric() || chars[start - 1] == '_');
    let mut i = start;
    if chars.get(i) == Some(&'b') {
        i += 1;
    }
    if preceded_by_name || chars.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
    i += hashes;
    if chars.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(chars.len())
}

/// `code` without the items marked `#[cfg(test)]` (up to their `;` or their closing brace).
fn without_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = match (item.find(';'), item.find('{')) {
            (Some(semicolon), Some(brace)) if semicolon < brace => semicolon + 1,
            (_, Some(brace)) => matching_brace(item, brace).map_or(item.len(), |close| close + 1),
            (Some(semicolon), None) => semicolon + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Tarjan's algorithm: the strongly connected components of the graph.
fn strongly_connected(nodes: usize, edges: &BTreeMap<(usize, usize), String>) -> Vec<Vec<usize>> {
    let mut successors = vec![Vec::new(); nodes];
    for (from, to) in edges.keys() {
        successors[*from].push(*to);
    }
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(node: usize, successors: &[Vec<usize>], state: &mut State) {
        state.index[node] = Some(state.next);
        state.low[node] = state.next;
        state.next += 1;
        state.stack.push(node);
        state.on_stack[node] = true;
        for &next in &successors[node] {
            match state.index[next] {
                None => {
                    visit(next, successors, state);
                    state.low[node] = state.low[node].min(state.low[next]);
                }
                Some(index) if state.on_stack[next] => state.low[node] = state.low[node].min(index),
                Some(_) => {}
            }
        }
        if Some(state.low[node]) == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            component.sort_unstable();
            state.components.push(component);
        }
    }
    let mut state = State {
        index: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in 0..nodes {
        if state.index[node].is_none() {
            visit(node, &successors, &mut state);
        }
    }
    state.components
}
