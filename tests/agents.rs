//! Agents as modes (SPEC §8) through the real binary: presets, false successes, rate limits
//! with fallbacks and pauses, daily budgets, tokens and cost, silence, unreadable output.
//!
//! The agents are the fakes in tests/fixtures (`fake-<agent>.sh`), which print what the real
//! CLIs print (tests/fixtures/agents/README.md names the source of every sample). To run a
//! preset as written, a directory of wrappers named `claude`, `codex`, `gemini` and `aider`
//! is put first on PATH. The real `claude` CLI, when installed, is run once without
//! credentials.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use common::{Instance, fixture, text};

const MODE: usize = 7;
const ATTEMPT: usize = 8;
const STATUS: usize = 9;
const EXIT: usize = 10;
const COST: usize = 11;
const NOTE: usize = 12;

/// An instance whose schedules.json has `top` (extra top-level fields, each ending in a comma)
/// and the schedules of `schedules` (a JSON array).
fn instance(top: &str, schedules: &str) -> Instance {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write(
        "schedules.json",
        &format!(
            "{{\n  \"version\": 1,\n  \"timezone\": \"UTC\",\n{top}\n  \"schedules\": {schedules}\n}}\n"
        ),
    );
    inst
}

/// A mode file with exactly this front matter.
fn mode(inst: &Instance, slug: &str, front: &str) {
    inst.write(
        &format!("modes/{slug}.md"),
        &format!("+++\n{front}\n+++\n# {slug}\nInstructions of {slug}.\n"),
    );
}

/// A mode `slug` running the fake claude that succeeds at a cost of $0.0123.
fn paying_claude_mode(inst: &Instance, slug: &str) {
    mode(
        inst,
        slug,
        &format!(
            "agent = \"claude\"\ncommand = {}",
            fake("claude", &["-p", "--output-format", "json", "success"])
        ),
    );
}

/// A TOML argv running a fake agent with these arguments.
fn fake(agent: &str, args: &[&str]) -> String {
    let mut argv = vec![format!("\"{}\"", fixture(&format!("fake-{agent}.sh")))];
    argv.extend(args.iter().map(|a| format!("\"{a}\"")));
    format!("[{}]", argv.join(", "))
}

/// A directory of executables named after the agents, each running its fake: first on PATH,
/// a mode that says only `agent = "claude"` runs the fake with the preset's argv.
struct FakeBin {
    dir: tempfile::TempDir,
}

