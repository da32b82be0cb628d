//! `run-cycle` end to end: the real binary on temp instances with fake agents.

mod common;

use std::time::{Duration, Instant};

use common::{Instance, fixture, process_exists, text};

fn one_schedule(modes: &[&str]) -> Instance {
    let list = modes
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Instance::new(&format!(
        r#"[{{ "id": "s1", "task": "Do the thing", "modes": [{list}] }}]"#
    ))
}

#[test]
fn timeout_kills_the_mode_and_its_grandchild() {
    let inst = one_schedule(&["slow", "after"]);
    let pids = inst.path().join("pids");
    inst.mode(
        "slow",
        &format!("[\"{}\"]", fixture("grandchild-sleeper.sh")),
        &format!("timeout = \"1s\"\nkill_grace = \"1s\"\nprompt = \"none\"\nenv = {{ PIDS_FILE = \"{}\" }}", pids.display()),
    );
    inst.mode("after", "[\"true\"]", "");
    let started = Instant::now();
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let recorded = std::fs::read_to_string(&pids).expect("the fixture recorded its pids");
    for pid in recorded.split_whitespace() {
        let pid: i32 = pid.parse().unwrap();
        assert!(!process_exists(pid), "process {pid} survived the timeout");
    }
    let rows = inst.mode_statuses();
    assert_eq!(
        rows,
        vec![
            ("slow".into(), "timeout".into()),
            ("after".into(), "skipped".into()),
            ("cycle".into(), "timeout".into())
        ]
    );
}

const HOSTILE: &str = "quotes \" ' and $(touch pwned) and `touch pwned2` and ; touch pwned3 |\nsecond line\t\u{e9}\u{1F600} \\n $HOME";

#[test]
fn hostile_prompt_text_reaches_the_child_byte_for_byte_and_runs_nothing() {
    let task = serde_json::to_string(HOSTILE).unwrap();
    let inst = Instance::new(&format!(
        r#"[{{ "id": "s1", "task": {task}, "modes": ["by-stdin", "by-file", "by-arg"] }}]"#
    ));
    let stdin_copy = inst.path().join("stdin-copy");
    let file_copy = inst.path().join("file-copy");
    let arg_copy = inst.path().join("arg-copy");
    inst.agent_mode(
        "by-stdin",
        &format!("FAKE_COPY_STDIN = \"{}\"", stdin_copy.display()),
        "prompt = \"stdin\"",
    );
    inst.agent_mode(
        "by-file",
        &format!("FAKE_COPY_FILE = \"{}\"", file_copy.display()),
        "prompt = \"file\"",
    );
    inst.mode(
        "by-arg",
        "[\"cp\", \"{prompt_file}\", \"arg-copy\"]",
        "prompt = \"none\"",
    );
    let out = inst
        .command(&["run-cycle"])
        .current_dir(inst.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for copy in [&stdin_copy, &file_copy, &arg_copy] {
        let prompt = std::fs::read_to_string(copy).unwrap();
        assert!(
            prompt.contains(HOSTILE),
            "{} lacks the task verbatim:\n{prompt}",
            copy.display()
        );
    }
    let names: Vec<String> = std::fs::read_dir(inst.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("pwned")),
        "something was executed: {names:?}"
    );
}

