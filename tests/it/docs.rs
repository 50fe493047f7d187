//! The documents agree with the code and with each other:
//! - `docs/configuration.md` lists every argument of every subcommand, with the environment
//!   variable and the default that clap has, and nothing clap lacks;
//! - every link in README.md, docs/ and the other top-level documents leads to a file of the
//!   repository (and, with an anchor, to one of its headings): none leaves it (the running
//!   service at `http://localhost` aside), since these documents state the contract themselves;
//! - the README stays short;
//! - no file cites the upstream contract by its section numbers: these documents are the
//!   contract now;
//! - the shipped deployments are safe where they run: compose publishes on 127.0.0.1 unless told
//!   otherwise, and the PostgreSQL compose file and the Kubernetes Deployment take `API_TOKEN`
//!   from the operator's secrets.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use regex::Regex;
use webhook_inbox::cli::Cli;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One row of a configuration table: flag, variable (`—` for none), default (`unset` for none).
type Setting = (String, String, String);

#[test]
fn the_configuration_document_lists_every_argument_as_clap_has_it() {
    let documented = documented_settings(&read("docs/configuration.md"));
    let actual = clap_settings();
    let missing: Vec<&Setting> = actual.difference(&documented).collect();
    let unknown: Vec<&Setting> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md disagrees with clap.\nmissing or different there: {missing:#?}\n\
         documented but not in clap: {unknown:#?}"
    );
}

#[test]
fn every_link_of_the_documents_leads_into_the_repository() {
    let mut broken = Vec::new();
    for document in documents() {
        let text = read(&document);
        for target in link_targets(&text) {
            if let Err(why) = check_link(&document, &target) {
                broken.push(format!("{document}: {target} ({why})"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_short() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 230,
        "README.md has {lines} lines; details belong in docs/"
    );
}

#[test]
fn no_file_cites_the_upstream_contract() {
    // Built from pieces, so that this file does not cite it either.
    let citation = Regex::new(&format!(r"{}{}(\s[AB][0-9]|\.md)", "SP", "EC")).expect("regex");
    let mut files = Vec::new();
    for folder in ["src", "crates", "tests/it", "docs", "bench", "deploy", "assets"] {
        collect_files(&Path::new(ROOT).join(folder), &mut files);
    }
    files.extend(documents().iter().map(|document| Path::new(ROOT).join(document)));
    let citing: Vec<String> = files
        .iter()
        .filter(|file| std::fs::read_to_string(file).is_ok_and(|text| citation.is_match(&text)))
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        citing.is_empty(),
        "these files cite the upstream contract: {citing:#?}"
    );
}

/// What the security review asked of the deployment files (SECURITY.md, "Review").
#[test]
fn the_shipped_deployments_publish_locally_and_require_the_read_token() {
    let local_compose = read("docker-compose.yml");
    let published: Vec<&str> = local_compose
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("- \"") && line.contains(":8000:8000"))
        .collect();
    assert_eq!(published, ["- \"${BIND_ADDRESS:-127.0.0.1}:8000:8000\""]);

    let replicas_compose = read("deploy/docker-compose.yml");
    assert!(
        replicas_compose.contains("API_TOKEN: ${API_TOKEN:?"),
        "deploy/docker-compose.yml must refuse to start without API_TOKEN"
    );
    assert!(
        !replicas_compose.contains("\"8000:8000\"") && !replicas_compose.contains("- 8000:8000"),
        "deploy/docker-compose.yml publishes on every interface"
    );

    let deployment = read("deploy/k8s/deployment.yaml");
    assert!(deployment.contains("secretRef:\n                name: webhook-inbox"));
    let secret = read("deploy/k8s/secret.yaml");
    assert!(
        secret
            .lines()
            .any(|line| line.trim_start().starts_with("API_TOKEN:"))
    );
}

fn collect_files(folder: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        if path.is_dir() {
            if !path.ends_with("node_modules") && !path.ends_with("target") {
                collect_files(&path, files);
            }
        } else {
            files.push(path);
        }
    }
}

#[test]
fn the_link_check_catches_a_missing_file_and_a_missing_heading() {
    assert!(resolve("README.md", "docs/api.md").is_ok());
    assert!(resolve("README.md", "docs/no-such-page.md").is_err());
    assert!(resolve("README.md", "docs/api.md#no-such-heading").is_err());
    assert!(resolve("docs/api.md", "../README.md").is_ok());
    assert!(resolve("docs/api.md", "../../outside.md").is_err());
    assert!(check_link("README.md", "https://example.com/").is_err());
    assert!(check_link("README.md", "mailto:someone@example.com").is_err());
    assert!(check_link("README.md", "http://localhost:8000/").is_ok());
}

/// A link is fine when it leads to the running service or into the repository.
fn check_link(document: &str, target: &str) -> Result<(), String> {
    if target.starts_with("http://localhost") {
        return Ok(());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return Err("outside the repository".to_owned());
    }
    resolve(document, target)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// The repository's own documents: the top-level `*.md` files and `docs/*.md`.
fn documents() -> Vec<String> {
    let mut documents = Vec::new();
    for folder in ["", "docs"] {
        let entries = std::fs::read_dir(Path::new(ROOT).join(folder)).expect("read a folder");
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".md") {
                documents.push(if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                });
            }
        }
    }
    documents.sort();
    documents
}