impl FakeBin {
    fn new() -> FakeBin {
        let dir = tempfile::tempdir().unwrap();
        for agent in ["claude", "codex", "gemini", "aider"] {
            let path = dir.path().join(agent);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nexec \"{}\" \"$@\"\n",
                    fixture(&format!("fake-{agent}.sh"))
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeBin { dir }
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

fn run(inst: &Instance, args: &[&str], path: Option<&str>) -> std::process::Output {
    let mut command = inst.command(args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().unwrap()
}

fn rows_of(inst: &Instance, mode: &str) -> Vec<Vec<String>> {
    inst.rows()
        .into_iter()
        .filter(|r| r[MODE] == mode)
        .collect()
}

fn cost(cell: &str) -> f64 {
    cell.parse().unwrap_or_else(|_| panic!("a cost: {cell:?}"))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn status_json(inst: &Instance) -> serde_json::Value {
    let out = inst.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn each_preset_runs_its_headless_command_with_its_prompt_and_is_read_as_its_format() {
    let bin = FakeBin::new();
    for (agent, argv, cost_cell, tokens) in [
        (
            "claude",
            vec!["-p", "--output-format", "json"],
            Some(0.0123),
            "tokens in/out/cached 1200/340/800",
        ),
        (
            "codex",
            vec![
                "exec",
                "--json",
                "--sandbox",
                "workspace-write",
                "--skip-git-repo-check",
                "-",
            ],
            None,
            "tokens in/out/cached 5000/1000/3000",
        ),
        (
            "gemini",
            vec!["-p", "", "--output-format", "json"],
            None,
            "tokens in/out/cached 5000/1000/3000",
        ),
        (
            "aider",
            vec!["--yes-always", "--no-pretty", "--message-file"],
            Some(0.0123),
            "tokens in/out/cached 12000/340/0",
        ),
    ] {
        let inst = instance(
            "",
            r#"[{ "id": "s1", "task": "Advance the plan", "modes": ["implementation"],
            "env": { "FAKE_CASE": "success", "FAKE_ARGS_TO": "args", "FAKE_STDIN_TO": "prompt" } }]"#,
        );
        // Nothing but the agent: the preset gives the command, the prompt and the format.
        mode(&inst, "implementation", &format!("agent = \"{agent}\""));
        let out = run(&inst, &["run-cycle"], Some(&bin.path()));
        assert_eq!(out.status.code(), Some(0), "{agent}: {}", text(&out));
        let args = inst.read("args");
        let args: Vec<&str> = args.lines().collect();
        if agent == "aider" {
            assert_eq!(&args[..3], argv.as_slice(), "{agent}");
            assert!(args[3].ends_with("implementation.prompt.md"), "{args:?}");
        } else {
            assert_eq!(args, argv, "{agent}");
        }
        let prompt = inst.read("prompt");
        assert!(
            prompt.contains("Advance the plan")
                && prompt.contains("Instructions of implementation."),
            "{agent}: {prompt}"
        );
        let row = &rows_of(&inst, "implementation")[0];
        assert_eq!(row[STATUS], "ok", "{agent}: {row:?}");
        assert!(row[NOTE].starts_with("exit 0; "), "{agent}: {row:?}");
        assert!(row[NOTE].contains(tokens), "{agent}: {row:?}");
        assert!(row[NOTE].contains("HANDOFF: "), "{agent}: {row:?}");
        match cost_cell {
            Some(expected) => assert!((cost(&row[COST]) - expected).abs() < 1e-9, "{row:?}"),
            None => assert_eq!(row[COST], "", "no price: no cost ({agent})"),
        }
        let cycle = &rows_of(&inst, "cycle")[0];
        assert_eq!(cycle[COST], row[COST], "the cycle carries its modes' cost");
    }
}

#[test]
fn an_agent_error_on_exit_0_fails_the_run_with_the_agents_own_text_first() {
    for (agent, args, error) in [
        (
            "claude",
            vec!["-p", "--output-format", "json"],
            "Not logged in · Please run /login; exit 0",
        ),
        (
            "codex",
            vec!["exec", "--json", "-"],
            "unexpected status 400 Bad Request: Unsupported parameter: 'reasoning.effort' is not supported with this model.; exit 0",
        ),
        (
            "gemini",
            vec!["-p", "", "--output-format", "json"],
            "INVALID_STREAM: Model stream ended with an invalid chunk or missing finish reason.; exit 0",
        ),
    ] {
        let inst = instance(
            "",
            r#"[{ "id": "s1", "task": "t", "modes": ["implementation", "planning"], "env": { "FAKE_CASE": "error-exit0" } }]"#,
        );
        mode(
            &inst,
            "implementation",
            &format!("agent = \"{agent}\"\ncommand = {}", fake(agent, &args)),
        );
        mode(&inst, "planning", "command = [\"true\"]\nalways = true");
        let out = inst.run(&["run-cycle"]);
        assert_eq!(out.status.code(), Some(1), "{agent}: {}", text(&out));
        let row = &rows_of(&inst, "implementation")[0];
        assert_eq!(
            (row[STATUS].as_str(), row[EXIT].as_str()),
            ("failed", "0"),
            "{row:?}"
        );
        assert!(row[NOTE].starts_with(error), "{agent}: {}", row[NOTE]);
        let cycle = &rows_of(&inst, "cycle")[0];
        assert_eq!(cycle[STATUS], "failed", "a real failure counts: {cycle:?}");
        assert!(!cycle[NOTE].starts_with("rate limited"));
    }
}

#[test]
fn a_rate_limited_run_tries_the_fallback_in_the_same_run_and_uses_its_answer() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["implementation", "planning"] }]"#,
    );
    let seen = inst.path().join("planning-prompt");
    mode(
        &inst,
        "implementation",
        &format!(
            "agent = \"claude\"\ncommand = {}\nfallback = [{}]",
            fake("claude", &["-p", "--output-format", "json", "rate-limit"]),
            fake(
                "claude",
                &[
                    "-p",
                    "--output-format",
                    "json",
                    "success",
                    "--model",
                    "haiku"
                ]
            )
        ),
    );
    mode(
        &inst,
        "planning",
        &format!(
            "command = [\"{}\"]\nenv = {{ FAKE_COPY_STDIN = \"{}\" }}",
            fixture("agent.sh"),
            seen.display()
        ),
    );
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs = rows_of(&inst, "implementation");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        (runs[0][ATTEMPT].as_str(), runs[0][STATUS].as_str()),
        ("1", "failed")
    );
    // "resets 3pm (America/New_York)": the next 3 pm in New York.
    let note = &runs[0][NOTE];
    assert!(
        note.starts_with("rate limited until ")
            && (note.contains("T19:00:00Z: You've hit your session limit")
                || note.contains("T20:00:00Z: You've hit your session limit")),
        "{note}"
    );
    assert_eq!(
        (runs[1][ATTEMPT].as_str(), runs[1][STATUS].as_str()),
        ("2", "ok")
    );
    assert!(
        runs[1][NOTE].starts_with("fallback 1 of 1; exit 0; tokens in/out/cached 1200/340/800"),
        "{}",
        runs[1][NOTE]
    );
    assert!((cost(&runs[1][COST]) - 0.0123).abs() < 1e-9);
    // The fallback's answer is what the later modes get.
    let prompt = std::fs::read_to_string(&seen).unwrap();
    assert!(
        prompt.contains("heap bound check added; validation should run the heap tests"),
        "{prompt}"
    );
    assert!(
        inst.read("persistent-memory.md")
            .contains("cargo nextest run -E 'test(heap)'")
    );
    let cycle = &rows_of(&inst, "cycle")[0];
    assert_eq!(cycle[STATUS], "ok");
    assert!(
        !inst
            .path()
            .join(".loop-orchestrator/paused/s1.json")
            .exists()
    );
}

