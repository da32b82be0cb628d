//! `modes import` and `modes list` through the real binary: Roo Code `.roomodes` files (JSON
//! and YAML) become mode files that `validate` accepts, and nothing is overwritten without
//! `--force`.

mod common;

use common::{Instance, text};

const JSON: &str = r#"{
  "customModes": [
    {
      "slug": "architect",
      "name": "🏗️ Architect",
      "roleDefinition": "You plan before anyone builds.",
      "whenToUse": "Before implementation.",
      "groups": ["read", ["edit", { "fileRegex": "\\.md$", "description": "Markdown only" }]],
      "source": "project"
    },
    {
      "slug": "tester",
      "name": "Tester",
      "roleDefinition": "You write tests first.",
      "customInstructions": "Run the whole suite before you stop.",
      "groups": ["read", "edit", "command"]
    },
    {
      "slug": "docs",
      "name": "Docs",
      "roleDefinition": "You keep the README true.",
      "groups": [],
      "rulesFiles": [{ "relativePath": "tone.md", "content": "Plain words." }]
    }
  ]
}
"#;

const YAML: &str = "customModes:
  - slug: security-review
    name: 🔒 Security Reviewer
    roleDefinition: >-
      You review code for security problems.
    description: Finds unsafe code.
    groups:
      - read
  - slug: perf
    name: Perf
    roleDefinition: |
      You measure before you optimise.
      Numbers, not guesses.
    groups: [read, command]
  - slug: release
    name: Release
    roleDefinition: You cut releases.
    customInstructions: Tag, then publish.
    groups: []
";

fn instance_with(slugs: &[&str]) -> Instance {
    let list: Vec<String> = slugs.iter().map(|s| format!("\"{s}\"")).collect();
    Instance::new(&format!(
        "[{{ \"id\": \"main\", \"task\": \"t\", \"modes\": [{}] }}]",
        list.join(", ")
    ))
}

/// Imports `source` (written as `name`) and checks the three files and `validate`.
fn imports_three(name: &str, source: &str, slugs: [&str; 3], agent: &str) {
    let inst = instance_with(&slugs);
    inst.write(name, source);
    inst.write(
        &format!(".roo/rules-{}/extra.md", slugs[2]),
        "A rule from the rules folder.",
    );
    let file = inst.path().join(name);
    let file = file.to_str().unwrap();

    let out = inst.run(&["modes", "import", file, "--agent", agent]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for slug in slugs {
        let mode = inst.read(&format!("modes/{slug}.md"));
        assert!(
            mode.contains(&format!("agent = \"{agent}\"")),
            "{slug}:\n{mode}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("wrote modes/{slug}.md")),
            "{}",
            text(&out)
        );
    }
    assert!(
        inst.read(&format!("modes/{}.md", slugs[2]))
            .contains("A rule from the rules folder.")
    );
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 mode(s)"),
        "{}",
        text(&out)
    );

    // A second import without --force changes nothing and says so.
    let before: Vec<(String, std::time::SystemTime)> = slugs
        .iter()
        .map(|slug| {
            let path = inst.path().join(format!("modes/{slug}.md"));
            (
                std::fs::read_to_string(&path).unwrap(),
                std::fs::metadata(&path).unwrap().modified().unwrap(),
            )
        })
        .collect();
    inst.write(
        &format!("modes/{}.md", slugs[0]),
        &before[0].0.replace("# ", "# Edited "),
    );
    let edited = inst.read(&format!("modes/{}.md", slugs[0]));
    let out = inst.run(&["modes", "import", file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept modes/"),
        "{}",
        text(&out)
    );
    assert_eq!(inst.read(&format!("modes/{}.md", slugs[0])), edited);
    for (slug, (content, modified)) in slugs.iter().zip(&before).skip(1) {
        let path = inst.path().join(format!("modes/{slug}.md"));
        assert_eq!(&std::fs::read_to_string(&path).unwrap(), content);
        assert_eq!(
            &std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
    }

    // --force replaces them.
    let out = inst.run(&["modes", "import", file, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        inst.read(&format!("modes/{}.md", slugs[0])),
        before[0].0.replace(agent, "claude")
    );
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn json_roomodes_with_three_modes() {
    imports_three(".roomodes", JSON, ["architect", "tester", "docs"], "codex");
}

#[test]
fn yaml_roomodes_with_three_modes() {
    imports_three(
        "roomodes.yaml",
        YAML,
        ["security-review", "perf", "release"],
        "gemini",
    );
}

#[test]
fn list_shows_agent_or_command_and_schedules() {
    let inst = instance_with(&["architect", "tester"]);
    inst.write(".roomodes", JSON);
    inst.mode("build", "[\"cargo\", \"build\"]", "");
    let file = inst.path().join(".roomodes");
    let out = inst.run(&["modes", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = inst.run(&["modes", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |slug: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{slug} ")))
            .unwrap_or_else(|| panic!("no line for {slug} in:\n{stdout}"))
            .to_string()
    };
    assert!(line("architect").contains("agent claude"), "{stdout}");
    assert!(line("architect").ends_with("(used by: main)"), "{stdout}");
    assert!(line("docs").ends_with("(used by: no schedule)"), "{stdout}");
    assert!(line("build").contains("command cargo build"), "{stdout}");
}

#[test]
fn bad_input_names_file_line_and_column_and_writes_nothing() {
    let inst = instance_with(&["a"]);
    let bad = JSON
        .replace("\"slug\": \"tester\"", "\"slug\": \"Tester\"")
        .replace("\"slug\": \"docs\"", "\"slug\": \"architect\"");
    inst.write(".roomodes", &bad);
    let file = inst.path().join(".roomodes");
    let out = inst.run(&["modes", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = file.display();
    assert!(
        stderr.contains(&format!("{shown}:12:7: slug \"Tester\" is not a mode slug")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{shown}:19:7: duplicate slug \"architect\" (first used on line 4)"
        )),
        "{stderr}"
    );
    assert!(!inst.path().join("modes").exists(), "nothing written");

    inst.write(
        ".roomodes",
        "customModes:\n  - slug: x\n    name: X\n    roleDefinition: [\n",
    );
    let out = inst.run(&["modes", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{shown}:")),
        "{}",
        text(&out)
    );

    let out = inst.run(&[
        "modes",
        "import",
        file.to_str().unwrap(),
        "--agent",
        "cursor",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent \"cursor\""));
}