#[test]
fn eight_concurrent_run_cycles_never_interleave_or_lose_a_row() {
    let schedules: Vec<String> = (1..=8)
        .map(|i| format!(r#"{{ "id": "s{i}", "task": "t{i}", "modes": ["m1", "m2", "m3", "m4", "m5", "m6"] }}"#))
        .collect();
    let inst = Instance::new(&format!("[{}]", schedules.join(", ")));
    let long = "x".repeat(300);
    for m in 1..=6 {
        inst.agent_mode(
            &format!("m{m}"),
            &format!("FAKE_PRINT = \"MEMORY Commands: note {m} {long}\\nlast line {m} {long}\""),
            "prompt = \"none\"",
        );
    }
    let children: Vec<_> = (1..=8)
        .map(|i| {
            inst.command(&["run-cycle", "--schedule", &format!("s{i}")])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let rows = inst.rows();
    assert_eq!(rows.len(), 8 * 7, "8 cycles of 6 modes and a cycle row");
    for i in 1..=8 {
        let mine: Vec<_> = rows.iter().filter(|r| r[5] == format!("s{i}")).collect();
        assert_eq!(mine.len(), 7);
        assert!(mine.iter().all(|r| r[9] == "ok"), "{mine:?}");
        assert_eq!(mine.last().unwrap()[7], "cycle");
    }
    let text = inst.read("task_timing.tsv");
    assert_eq!(text.matches("scheduled_at\t").count(), 1, "one header");
    assert!(text.ends_with('\n'));
    let memory = inst.read("persistent-memory.md");
    assert_eq!(
        memory.matches("] ok in").count(),
        48,
        "a System Updates entry per mode run"
    );
}

#[test]
fn an_agent_json_result_fills_cost_usd_and_its_answer_is_read_for_the_protocol() {
    // What `claude -p --output-format json` prints: one result object, the answer inside. A
    // mode that names its output format is read as an agent; validation, which names none,
    // is judged by its exit status alone.
    let inst = one_schedule(&["implementation", "validation", "planning"]);
    inst.agent_mode(
        "implementation",
        r#"FAKE_PRINT = '{"type":"result","subtype":"success","result":"Done.\\nMEMORY Commands: make check\\nHANDOFF: tests next","total_cost_usd":0.25}'"#,
        "output = \"auto\"",
    );
    inst.agent_mode("validation", "", "");
    inst.agent_mode(
        "planning",
        r#"FAKE_PRINT = '{"type":"result","result":"planned","total_cost_usd":0.5}'"#,
        "output = \"claude-json\"",
    );
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let costs: Vec<(String, String)> = inst
        .rows()
        .into_iter()
        .map(|r| (r[7].clone(), r[11].clone()))
        .collect();
    assert_eq!(
        costs,
        vec![
            ("implementation".into(), "0.25".into()),
            ("validation".into(), "".into()),
            ("planning".into(), "0.5".into()),
            ("cycle".into(), "0.75".into()),
        ]
    );
    let memory = inst.read("persistent-memory.md");
    assert!(memory.contains("- make check"), "{memory}");
    let implementation = &inst.rows()[0];
    assert!(
        implementation[12].contains("HANDOFF: tests next"),
        "{implementation:?}"
    );
}

#[test]
fn blocked_stops_the_pipeline_but_always_modes_still_run() {
    let inst = one_schedule(&["implementation", "validation", "quality", "planning"]);
    let seen = inst.path().join("planning-prompt");
    inst.agent_mode(
        "implementation",
        "FAKE_PRINT = \"HANDOFF: tried X\\nBLOCKED: need credentials\"",
        "",
    );
    inst.agent_mode("validation", "", "");
    inst.agent_mode("quality", "", "");
    inst.agent_mode(
        "planning",
        &format!("FAKE_COPY_STDIN = \"{}\"", seen.display()),
        "always = true",
    );
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        inst.mode_statuses(),
        vec![
            ("implementation".into(), "blocked".into()),
            ("validation".into(), "skipped".into()),
            ("quality".into(), "skipped".into()),
            ("planning".into(), "ok".into()),
            ("cycle".into(), "blocked".into()),
        ]
    );
    let prompt = std::fs::read_to_string(seen).unwrap();
    assert!(
        prompt.contains("- implementation: tried X"),
        "planning sees the earlier handoff:\n{prompt}"
    );
}

#[test]
fn thousand_memory_entries_end_under_target_with_nothing_lost() {
    let writers = ["w1", "w2", "w3", "w4", "w5"];
    let inst = one_schedule(&writers);
    let preamble =
        "# Persistent Memory\nKept between cycles; see the README.\n\n```\n- not an entry\n```\n";
    inst.write(
        "persistent-memory.md",
        &format!("{preamble}## Implementation Patterns\n## Commands\n## System Updates\n"),
    );
    for w in writers {
        // The runner keeps at most 200 MEMORY lines a run: five modes make the thousand.
        inst.agent_mode(w, "FAKE_MEMORY_COUNT = \"200\"", "prompt = \"none\"");
    }
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let memory = inst.read("persistent-memory.md");
    // The last prune brought the file to target_lines (240); the cycle's own five System
    // Updates entries are written after it, in the cycle's final write.
    let system_updates = memory.lines().filter(|l| l.contains("[s1/w")).count();
    assert_eq!(system_updates, 5);
    assert!(
        memory.lines().count() <= 240 + system_updates,
        "{} lines",
        memory.lines().count()
    );
    assert!(
        !inst.read("persistent-memory.archive.md").is_empty(),
        "a prune happened"
    );
    assert!(memory.starts_with(preamble), "preamble changed:\n{memory}");
    for heading in [
        "## Implementation Patterns",
        "## Commands",
        "## System Updates",
    ] {
        assert!(memory.contains(heading), "{heading} lost");
    }
    let archive = inst.read("persistent-memory.archive.md");
    for w in writers {
        for i in 1..=200 {
            let entry = format!("entry s1 {w} {i}\n");
            assert!(
                memory.contains(&entry) || archive.contains(&entry),
                "entry {w} {i} lost"
            );
        }
    }
    assert!(
        memory.contains("entry s1 w5 200\n"),
        "the newest entries stay"
    );
}

#[test]
fn torn_last_line_is_terminated_and_reported() {
    let inst = one_schedule(&["ok"]);
    inst.mode("ok", "[\"true\"]", "");
    assert_eq!(inst.run(&["run-cycle"]).status.code(), Some(0));
    let path = inst.path().join("task_timing.tsv");
    let mut torn = std::fs::read_to_string(&path).unwrap();
    torn.push_str("2026-11-21T10:00:00.000Z\t2026-11-21T10:00:00.000Z\t2026");
    std::fs::write(&path, &torn).unwrap();
    assert_eq!(inst.run(&["run-cycle"]).status.code(), Some(0));
    let text_after = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text_after.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 2 + 1 + 2,
        "header, 2 rows, the torn line, 2 new rows"
    );
    assert!(
        lines[3].ends_with("\t2026"),
        "the torn line stays on its own line: {:?}",
        lines[3]
    );
    assert_eq!(lines[4].split('\t').count(), 13);
    let status = inst.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("1 bad lines") && stdout.contains("task_timing.tsv:4:"),
        "{stdout}"
    );
    let json = inst.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["timing"]["rows"], 4);
    assert_eq!(report["timing"]["bad_lines"].as_array().unwrap().len(), 1);
}