#[test]
fn with_every_argv_limited_the_schedule_pauses_and_run_cycle_honours_it() {
    let reset = Utc::now() + chrono::TimeDelta::hours(1);
    let reset = DateTime::from_timestamp(reset.timestamp(), 0).unwrap();
    let inst = instance(
        "",
        &format!(
            r#"[{{ "id": "s1", "task": "t", "modes": ["implementation", "validation", "planning"],
                 "rate_limit_pause": "2h", "env": {{ "FAKE_RESET_EPOCH": "{}" }} }}]"#,
            reset.timestamp()
        ),
    );
    mode(
        &inst,
        "implementation",
        &format!(
            "agent = \"claude\"\ncommand = {}\nfallback = [{}]",
            fake("claude", &["-p", "--output-format", "json", "rate-limit"]),
            fake("claude", &["-p", "--output-format", "json", "overloaded"])
        ),
    );
    mode(&inst, "validation", "command = [\"true\"]");
    mode(&inst, "planning", "command = [\"true\"]\nalways = true");
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let runs = rows_of(&inst, "implementation");
    let notes: Vec<&str> = runs.iter().map(|r| r[NOTE].as_str()).collect();
    assert_eq!(runs.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "rate limited until {}: Claude AI usage limit reached|{}",
            rfc3339(reset),
            reset.timestamp()
        )),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("rate limited: API Error: Repeated 529 Overloaded errors"),
        "{notes:?}"
    );
    assert!(notes[1].contains("fallback 1 of 1"), "{notes:?}");
    assert_eq!(rows_of(&inst, "validation")[0][STATUS], "skipped");
    assert_eq!(rows_of(&inst, "planning")[0][STATUS], "ok");
    let cycle = &rows_of(&inst, "cycle")[0];
    assert_eq!(cycle[STATUS], "failed");
    // The earlier of the two ends (the fallback had none: rate_limit_pause, 2 h).
    let paused = format!("rate limited until {}", rfc3339(reset));
    assert!(
        cycle[NOTE].starts_with(&format!(
            "{paused}: every argv of implementation was limited"
        )),
        "{}",
        cycle[NOTE]
    );

    // The next run is one skipped cycle row, and no mode runs.
    let before = inst.rows().len();
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&paused),
        "{}",
        text(&out)
    );
    let rows = inst.rows();
    assert_eq!(rows.len(), before + 1);
    let skipped = rows.last().unwrap();
    assert_eq!(
        (
            skipped[MODE].as_str(),
            skipped[STATUS].as_str(),
            skipped[NOTE].as_str()
        ),
        ("cycle", "skipped", paused.as_str())
    );
    let status = status_json(&inst);
    let hold = &status["schedules"][0]["hold"];
    assert_eq!(hold["reason"], "rate_limited");
    assert_eq!(
        hold["until"],
        reset.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let plain = inst.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains(&format!("[PAUSED: {paused}]")),
        "{}",
        text(&plain)
    );

    // --ignore-limits runs it anyway; `resume` lifts the pause.
    let out = inst.run(&["run-cycle", "--ignore-limits"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(rows_of(&inst, "implementation").len(), 4);
    let out = inst.run(&["resume", "s1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(status_json(&inst)["schedules"][0]["hold"].is_null());
}

#[test]
fn a_budget_stops_fires_once_spent_and_is_passed_by_one_run_at_most() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["env", "implementation"], "max_cost_usd_per_day": 0.02 }]"#,
    );
    let env = inst.path().join("env");
    mode(
        &inst,
        "env",
        &format!(
            "command = [\"{}\"]\nenv = {{ FAKE_ENV_DUMP = \"{}\" }}",
            fixture("agent.sh"),
            env.display()
        ),
    );
    paying_claude_mode(&inst, "implementation");
    let budget_left = || {
        std::fs::read_to_string(&env)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("LOOP_BUDGET_LEFT_USD=").map(str::to_string))
    };
    for (run, left) in [(1, "0.02"), (2, "0.0077")] {
        let out = inst.run(&["run-cycle"]);
        assert_eq!(out.status.code(), Some(0), "run {run}: {}", text(&out));
        assert_eq!(budget_left().as_deref(), Some(left), "run {run}");
    }
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let tomorrow = (Utc::now() + chrono::TimeDelta::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let cycles = rows_of(&inst, "cycle");
    assert_eq!(cycles.len(), 3);
    assert_eq!(cycles[2][STATUS], "skipped");
    assert_eq!(
        cycles[2][NOTE],
        format!(
            "budget spent until {}: $0.0246 of the schedule's budget of $0.02 a day",
            rfc3339(tomorrow)
        )
    );
    let spent: f64 = cycles
        .iter()
        .filter(|r| !r[COST].is_empty())
        .map(|r| cost(&r[COST]))
        .sum();
    assert!(spent <= 0.02 + 0.0123 + 1e-9, "{spent}");
    assert_eq!(rows_of(&inst, "implementation").len(), 2, "no third run");
    let status = status_json(&inst);
    let s = &status["schedules"][0];
    assert!((s["spending"]["cost_today_usd"].as_f64().unwrap() - 0.0246).abs() < 1e-9);
    assert_eq!(s["spending"]["max_cost_usd_per_day"], 0.02);
    assert_eq!(s["hold"]["reason"], "budget_spent");
    assert_eq!(s["hold"]["until"], rfc3339(tomorrow));
    let plain = String::from_utf8_lossy(&inst.run(&["status"]).stdout).to_string();
    assert!(plain.contains("$0.0246 today of a $0.02 budget"), "{plain}");
}