/// The targets of the inline links `[text](target)` and images, outside code blocks and spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let link = Regex::new(r"\]\(([^)\s]+)\)").expect("regex");
    let code_span = Regex::new(r"`[^`]*`").expect("regex");
    let mut in_code_block = false;
    let mut targets = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        let prose = code_span.replace_all(line, "");
        targets.extend(link.captures_iter(&prose).map(|found| found[1].to_owned()));
    }
    targets
}

/// Checks that `target`, linked from `document`, names a file in the repository and, after a
/// `#`, one of its headings.
fn resolve(document: &str, target: &str) -> Result<(), String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let root = Path::new(ROOT)
        .canonicalize()
        .map_err(|error| error.to_string())?;
    let file: PathBuf = if path.is_empty() {
        root.join(document)
    } else {
        let base = root.join(document);
        let joined = base.parent().unwrap_or(&root).join(path);
        joined.canonicalize().map_err(|_| "no such file".to_owned())?
    };
    if !file.starts_with(&root) {
        return Err("outside the repository".to_owned());
    }
    let Some(anchor) = anchor else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&file).map_err(|_| "not a readable file".to_owned())?;
    if heading_anchors(&text).contains(anchor) {
        Ok(())
    } else {
        Err(format!("no heading for #{anchor}"))
    }
}

/// The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as
/// hyphens, a repeated one numbered.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    let mut in_code_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !in_code_block) else {
            continue;
        };
        let title = heading.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// Every row of every table headed `| Flag | Variable | Default | What it changes |`.
fn documented_settings(markdown: &str) -> BTreeSet<Setting> {
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let mut settings = BTreeSet::new();
    let mut in_table = false;
    for line in markdown.lines() {
        if line.starts_with("| Flag | Variable | Default | What it changes |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        if !in_table || cells.len() < 4 || cells[0].trim().starts_with("---") {
            continue;
        }
        settings.insert((unquote(cells[0]), unquote(cells[1]), unquote(cells[2])));
    }
    settings
}

/// Every argument with a long flag of every subcommand, as documented rows would show it.
fn clap_settings() -> BTreeSet<Setting> {
    let mut settings = BTreeSet::new();
    let mut commands = vec![Cli::command()];
    while let Some(command) = commands.pop() {
        for argument in command.get_arguments() {
            let Some(long) = argument.get_long() else {
                continue;
            };
            if matches!(long, "help" | "version") {
                continue;
            }
            let variable = argument
                .get_env()
                .map_or_else(|| "—".to_owned(), |env| env.to_string_lossy().into_owned());
            let defaults: Vec<String> = argument
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            let default = if defaults.is_empty() {
                "unset".to_owned()
            } else {
                defaults.join(",")
            };
            settings.insert((format!("--{long}"), variable, default));
        }
        commands.extend(command.get_subcommands().cloned());
    }
    settings
}