#[test]
fn flood_is_capped_in_the_log_and_memory_stays_small() {
    let inst = one_schedule(&["flood"]);
    inst.mode(
        "flood",
        &format!("[\"{}\"]", fixture("flood-mib.sh")),
        "prompt = \"none\"\nenv = { FLOOD_MIB = \"50\" }",
    );
    let mut child = inst
        .command(&["run-cycle"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            peak_kib = peak_kib.max(line.split_whitespace().nth(1).unwrap().parse().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(peak_kib > 0, "RSS was sampled");
    assert!(
        peak_kib < 40 * 1024,
        "run-cycle peaked at {peak_kib} KiB for 50 MiB of output"
    );
    let runs = inst.path().join(".loop-orchestrator/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = std::fs::read(run.join("flood.log")).unwrap();
    let cap = 8 * 1024 * 1024;
    assert!(
        log.len() >= cap && log.len() < cap + 1024,
        "log is {} bytes",
        log.len()
    );
    let tail = String::from_utf8_lossy(&log[cap..]);
    assert!(tail.contains("truncated"), "marker missing: {tail:?}");
    assert_eq!(inst.mode_statuses().last().unwrap().1, "ok");
}

#[test]
fn second_run_cycle_of_a_running_schedule_exits_75_naming_the_holder() {
    let inst = one_schedule(&["slow"]);
    inst.agent_mode("slow", "FAKE_SLEEP = \"3\"", "");
    let mut first = inst
        .command(&["run-cycle"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = inst
        .path()
        .join(".loop-orchestrator/locks/schedule-s1.lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(
            Instant::now() < deadline,
            "the first run-cycle never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let second = inst.run(&["run-cycle", "--schedule", "s1"]);
    assert_eq!(second.status.code(), Some(75), "{}", text(&second));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "75 comes at once"
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains(&format!("pid {}", first.id())),
        "{}",
        text(&second)
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(inst.rows().len(), 2, "only the first cycle wrote rows");
}

#[test]
fn environment_handoff_and_todo_priority() {
    let inst = one_schedule(&["work", "plan"]);
    let env_dump = inst.path().join("env");
    let prompt_copy = inst.path().join("prompt");
    inst.write(
        "TODO.md",
        "# Plan\n## Now\n- [x] done thing\n- [ ] open thing\n",
    );
    inst.agent_mode(
        "work",
        &format!(
            "FAKE_ENV_DUMP = \"{}\", FAKE_COPY_STDIN = \"{}\"",
            env_dump.display(),
            prompt_copy.display()
        ),
        "",
    );
    inst.agent_mode(
        "plan",
        "FAKE_PRINT = \"HANDOFF: next do Z\"",
        "always = true",
    );
    let out = inst
        .command(&["run-cycle"])
        .env("NOTIFY_SOCKET", "/nonexistent/notify.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let env = std::fs::read_to_string(&env_dump).unwrap();
    for var in [
        "LOOP_CYCLE_ID=",
        "LOOP_SCHEDULE_ID=s1",
        "LOOP_MODE=work",
        "LOOP_ATTEMPT=1",
        "LOOP_DIR=",
        "LOOP_MEMORY_FILE=",
        "LOOP_TODO_FILE=",
    ] {
        assert!(env.contains(var), "{var} missing from:\n{env}");
    }
    assert!(
        !env.contains("NOTIFY_SOCKET"),
        "the service's notify socket leaked to a mode:\n{env}"
    );
    let first = std::fs::read_to_string(&prompt_copy).unwrap();
    assert!(
        first.contains("- [ ] 2. open thing (Plan > Now) — TODO.md:4"),
        "{first}"
    );
    assert!(!first.contains("done thing"));
    // The next cycle starts from the plan the last one left.
    let out = inst.run(&["run-cycle", "--todo", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let second = std::fs::read_to_string(&prompt_copy).unwrap();
    assert!(
        second.contains("- plan (cycle ") && second.contains("next do Z"),
        "{second}"
    );
    assert!(
        second.starts_with("# Task\n\nopen thing (TODO.md item 2, line 4, under Plan > Now)"),
        "{second}"
    );
    let rows = inst.rows();
    assert!(rows[..3].iter().all(|r| r[4] == "schedule"));
    assert!(rows[3..].iter().all(|r| r[4] == "todo"), "{rows:?}");
    assert_eq!(
        inst.run(&["run-cycle", "--todo", "1"]).status.code(),
        Some(2),
        "a done item is refused"
    );
    assert_eq!(
        inst.run(&["run-cycle", "--todo", "9"]).status.code(),
        Some(2)
    );
}

#[test]
fn retries_write_a_row_per_attempt() {
    let inst = one_schedule(&["flaky"]);
    inst.agent_mode("flaky", "FAKE_EXIT = \"3\"", "retries = 2");
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = inst.rows();
    let attempts: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[7].as_str(), r[8].as_str(), r[9].as_str()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("flaky", "1", "failed"),
            ("flaky", "2", "failed"),
            ("flaky", "3", "failed"),
            ("cycle", "1", "failed")
        ]
    );
    assert_eq!(rows[0][10], "3", "exit code recorded");
}

#[test]
fn missing_agent_is_skipped_and_does_not_fail_the_cycle() {
    let inst = one_schedule(&["agent", "check"]);
    inst.mode(
        "agent",
        "[\"no-such-agent-cli\", \"-p\"]",
        "alternatives = [[\"also-not-installed\"]]\nif_missing = \"skip\"",
    );
    inst.mode(
        "check",
        "[\"no-such-build-tool\"]",
        "on_failure = \"continue\"",
    );
    let out = inst.run(&["run-cycle"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missing required program fails: {}",
        text(&out)
    );
    let rows = inst.rows();
    assert_eq!(rows[0][9], "skipped");
    assert!(
        rows[0][12].contains("no-such-agent-cli, also-not-installed"),
        "{:?}",
        rows[0][12]
    );
    assert_eq!(rows[1][9], "failed");
    assert!(rows[1][12].contains("no-such-build-tool"));
}

#[test]
fn dry_run_writes_nothing() {
    let inst = one_schedule(&["a"]);
    inst.mode("a", "[\"true\"]", "");
    let out = inst.run(&["run-cycle", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would run 1 mode"));
    assert!(!inst.path().join("task_timing.tsv").exists());
}

#[test]
fn init_writes_an_instance_that_runs_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("fresh");
    let out = std::process::Command::new(common::BIN)
        .arg("init")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Anywhere: even where no agent CLI (and nothing else) is on PATH. The modes that would
    // run an agent are skipped, the others run this binary.
    let nothing = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--dir")
        .arg(&target)
        .arg("run-cycle")
        .env("PATH", nothing.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = std::fs::read_to_string(target.join("task_timing.tsv")).unwrap();
    assert_eq!(
        rows.lines().count(),
        1 + 6,
        "header, five modes, the cycle row"
    );
    assert!(rows.lines().last().unwrap().contains("\tcycle\t1\tok\t"));
    // A second init keeps what is there.
    std::fs::write(target.join("TODO.md"), "- [ ] mine\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("init")
        .arg(&target)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    assert_eq!(
        std::fs::read_to_string(target.join("TODO.md")).unwrap(),
        "- [ ] mine\n"
    );
}

#[test]
fn groups_left_by_a_killed_run_cycle_are_reaped_by_the_next_one() {
    let inst = Instance::new(
        r#"[{ "id": "s1", "task": "t", "modes": ["slow"] }, { "id": "s2", "task": "t", "modes": ["quick"] }]"#,
    );
    let orphans = kill_supervisor_mid_mode(&inst, "slow", "grandchild-sleeper.sh");
    assert!(
        orphans.iter().all(|p| process_exists(*p)),
        "SIGKILL of the supervisor leaves its mode's group running"
    );

    // Two processes start at once: one of them reaps the group, and its rows are written once.
    let a = inst.command(&["run-cycle", "--schedule", "s2"]).output();
    let b = inst
        .command(&["run-cycle", "--schedule", "s2"])
        .spawn()
        .unwrap()
        .wait_with_output();
    let (out, other) = (a.unwrap(), b.unwrap());
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(75),
        "{}",
        text(&out)
    );
    assert!(
        other.status.code() == Some(0) || other.status.code() == Some(75),
        "{}",
        text(&other)
    );
    let reports = [&out, &other]
        .iter()
        .filter(|o| {
            String::from_utf8_lossy(&o.stderr).contains("terminated a leftover process group")
        })
        .count();
    assert_eq!(
        reports,
        1,
        "exactly one process reaps the group:\n{}\n{}",
        text(&out),
        text(&other)
    );
    for pid in orphans {
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_exists(pid) {
            assert!(
                Instant::now() < deadline,
                "orphan {pid} survived the restart"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let rows: Vec<(String, String, String)> = inst
        .rows()
        .into_iter()
        .map(|r| (r[5].clone(), r[7].clone(), r[9].clone()))
        .collect();
    let leftover_rows = rows
        .iter()
        .filter(|r| r.0 == "s1" && r.1 == "slow" && r.2 == "interrupted")
        .count();
    assert_eq!(
        leftover_rows, 1,
        "the reaped mode is recorded once: {rows:?}"
    );
    assert!(
        rows.contains(&("s1".into(), "cycle".into(), "interrupted".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("s2".into(), "cycle".into(), "ok".into())),
        "{rows:?}"
    );
    assert_eq!(
        std::fs::read_dir(inst.path().join(".loop-orchestrator/pids"))
            .unwrap()
            .count(),
        0,
        "records are cleaned up"
    );
}

#[test]
fn a_descendant_that_left_its_group_is_found_after_its_supervisor_dies() {
    let inst = Instance::new(
        r#"[{ "id": "s1", "task": "t", "modes": ["daemonizes"] }, { "id": "s2", "task": "t", "modes": ["quick"] }]"#,
    );
    let recorded = kill_supervisor_mid_mode(&inst, "daemonizes", "escaping-sleeper.sh");
    let escaped = recorded[1];
    assert!(process_exists(escaped), "the escaped descendant runs on");
    let out = inst.run(&["run-cycle", "--schedule", "s2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(escaped) {
        assert!(
            Instant::now() < deadline,
            "the escaped descendant {escaped} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `run-cycle --schedule s1` whose one mode runs `script` (which writes its pids to
/// $PIDS_FILE), waits until the mode has started, SIGKILLs the supervisor, and returns the
/// pids the mode recorded: what a supervisor that died leaves behind.
fn kill_supervisor_mid_mode(inst: &Instance, mode: &str, script: &str) -> Vec<i32> {
    let pids = inst.path().join("pids");
    inst.mode(
        mode,
        &format!("[\"{}\"]", fixture(script)),
        &format!(
            "prompt = \"none\"\nenv = {{ PIDS_FILE = \"{}\" }}",
            pids.display()
        ),
    );
    inst.mode("quick", "[\"true\"]", "");
    let mut first = inst
        .command(&["run-cycle", "--schedule", "s1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.exists() {
        assert!(Instant::now() < deadline, "the mode never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    first.kill().unwrap();
    first.wait().unwrap();
    std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// The last HANDOFF of a schedule is its next cycle's plan: a handoff file that cannot be
/// read was once taken for "no handoff" without a word.
#[test]
fn an_unreadable_handoff_is_said_in_the_cycle_row() {
    let inst = one_schedule(&["plan"]);
    inst.mode(
        "plan",
        "[\"sh\", \"-c\", \"echo 'HANDOFF: next: item 2'\"]",
        "prompt = \"none\"",
    );
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let handoff = ".loop-orchestrator/handoff/s1.json";
    let saved: serde_json::Value = serde_json::from_str(&inst.read(handoff)).unwrap();
    assert_eq!(saved["text"], "next: item 2");
    assert_eq!(saved["mode"], "plan");
    // Torn, as a crash between write and rename once left it.
    inst.write(handoff, "{\"mode\": \"plan\", \"cyc");
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = inst.rows();
    let last = rows.last().unwrap();
    assert_eq!((last[7].as_str(), last[9].as_str()), ("cycle", "ok"));
    assert!(
        last[12].contains("previous handoff unreadable") && last[12].contains("s1.json"),
        "{}",
        last[12]
    );
    // And the new cycle's handoff replaced it whole.
    let saved: serde_json::Value = serde_json::from_str(&inst.read(handoff)).unwrap();
    assert_eq!(saved["text"], "next: item 2");
}

/// `memory add` prunes with the limits of schedules.json; with that file broken it used the
/// defaults instead, silently.
#[test]
fn memory_add_with_a_broken_schedules_json_refuses_and_writes_nothing() {
    let inst = one_schedule(&["m"]);
    inst.mode("m", "[\"true\"]", "");
    let add = |text: &str| inst.run(&["memory", "add", "--section", "Commands", text]);
    let out = add("first");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = inst.read("persistent-memory.md");
    assert!(before.contains("- first"));
    let schedules = inst.read("schedules.json");
    inst.write(
        "schedules.json",
        &schedules.replace("\"version\": 1,", "\"version\": 1,\n  \"memroy\": {},"),
    );
    let out = add("second");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schedules.json:3:3: unknown field \"memroy\""),
        "{stderr}"
    );
    assert!(stderr.contains("the entry was not added"), "{stderr}");
    assert_eq!(inst.read("persistent-memory.md"), before);
    // A prune to an explicit target needs no limit of the file; without one it refuses too.
    let out = inst.run(&["memory", "prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = inst.run(&["memory", "prune", "--target-lines", "100"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
