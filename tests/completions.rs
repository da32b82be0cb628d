//! `completions SHELL` and `man`: the scripts load in a real bash and complete, the man
//! pages render with groff and name every command.

mod common;

use std::process::{Command, Stdio};

use clap::CommandFactory;
use common::{BIN, have, skip};

/// The commands of the CLI, as clap knows them (without clap's own `help`).
fn subcommands() -> Vec<String> {
    loop_orchestrator::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_commands_and_options() {
    if !have("bash") && skip("bash is not installed") {
        return;
    }
    // The function `complete -p` names is called as bash calls it for a completion:
    // COMP_WORDS/COMP_CWORD set, arguments (command, word, previous word).
    let script = format!(
        r#"set -e
source <("{BIN}" completions bash)
fn=$(complete -p loop-orchestrator | sed -E 's/.* -F ([^ ]+) .*/\1/')
words() {{
  COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}
  COMPREPLY=()
  "$fn" loop-orchestrator "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
  echo "${{COMPREPLY[*]}}"
}}
words loop-orchestrator ru
words loop-orchestrator memory p
words loop-orchestrator serve --metrics-a
words loop-orchestrator completions z
words loop-orchestrator m
"#
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let starting_with_m: Vec<String> = subcommands()
        .into_iter()
        .filter(|c| c.starts_with('m'))
        .collect();
    assert!(starting_with_m.len() >= 2, "{starting_with_m:?}");
    assert_eq!(
        lines,
        [
            "run-cycle",
            "prune",
            "--metrics-allow-remote",
            "zsh",
            &starting_with_m.join(" ")
        ],
        "{}",
        common::text(&out)
    );
}

#[test]
fn every_shell_gets_a_script_naming_the_commands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", common::text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for command in subcommands() {
            assert!(script.contains(&command), "{shell}: no {command}");
        }
    }
    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        if !have(shell) {
            eprintln!("note: {shell} is not installed; its script's syntax is not checked");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        std::fs::write(&path, &out.stdout).unwrap();
        let checked = Command::new(shell).args(check).arg(&path).output().unwrap();
        assert!(
            checked.status.success(),
            "{shell}: {}",
            common::text(&checked)
        );
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
}

/// The page rendered as plain text by groff (`-k`: UTF-8 input through preconv, as `man`
/// runs it; `-P-cbou`: no overstriking or escapes), typographic hyphens back to ASCII.
fn render(roff: &[u8]) -> String {
    let mut groff = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-rLL=200n", "-ww", "-P-cbou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    groff.stdin.take().unwrap().write_all(roff).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        out.stderr.is_empty(),
        "groff warned: {}",
        common::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2011}', '\u{2212}'], "-")
}

#[test]
fn the_man_pages_render_and_name_every_command() {
    if !have("groff") && skip("groff is not installed (apt-get install groff)") {
        return;
    }
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let page = render(&out.stdout);
    assert!(
        page.contains("A cron supervisor for autonomous work loops"),
        "{page}"
    );
    for command in subcommands() {
        assert!(
            page.contains(&format!("loop-orchestrator-{command}(1)")),
            "the page does not name {command}:\n{page}"
        );
    }
    // Every page those names point to is written by --out-dir, and renders.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    for command in subcommands() {
        let path = dir.path().join(format!("loop-orchestrator-{command}.1"));
        let roff = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let page = render(&roff);
        assert!(
            page.contains(&format!("loop-orchestrator-{command}")),
            "{page}"
        );
    }
    let serve = render(&std::fs::read(dir.path().join("loop-orchestrator-serve.1")).unwrap());
    assert!(serve.contains("--metrics-allow-remote"), "{serve}");
}