#[test]
fn a_cycle_of_several_agent_modes_stops_spending_once_its_budget_is_gone() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["one", "two", "three"], "max_cost_usd_per_day": 0.02 }]"#,
    );
    for slug in ["one", "two", "three"] {
        paying_claude_mode(&inst, slug);
    }
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses: Vec<(String, String)> = inst
        .rows()
        .into_iter()
        .map(|r| (r[MODE].clone(), r[STATUS].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("one".into(), "ok".into()),
            ("two".into(), "ok".into()),
            ("three".into(), "skipped".into()),
            ("cycle".into(), "ok".into())
        ]
    );
    let three = &rows_of(&inst, "three")[0];
    assert!(three[NOTE].starts_with("budget spent until "), "{three:?}");
    assert!((cost(&rows_of(&inst, "cycle")[0][COST]) - 0.0246).abs() < 1e-9);
}

#[test]
fn the_instance_budget_counts_every_schedule_and_defaults_apply() {
    let inst = instance(
        "  \"max_cost_usd_per_day\": 0.02,\n  \"defaults\": { \"modes\": [\"implementation\"], \"max_cost_usd_per_day\": 1 },",
        r#"[{ "id": "a", "task": "t" }, { "id": "b", "task": "t" }]"#,
    );
    paying_claude_mode(&inst, "implementation");
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let cycles = rows_of(&inst, "cycle");
    let held: Vec<&str> = cycles[2..].iter().map(|r| r[NOTE].as_str()).collect();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter().all(|n| n.starts_with("budget spent until ")
            && n.ends_with("$0.0246 of the instance's budget of $0.02 a day")),
        "{held:?}"
    );
    let status = status_json(&inst);
    assert_eq!(status["budget"]["max_cost_usd_per_day"], 0.02);
    assert_eq!(
        status["schedules"][1]["spending"]["max_cost_usd_per_day"],
        1.0
    );
}

