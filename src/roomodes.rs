//! The `modes` command's data: Roo Code custom modes imported as `modes/<slug>.md`, and the
//! list of an instance's modes with the schedules that use them.
//!
//! A `.roomodes` file (Roo Code's project modes; JSON or YAML) holds `customModes`, each with
//! `slug`, `name`, `roleDefinition`, and optionally `whenToUse`, `description`,
//! `customInstructions`, `groups` (tool permissions) and `rulesFiles` (`{relativePath,
//! content}`, as Roo Code exports a mode). Source: RooCodeInc/Roo-Code
//! packages/types/src/mode.ts (`modeConfigSchema`) and src/core/config/CustomModesManager.ts
//! (`ExportedModeConfig`, `.roo/rules-<slug>/`).
//!
//! Rules:
//! - The mode's instructions are its role definition, then when to use it, its description,
//!   its custom instructions, and its rules: `rulesFiles`, then the files of
//!   `.roo/rules-<slug>/` beside the `.roomodes` file (recursively, in path order), as Roo
//!   Code appends them. `groups` is kept as a comment: the agent's own permission flags
//!   decide what it may do.
//! - Every written file is one that `Config::load` accepts, running the chosen agent preset.
//! - Nothing is written when any mode has a problem (a file that cannot be read as JSON or
//!   YAML, a duplicate slug, a slug that is not a mode slug); each problem names the file,
//!   line and column.
//! - An existing `modes/<slug>.md` is never overwritten unless `force`; it is reported as
//!   skipped. A new file is created exclusively; a forced one replaces the old by rename.
//!
//! YAML is read with `yaml_serde`, the YAML organisation's maintained continuation of the
//! archived serde_yaml (steady 0.10 releases), which reports the line and column of an
//! error and builds with this crate's minimum Rust. Of the other forks, serde_yaml_ng and
//! serde_norway are each one person's fork, and serde-saphyr needs a newer Rust than this
//! crate's `rust-version`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::agent::Agent;
use crate::config::{Config, MODES_DIR, Problem};
use crate::mode::Mode;
use crate::schedule::is_slug;

#[derive(Debug, Deserialize)]
struct RooModes {
    #[serde(rename = "customModes")]
    custom_modes: Vec<RooMode>,
}

/// One custom mode as Roo Code writes it. Fields Roo Code adds that this import does not use
/// (`source`) are ignored, as Roo Code ignores unknown ones.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RooMode {
    slug: String,
    name: String,
    role_definition: String,
    when_to_use: Option<String>,
    description: Option<String>,
    custom_instructions: Option<String>,
    #[serde(default)]
    groups: Vec<serde_json::Value>,
    #[serde(default)]
    rules_files: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleFile {
    relative_path: String,
    content: String,
}

/// What an import did, by path relative to the instance (`modes/<slug>.md`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub written: Vec<String>,
    /// Files that existed and were kept (no `force`).
    pub skipped: Vec<String>,
}

/// Imports the modes of the `.roomodes` file `file` into `dir/modes/`, running `agent`.
pub fn import(
    dir: &Path,
    file: &Path,
    agent: Agent,
    force: bool,
) -> Result<ImportReport, Vec<Problem>> {
    let shown = file.display().to_string();
    let problem = |line, column, message: String| Problem {
        file: shown.clone(),
        line,
        column,
        message,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|err| vec![problem(1, 1, format!("cannot read: {err}"))])?;
    let modes =
        parse(&text).map_err(|(line, column, message)| vec![problem(line, column, message)])?;

    let mut problems = Vec::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for mode in &modes {
        let nth = seen.entry(&mode.slug).or_default();
        let (line, column) = slug_position(&text, &mode.slug, *nth);
        *nth += 1;
        if !is_slug(&mode.slug) {
            problems.push(problem(
                line,
                column,
                format!(
                    "slug {:?} is not a mode slug (use lowercase letters, digits, '-' and '_')",
                    mode.slug
                ),
            ));
        } else if let Some(first_line) = first.get(mode.slug.as_str()) {
            problems.push(problem(
                line,
                column,
                format!(
                    "duplicate slug {:?} (first used on line {first_line})",
                    mode.slug
                ),
            ));
        } else {
            first.insert(&mode.slug, line);
        }
    }
    let rules_root = file.parent().unwrap_or(Path::new(".")).join(".roo");
    let mut files = Vec::new();
    for mode in &modes {
        let markdown = render(mode, agent, &rules_root);
        let target = dir.join(MODES_DIR).join(format!("{}.md", mode.slug));
        // A file this import writes must load: checked before anything is written.
        if let Err(p) = Mode::parse(&mode.slug, &target, &markdown) {
            let (line, column) = slug_position(&text, &mode.slug, 0);
            problems.push(problem(
                line,
                column,
                format!("mode {:?} would not load: {}", mode.slug, p.message),
            ));
        }
        files.push((mode.slug.clone(), target, markdown));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut report = ImportReport::default();
    let write_problem = |path: &Path, err: std::io::Error| {
        vec![Problem {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            message: format!("cannot write: {err}"),
        }]
    };
    std::fs::create_dir_all(dir.join(MODES_DIR))
        .map_err(|err| write_problem(&dir.join(MODES_DIR), err))?;
    for (slug, target, markdown) in files {
        let rel = format!("{MODES_DIR}/{slug}.md");
        if force {
            replace(&target, &markdown).map_err(|err| write_problem(&target, err))?;
        } else {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target);
            match created {
                Ok(mut out) => out
                    .write_all(markdown.as_bytes())
                    .and_then(|()| out.sync_all())
                    .map_err(|err| write_problem(&target, err))?,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    report.skipped.push(rel);
                    continue;
                }
                Err(err) => return Err(write_problem(&target, err)),
            }
        }
        report.written.push(rel);
    }
    Ok(report)
}

/// The modes of a `.roomodes` text, or the line, column and message of why not. A document
/// that starts with `{` is JSON (as Roo Code writes it), anything else YAML.
fn parse(text: &str) -> Result<Vec<RooMode>, (usize, usize, String)> {
    let text = text.trim_start_matches('\u{feff}');
    if text.trim_start().starts_with('{') {
        serde_json::from_str::<RooModes>(text)
            .map(|m| m.custom_modes)
            .map_err(|err| {
                let message = err.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |at| &message[..at])
                    .to_string();
                (
                    err.line().max(1),
                    err.column().max(1),
                    format!("invalid JSON: {message}"),
                )
            })
    } else {
        yaml_serde::from_str::<RooModes>(text)
            .map(|m| m.custom_modes)
            .map_err(|err| {
                let (line, column) = err
                    .location()
                    .map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
                let message = err.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |at| &message[..at])
                    .to_string();
                (line, column, format!("invalid YAML: {message}"))
            })
    }
}

/// Line and column of the `nth` `slug: <slug>` (YAML) or `"slug": "<slug>"` (JSON) entry.
fn slug_position(text: &str, slug: &str, nth: usize) -> (usize, usize) {
    let pattern = format!(
        r#"["']?slug["']?\s*:\s*["']?{}["']?(\s|,|$|\}})"#,
        regex::escape(slug)
    );
    Regex::new(&pattern)
        .ok()
        .and_then(|re| re.find_iter(text).nth(nth))
        .map_or((1, 1), |m| crate::mode::line_col(text, m.start()))
}