#[test]
fn tokens_times_the_price_give_the_cost_of_agents_that_report_tokens_only() {
    for (agent, args) in [
        ("codex", vec!["exec", "--json", "-", "success"]),
        (
            "gemini",
            vec!["-p", "", "--output-format", "json", "success"],
        ),
    ] {
        let inst = instance(
            "",
            r#"[{ "id": "s1", "task": "t", "modes": ["implementation"] }]"#,
        );
        mode(
            &inst,
            "implementation",
            &format!(
                "agent = \"{agent}\"\ncommand = {}\nprice = {{ input_per_mtok = 1, output_per_mtok = 10, cached_input_per_mtok = 0.1 }}",
                fake(agent, &args)
            ),
        );
        let out = inst.run(&["run-cycle"]);
        assert_eq!(out.status.code(), Some(0), "{agent}: {}", text(&out));
        let row = &rows_of(&inst, "implementation")[0];
        // (5000 - 3000) × 1 + 3000 × 0.1 + 1000 × 10, per million
        assert!((cost(&row[COST]) - 0.0123).abs() < 1e-9, "{agent}: {row:?}");
        assert!(
            row[NOTE].contains("tokens in/out/cached 5000/1000/3000"),
            "{row:?}"
        );
        assert!((cost(&rows_of(&inst, "cycle")[0][COST]) - 0.0123).abs() < 1e-9);
    }
}

#[test]
fn expect_output_makes_a_silent_exit_0_a_failure() {
    for (expect, status) in [(true, "failed"), (false, "ok")] {
        let inst = instance(
            "",
            r#"[{ "id": "s1", "task": "t", "modes": ["implementation"] }]"#,
        );
        mode(
            &inst,
            "implementation",
            &format!(
                "agent = \"claude\"\ncommand = {}\nexpect_output = {expect}",
                fake("claude", &["-p", "--output-format", "json", "empty"])
            ),
        );
        inst.run(&["run-cycle"]);
        let row = &rows_of(&inst, "implementation")[0];
        assert_eq!(row[STATUS], status, "{row:?}");
        if expect {
            assert_eq!(row[NOTE], "no output; exit 0");
        }
    }
}

#[test]
fn output_that_cannot_be_read_fails_and_a_long_answer_is_read_whole() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["cut", "bad", "claude", "codex", "gemini"] }]"#,
    );
    mode(
        &inst,
        "cut",
        &format!(
            "agent = \"claude\"\ncommand = {}\non_failure = \"continue\"",
            fake("claude", &["-p", "--output-format", "json", "truncated"])
        ),
    );
    mode(
        &inst,
        "bad",
        &format!(
            "output = \"claude-json\"\ncommand = [\"{}\"]\non_failure = \"continue\"\nenv = {{ FAKE_PRINT = '{{\"type\":\"result\",\"subtype\":oops}}' }}",
            fixture("agent.sh")
        ),
    );
    for agent in ["claude", "codex", "gemini"] {
        mode(
            &inst,
            agent,
            &format!(
                "agent = \"{agent}\"\ncommand = {}\non_failure = \"continue\"",
                fake(agent, &["big"])
            ),
        );
    }
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let cut = &rows_of(&inst, "cut")[0];
    assert_eq!(cut[STATUS], "failed");
    assert!(
        cut[NOTE].starts_with("could not read the claude-json output: it ends early"),
        "{}",
        cut[NOTE]
    );
    let bad = &rows_of(&inst, "bad")[0];
    assert_eq!(bad[STATUS], "failed");
    assert!(
        bad[NOTE].starts_with("could not read the claude-json output: it is not valid JSON"),
        "{}",
        bad[NOTE]
    );
    // A 200 KiB answer on one line (far over the 64 KiB of a protocol line): read whole,
    // its HANDOFF after it found.
    for agent in ["claude", "codex", "gemini"] {
        let row = &rows_of(&inst, agent)[0];
        assert_eq!(row[STATUS], "ok", "{row:?}");
        assert!(
            row[NOTE].ends_with("HANDOFF: big answer done"),
            "{agent}: {}",
            row[NOTE]
        );
    }
    assert_eq!(rows_of(&inst, "cycle").len(), 1, "no row lost");
}

#[test]
fn aider_gives_up_on_a_rate_limit_with_exit_0_and_is_read_as_rate_limited() {
    let bin = FakeBin::new();
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["implementation"], "env": { "FAKE_CASE": "rate-limit" } }]"#,
    );
    mode(&inst, "implementation", "agent = \"aider\"");
    let out = run(&inst, &["run-cycle"], Some(&bin.path()));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let row = &rows_of(&inst, "implementation")[0];
    assert_eq!((row[STATUS].as_str(), row[EXIT].as_str()), ("failed", "0"));
    assert!(
        row[NOTE].starts_with("rate limited: litellm.RateLimitError"),
        "{}",
        row[NOTE]
    );
    let cycle = &rows_of(&inst, "cycle")[0];
    assert!(
        cycle[NOTE].starts_with("rate limited until "),
        "{}",
        cycle[NOTE]
    );
}

#[test]
fn a_mode_naming_an_agent_that_is_not_installed_is_skipped_and_the_cycle_goes_on() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["implementation", "validation"] }]"#,
    );
    mode(
        &inst,
        "implementation",
        "agent = [\"claude\", \"codex\", \"gemini\", \"aider\"]\nexpect_output = true",
    );
    mode(&inst, "validation", "command = [\"/bin/true\"]");
    // A PATH where no agent is.
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        &inst,
        &["run-cycle"],
        Some(&empty.path().display().to_string()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let row = &rows_of(&inst, "implementation")[0];
    assert_eq!(
        (row[STATUS].as_str(), row[NOTE].as_str()),
        ("skipped", "not installed: claude, codex, gemini, aider")
    );
    assert_eq!(rows_of(&inst, "cycle")[0][STATUS], "ok");
}