/// The `modes/<slug>.md` text of a Roo Code mode.
fn render(mode: &RooMode, agent: Agent, rules_root: &Path) -> String {
    let toml_string = |s: &str| toml::Value::String(s.to_string()).to_string();
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let groups: Vec<String> = mode.groups.iter().map(group_name).collect();
    let mut out = format!(
        "+++\nname = {}\nagent = \"{agent}\"\n# Imported from the Roo Code mode {}; its tool groups: {}.\n+++\n# {}\n\n{}\n",
        toml_string(&mode.name),
        toml_string(&mode.slug),
        if groups.is_empty() {
            "none".to_string()
        } else {
            one_line(&groups.join(", "))
        },
        one_line(&mode.name),
        mode.role_definition.trim(),
    );
    for (heading, text) in [
        ("When to use", &mode.when_to_use),
        ("Description", &mode.description),
        ("Instructions", &mode.custom_instructions),
    ] {
        if let Some(text) = text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            out.push_str(&format!("\n## {heading}\n\n{text}\n"));
        }
    }
    let mut rules: Vec<(String, String)> = mode
        .rules_files
        .iter()
        .map(|r| (r.relative_path.clone(), r.content.clone()))
        .collect();
    let dir = rules_root.join(format!("rules-{}", mode.slug));
    let mut found = Vec::new();
    collect_files(&dir, &mut found, 0);
    found.sort();
    for path in found {
        if let Ok(bytes) = std::fs::read(&path) {
            let rel = path.strip_prefix(&dir).unwrap_or(&path).display();
            let name = format!(".roo/rules-{}/{rel}", mode.slug);
            rules.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let rules: Vec<_> = rules
        .into_iter()
        .filter(|(_, content)| !content.trim().is_empty())
        .collect();
    if !rules.is_empty() {
        out.push_str("\n## Rules\n");
        for (name, content) in rules {
            out.push_str(&format!(
                "\n### {}\n\n{}\n",
                one_line(&name),
                content.trim()
            ));
        }
    }
    out
}

/// A `groups` entry: `"edit"`, or `["edit", {"fileRegex": "\\.md$", "description": ...}]`.
fn group_name(group: &serde_json::Value) -> String {
    match group {
        serde_json::Value::String(name) => name.clone(),
        serde_json::Value::Array(parts) => {
            let name = parts.first().and_then(|n| n.as_str()).unwrap_or("?");
            match parts
                .get(1)
                .and_then(|o| o.get("fileRegex"))
                .and_then(|r| r.as_str())
            {
                Some(regex) => format!("{name} (files matching {regex})"),
                None => name.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// Files under `dir`, recursively, skipping hidden ones; symlinks are not followed into
/// directories, and the depth is bounded.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth < 8 {
            collect_files(&entry.path(), out, depth + 1);
        } else if kind.is_file() || kind.is_symlink() && entry.path().is_file() {
            out.push(entry.path());
        }
    }
}

/// Writes `text` to a temp file beside `target`, flushes it, and renames it over `target`.
fn replace(target: &Path, text: &str) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.import-{}", std::process::id()));
    let result = (|| {
        let mut out = std::fs::File::create(&temp)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temp, target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// One line of `modes list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeListing {
    pub slug: String,
    pub name: String,
    /// `agent claude` or `command cargo test --quiet`.
    pub runs: String,
    /// The schedules whose pipeline includes the mode, in file order.
    pub schedules: Vec<String>,
}

/// Every mode of the configuration, with what it runs and which schedules use it.
pub fn list(config: &Config) -> Vec<ModeListing> {
    config
        .modes
        .values()
        .map(|mode| ModeListing {
            slug: mode.slug.clone(),
            name: mode.name.clone(),
            runs: if mode.agents.is_empty() {
                format!("command {}", mode.commands[0].join(" "))
            } else {
                let names: Vec<&str> = mode.agents.iter().map(|a| a.name()).collect();
                format!("agent {}", names.join(", "))
            },
            schedules: config
                .schedules
                .iter()
                .filter(|s| s.modes.contains(&mode.slug))
                .map(|s| s.id.clone())
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "customModes:
  - slug: docs-writer
    name: 📝 Docs Writer
    roleDefinition: >-
      You write technical documentation.
    whenToUse: When docs need writing.
    groups:
      - read
      - - edit
        - fileRegex: \\.md$
          description: Markdown only
    rulesFiles:
      - relativePath: style.md
        content: Use short sentences.
  - slug: Reviewer
    name: Reviewer
    roleDefinition: You review.
    groups: []
  - slug: docs-writer
    name: Again
    roleDefinition: Twice.
    groups: []
";

    #[test]
    fn problems_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".roomodes");
        std::fs::write(&file, YAML).unwrap();
        let problems = import(dir.path(), &file, Agent::Claude, false).unwrap_err();
        let messages: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("15:5: slug \"Reviewer\" is not a mode slug"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("19:5: duplicate slug \"docs-writer\" (first used on line 2)"),
            "{messages:?}"
        );
        assert!(!dir.path().join("modes").exists(), "nothing written");
    }

    #[test]
    fn renders_role_rules_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".roomodes");
        std::fs::write(&file, YAML.split("  - slug: Reviewer").next().unwrap()).unwrap();
        let rules = dir.path().join(".roo/rules-docs-writer/nested");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("b.md"), "Link every page.").unwrap();
        std::fs::write(
            dir.path().join(".roo/rules-docs-writer/a.md"),
            "Spell check.",
        )
        .unwrap();
        let report = import(dir.path(), &file, Agent::Codex, false).unwrap();
        assert_eq!(report.written, vec!["modes/docs-writer.md"]);
        let text = std::fs::read_to_string(dir.path().join("modes/docs-writer.md")).unwrap();
        let mode = Mode::parse("docs-writer", Path::new("x"), &text).unwrap();
        assert_eq!(mode.agents, [Agent::Codex]);
        assert_eq!(mode.name, "📝 Docs Writer");
        assert!(
            text.contains("its tool groups: read, edit (files matching \\.md$)."),
            "{text}"
        );
        let order = [
            "You write technical documentation.",
            "## When to use",
            "### style.md\n\nUse short sentences.",
            "### .roo/rules-docs-writer/a.md\n\nSpell check.",
            "### .roo/rules-docs-writer/nested/b.md\n\nLink every page.",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|s| text.find(s).unwrap_or(usize::MAX))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn unreadable_yaml_and_json() {
        let err = parse("customModes:\n  - slug: [\n").unwrap_err();
        assert_eq!((err.0, err.1), (2, 11), "{err:?}");
        assert!(
            err.2
                .starts_with("invalid YAML: customModes[0].slug: invalid type"),
            "{err:?}"
        );
        let err = parse("customModes:\n  - slug: a\n    name: 'B\n").unwrap_err();
        assert!(err.0 >= 3 && err.2.starts_with("invalid YAML: "), "{err:?}");
        let (line, column, message) =
            parse("{\n  \"customModes\": [\n    { \"slug\": 1 }\n  ]\n}").unwrap_err();
        assert_eq!((line, column), (3, 15));
        assert!(
            message.starts_with("invalid JSON: invalid type"),
            "{message}"
        );
        let (_, _, message) =
            parse("customModes:\n  - slug: a\n    name: A\n    groups: []\n").unwrap_err();
        assert!(
            message.contains("missing field `roleDefinition`"),
            "{message}"
        );
    }
}