/// A running `serve`, killed if the test ends early.
struct Serve(Option<Child>);

impl Serve {
    fn start(inst: &Instance) -> Serve {
        let child = inst
            .command(&["serve"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(inst.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        Serve(Some(child))
    }

    fn stop(mut self) {
        let mut child = self.0.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn rate_limited_cycles_under_serve_pause_the_schedule_and_never_escalate() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "cron": "* * * * * *", "modes": ["implementation"],
             "max_failures": 3, "rate_limit_pause": "1s" }]"#,
    );
    mode(
        &inst,
        "implementation",
        &format!(
            "agent = \"claude\"\ncommand = {}\nfallback = [{}]",
            fake("claude", &["-p", "--output-format", "json", "overloaded"]),
            fake(
                "claude",
                &[
                    "-p",
                    "--output-format",
                    "json",
                    "overloaded",
                    "--model",
                    "haiku"
                ]
            )
        ),
    );
    let serve = Serve::start(&inst);
    let limited_cycles = |inst: &Instance| {
        rows_of(inst, "cycle")
            .into_iter()
            .filter(|r| r[STATUS] == "failed")
            .count()
    };
    let skipped_for_the_pause = |inst: &Instance| {
        rows_of(inst, "cycle")
            .into_iter()
            .filter(|r| r[STATUS] == "skipped" && r[NOTE].starts_with("rate limited until "))
            .count()
    };
    common::wait_until(
        Duration::from_secs(40),
        "four rate-limited cycles and fires skipped for the pause",
        || limited_cycles(&inst) >= 4 && skipped_for_the_pause(&inst) >= 1,
    );
    serve.stop();
    let cycles = rows_of(&inst, "cycle");
    assert!(
        cycles.iter().all(|r| r[STATUS] != "escalated"),
        "{cycles:?}"
    );
    for row in cycles.iter().filter(|r| r[STATUS] == "failed") {
        assert!(
            row[NOTE].starts_with("rate limited until "),
            "a rate-limited cycle says so first: {row:?}"
        );
    }
    // Each limited cycle tried the command and its fallback: two rows.
    let runs = rows_of(&inst, "implementation");
    for cycle in cycles.iter().filter(|r| r[STATUS] == "failed") {
        let tried: Vec<&Vec<String>> = runs.iter().filter(|r| r[6] == cycle[6]).collect();
        assert_eq!(tried.len(), 2, "{tried:?}");
        assert!(
            tried.iter().all(|r| r[STATUS] == "failed"
                && r[NOTE].starts_with("rate limited: API Error: Repeated 529")),
            "{tried:?}"
        );
    }
}

#[test]
fn serve_and_run_cycle_share_the_budget_and_skip_once_it_is_spent() {
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "cron": "* * * * * *", "modes": ["implementation"], "max_cost_usd_per_day": 0.02 }]"#,
    );
    paying_claude_mode(&inst, "implementation");
    // A run-cycle spends first; the service sees it in the file.
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let serve = Serve::start(&inst);
    let budget_skips = |inst: &Instance| {
        rows_of(inst, "cycle")
            .into_iter()
            .filter(|r| r[STATUS] == "skipped" && r[NOTE].starts_with("budget spent until "))
            .count()
    };
    common::wait_until(
        Duration::from_secs(30),
        "three fires skipped for the budget",
        || budget_skips(&inst) >= 3,
    );
    // While the service holds it, a run-cycle is held too.
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    serve.stop();
    let runs = rows_of(&inst, "implementation");
    assert_eq!(
        runs.len(),
        2,
        "one by run-cycle, one by the service: {runs:?}"
    );
    let spent: f64 = rows_of(&inst, "cycle")
        .iter()
        .filter(|r| !r[COST].is_empty())
        .map(|r| cost(&r[COST]))
        .sum();
    assert!(spent <= 0.02 + 0.0123 + 1e-9, "{spent}");
}

/// Runs the real `agent` CLI (installed from npm as `package`) as a mode that names only the
/// agent, without credentials (an empty HOME, no key in the environment). It fails within
/// seconds with its own error text, which must start the row's note. Skipped with a message
/// naming the CLI when it is not installed, failed when LOOP_TEST_REQUIRE_ALL is set.
fn real_cli_without_credentials(agent: &str, package: &str, error: &str, exit: &str) {
    let Some(found) = on_path(agent) else {
        assert!(
            std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_none(),
            "LOOP_TEST_REQUIRE_ALL is set and `{agent}` (npm {package}) is not on PATH"
        );
        eprintln!("skipped: `{agent}` (npm {package}) is not on PATH");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let inst = instance(
        "",
        &format!(
            r#"[{{ "id": "s1", "task": "Say hi", "modes": ["implementation"], "timeout": "90s",
                 "env": {{ "HOME": "{}" }} }}]"#,
            home.path().display()
        ),
    );
    mode(
        &inst,
        "implementation",
        &format!("agent = \"{agent}\"\nexpect_output = true"),
    );
    let mut command = inst.command(&["run-cycle"]);
    for var in [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_GCA",
    ] {
        command.env_remove(var);
    }
    let started = Instant::now();
    let out = command.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: {}",
        found.display(),
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(90));
    let row = &rows_of(&inst, "implementation")[0];
    assert_eq!(
        (row[STATUS].as_str(), row[EXIT].as_str()),
        ("failed", exit),
        "{row:?}"
    );
    assert!(
        row[NOTE].starts_with(error),
        "the CLI's own text first: {}",
        row[NOTE]
    );
}

#[test]
fn the_real_claude_cli_without_credentials_fails_with_its_own_error_text() {
    real_cli_without_credentials(
        "claude",
        "@anthropic-ai/claude-code",
        "Not logged in · Please run /login; exit 1",
        "1",
    );
}

#[test]
fn the_real_gemini_cli_without_credentials_fails_with_its_own_error_text() {
    real_cli_without_credentials(
        "gemini",
        "@google/gemini-cli",
        "Please set an Auth method in your ",
        "41",
    );
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn the_repositorys_own_implementation_mode_records_cost_when_an_agent_is_installed() {
    let own = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("modes/implementation.md"),
    )
    .unwrap();
    let inst = instance(
        "",
        r#"[{ "id": "s1", "task": "t", "modes": ["implementation"], "env": { "FAKE_CASE": "success", "FAKE_ARGS_TO": "args" } }]"#,
    );
    inst.write("modes/implementation.md", &own);
    let bin = FakeBin::new();
    let out = run(&inst, &["run-cycle"], Some(&bin.path()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        inst.read("args").lines().collect::<Vec<_>>(),
        [
            "-p",
            "--output-format",
            "json",
            "--permission-mode",
            "acceptEdits"
        ]
    );
    let row = &rows_of(&inst, "implementation")[0];
    assert_eq!(row[STATUS], "ok", "{row:?}");
    assert!((cost(&row[COST]) - 0.0123).abs() < 1e-9, "{row:?}");
    assert!((cost(&rows_of(&inst, "cycle")[0][COST]) - 0.0123).abs() < 1e-9);
    // Where no agent is installed the mode is skipped and the cycle is ok.
    let nothing = tempfile::tempdir().unwrap();
    let out = run(
        &inst,
        &["run-cycle"],
        Some(&nothing.path().display().to_string()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let row = rows_of(&inst, "implementation").pop().unwrap();
    assert_eq!(
        (row[STATUS].as_str(), row[NOTE].as_str()),
        ("skipped", "not installed: claude, codex, aider")
    );
}
