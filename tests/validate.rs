//! Bad input: every class exits 2 with file:line:column, and nothing runs.

mod common;

use common::{Instance, text};

const GOOD_MODE: &str = "+++\ncommand = [\"true\"]\n+++\n# a\n";

fn instance(schedules_json: &str) -> Instance {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write("schedules.json", schedules_json);
    inst.write("modes/a.md", GOOD_MODE);
    inst
}

/// Runs `validate` and `run-cycle`: both exit 2, print `expected`, and no row is written.
fn assert_rejected(inst: &Instance, expected: &str) {
    for command in ["validate", "run-cycle"] {
        let out = inst.run(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{command}: expected {expected:?} in:\n{stderr}"
        );
    }
    assert!(!inst.path().join("task_timing.tsv").exists(), "nothing ran");
}

fn with_schedule(entry: &str) -> String {
    format!("{{\n  \"version\": 1,\n  \"schedules\": [\n    {entry}\n  ]\n}}\n")
}

#[test]
fn invalid_json() {
    assert_rejected(
        &instance(
            "{\n  \"version\": 1,\n  \"schedules\": [\n    { \"id\": \"x\" \"task\": \"t\" }\n  ]\n}\n",
        ),
        "schedules.json:4:17: invalid JSON",
    );
}

#[test]
fn unknown_field() {
    assert_rejected(
        &instance(&with_schedule(
            r#"{ "id": "x", "task": "t", "modes": ["a"], "crn": "* * * * *" }"#,
        )),
        "schedules.json:4:47: unknown field \"crn\" (expected one of: id, task, cron,",
    );
}

#[test]
fn duplicate_id() {
    let json = "{\n  \"version\": 1,\n  \"schedules\": [\n    { \"id\": \"x\", \"task\": \"t\", \"modes\": [\"a\"] },\n    { \"id\": \"x\", \"task\": \"t\", \"modes\": [\"a\"] }\n  ]\n}\n";
    assert_rejected(
        &instance(json),
        "schedules.json:5:13: duplicate id \"x\" (first used on line 4)",
    );
}

#[test]
fn unknown_mode() {
    assert_rejected(
        &instance(&with_schedule(
            r#"{ "id": "x", "task": "t", "modes": ["a", "nope"] }"#,
        )),
        "schedules.json:4:46: unknown mode \"nope\" (expected one of: a;",
    );
}

#[test]
fn bad_cron() {
    assert_rejected(
        &instance(&with_schedule(
            r#"{ "id": "x", "task": "t", "modes": ["a"], "cron": "61 * * * *" }"#,
        )),
        "schedules.json:4:55: \"cron\":",
    );
}

#[test]
fn bad_time_zone() {
    assert_rejected(
        &instance(&with_schedule(
            r#"{ "id": "x", "task": "t", "modes": ["a"], "timezone": "Europe/Berln" }"#,
        )),
        "schedules.json:4:59: \"timezone\":",
    );
}

#[test]
fn bad_duration() {
    assert_rejected(
        &instance(&with_schedule(
            r#"{ "id": "x", "task": "t", "modes": ["a"], "timeout": "ten minutes" }"#,
        )),
        "schedules.json:4:58: \"timeout\": bad duration \"ten minutes\"",
    );
}

#[test]
fn front_matter_missing() {
    let inst = instance(&with_schedule(
        r#"{ "id": "x", "task": "t", "modes": ["a"] }"#,
    ));
    inst.write("modes/a.md", "# A mode without front matter\n");
    assert_rejected(&inst, "modes/a.md:1:1: missing front matter");
}

#[test]
fn front_matter_broken() {
    let inst = instance(&with_schedule(
        r#"{ "id": "x", "task": "t", "modes": ["a"] }"#,
    ));
    inst.write(
        "modes/a.md",
        "+++\ncommand = [\"true\"\nprompt = \"stdin\"\n+++\n",
    );
    assert_rejected(&inst, "modes/a.md:3:");
    inst.write(
        "modes/a.md",
        "+++\ncommand = [\"true\"]\ntimout = \"1m\"\n+++\n",
    );
    assert_rejected(
        &inst,
        "modes/a.md:3:1: front matter: unknown field `timout`",
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let json = "{\n  \"version\": 1,\n  \"schedules\": [\n    { \"id\": \"x\", \"task\": \"t\", \"modes\": [\"a\"], \"cron\": \"bad\" },\n    { \"id\": \"y\", \"task\": \"t\", \"modes\": [\"zzz\"] }\n  ]\n}\n";
    let inst = instance(json);
    inst.write("modes/b.md", "no front matter\n");
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schedules.json:4:"), "{stderr}");
    assert!(stderr.contains("schedules.json:5:"), "{stderr}");
    assert!(stderr.contains("modes/b.md:1:1:"), "{stderr}");
    assert!(stderr.contains("3 problems found"), "{stderr}");
}

#[test]
fn valid_instance_passes() {
    let inst = instance(&with_schedule(
        r#"{ "id": "x", "task": "t", "modes": ["a"] }"#,
    ));
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 schedule(s), 1 mode(s)"));
}

#[test]
fn group_or_world_writable_config_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let inst = instance(&with_schedule(
        r#"{ "id": "x", "task": "t", "modes": ["a"] }"#,
    ));
    let path = inst.path().join("schedules.json");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    assert_rejected(
        &inst,
        "schedules.json:1:1: refused: schedules.json is writable by its group (mode 0664)",
    );
    let out = inst.run(&["--allow-insecure-config", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mode = inst.path().join("modes/a.md");
    std::fs::set_permissions(&mode, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_rejected(
        &inst,
        "modes/a.md:1:1: refused: modes/a.md is writable by its group and others (mode 0666)",
    );
    std::fs::set_permissions(&mode, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn symlink_to_another_users_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let inst = instance(&with_schedule(
        r#"{ "id": "x", "task": "t", "modes": ["a"] }"#,
    ));
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("schedules.json");
    std::fs::rename(inst.path().join("schedules.json"), &target).unwrap();
    std::os::unix::fs::symlink(&target, inst.path().join("schedules.json")).unwrap();
    // A symlink to a file of our own is fine.
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Owned by another user (needs root to arrange; as another user it cannot be set up).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        nix::unistd::chown(&target, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert_rejected(
            &inst,
            "schedules.json:1:1: refused: schedules.json is a symlink owned by, or to a file owned by, another user (uid 65534)",
        );
        let out = inst.run(&["--allow-insecure-config", "validate"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    } else {
        eprintln!("not root: the foreign-owner half of this test needs chown and was not run");
    }
}

/// The binary is a position-independent executable, its image randomized like everything
/// else: it listens on sockets (metrics, MCP). It once was linked at a fixed address to spare
/// the loader chrono-tz's 1.2 MB of pointer tables; time zones now come from the system's
/// database, so there is nothing left to relocate at start (figure 5 in BENCHMARKS.md).
#[cfg(target_os = "linux")]
#[test]
fn the_binary_is_position_independent() {
    const ET_DYN: u16 = 3;
    use std::io::Read;
    let mut header = [0u8; 18];
    std::fs::File::open(common::BIN)
        .and_then(|mut f| f.read_exact(&mut header))
        .unwrap();
    assert_eq!(&header[..4], b"\x7fELF");
    let e_type = u16::from_le_bytes([header[16], header[17]]);
    assert_eq!(e_type, ET_DYN);
}

/// A minimal TZif file (RFC 8536, version 2): no transitions, one local time type at
/// `offset_hours` east of UTC named `abbr`, and its POSIX rule in the footer.
fn tzif(offset_hours: i32, abbr: &str) -> Vec<u8> {
    let mut counts = Vec::new();
    for count in [0u32, 0, 0, 0, 1, abbr.len() as u32 + 1] {
        counts.extend(count.to_be_bytes());
    }
    let mut block = Vec::new();
    block.extend((offset_hours * 3600).to_be_bytes());
    block.extend([0u8, 0u8]);
    block.extend(abbr.as_bytes());
    block.push(0);
    let mut file = Vec::new();
    for version in [b'2', b'2'] {
        file.extend(b"TZif");
        file.push(version);
        file.extend([0u8; 15]);
        file.extend(&counts);
        file.extend(&block);
    }
    file.extend(format!("\n{abbr}{}\n", -offset_hours).as_bytes());
    file
}

/// Time zones come from the system's database (TZDIR first), as cron and systemd read them:
/// a tzdata update applies without a rebuild. A zone file the test writes moves `next`.
#[test]
fn next_reads_time_zones_from_the_system_database_tzdir_first() {
    let inst = Instance::new(
        r#"[{ "id": "noon", "task": "t", "cron": "0 12 * * *", "timezone": "Europe/Berlin" }]"#,
    );
    for mode in [
        "implementation",
        "validation",
        "quality",
        "integration",
        "planning",
    ] {
        inst.mode(mode, "[\"true\"]", "");
    }
    let next = |tzdir: Option<&std::path::Path>| {
        let mut command = inst.command(&["next", "noon", "--count", "1"]);
        if let Some(dir) = tzdir {
            command.env("TZDIR", dir);
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tzdir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tzdir.path().join("Europe")).unwrap();
    std::fs::write(tzdir.path().join("Europe/Berlin"), tzif(5, "XYZ")).unwrap();
    let shifted = next(Some(tzdir.path()));
    // Noon at UTC+5 is 07:00 UTC, every day of the year.
    assert!(shifted.contains("12:00:00 XYZ (+05:00)"), "{shifted}");
    assert!(shifted.contains("T07:00:00Z"), "{shifted}");
    if std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
        let system = next(None);
        assert!(
            system.contains(" CET (+01:00)") || system.contains(" CEST (+02:00)"),
            "{system}"
        );
    }
}

#[test]
fn agent_fields_in_a_mode() {
    let inst = instance(&with_schedule(
        r#"{ "id": "x", "task": "t", "modes": ["a"] }"#,
    ));
    inst.write("modes/a.md", "+++\nname = \"A\"\nagent = \"claud\"\n+++\n");
    assert_rejected(
        &inst,
        "modes/a.md:3:9: front matter: unknown variant `claud`, expected one of `claude`, `codex`, `gemini`, `aider`",
    );
    inst.write(
        "modes/a.md",
        "+++\nagent = \"codex\"\noutput = \"json\"\n+++\n",
    );
    assert_rejected(
        &inst,
        "modes/a.md:3:10: front matter: unknown variant `json`, expected one of `auto`, `text`, `claude-json`, `codex-jsonl`, `gemini-json`",
    );
    inst.write(
        "modes/a.md",
        "+++\nagent = \"codex\"\nprice = { input_per_mtok = -2, output_per_mtok = 1 }\n+++\n",
    );
    assert_rejected(
        &inst,
        "modes/a.md:3:28: front matter: -2 is not an amount of dollars",
    );
    inst.write(
        "modes/a.md",
        "+++\nagent = \"codex\"\nfallback = [[\"codex\"], []]\n+++\n",
    );
    assert_rejected(&inst, "modes/a.md:3:1: `fallback` needs a program");
    inst.write(
        "modes/a.md",
        "+++\nagent = \"codex\"\nexpect_output = \"yes\"\n+++\n",
    );
    assert_rejected(
        &inst,
        "modes/a.md:3:17: front matter: invalid type: string \"yes\", expected a boolean",
    );
    inst.write(
        "modes/a.md",
        "+++\nagent = \"gemini\"\nfallback = [[\"gemini\", \"-m\", \"gemini-2.5-flash\"]]\nprice = { input_per_mtok = 1.25, output_per_mtok = 10, cached_input_per_mtok = 0.31 }\nexpect_output = true\n+++\n# A\n",
    );
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn rate_limit_pause_and_budgets() {
    let file = |top: &str, defaults: &str, entry: &str| {
        format!(
            "{{\n  \"version\": 1,{top}\n  \"defaults\": {{ \"modes\": [\"a\"]{defaults} }},\n  \"schedules\": [\n    {{ \"id\": \"x\", \"task\": \"t\"{entry} }}\n  ]\n}}\n"
        )
    };
    let inst = instance(&file("", ", \"rate_limit_pause\": \"soon\"", ""));
    assert_rejected(
        &inst,
        "schedules.json:3:53: \"rate_limit_pause\": bad duration \"soon\"",
    );
    let inst = instance(&file("\n  \"max_cost_usd_per_day\": -1,", "", ""));
    assert_rejected(
        &inst,
        "schedules.json:3:27: \"max_cost_usd_per_day\": -1 is not an amount of dollars (expected a number, 0 or more)",
    );
    let inst = instance(&file("", "", ", \"max_cost_usd_per_day\": \"lots\""));
    assert_rejected(
        &inst,
        "schedules.json:5:55: \"max_cost_usd_per_day\": invalid type: string \"lots\"",
    );
    let inst = instance(&file("", ", \"max_cost_usd_per_day\": -0.5", ""));
    assert_rejected(
        &inst,
        "schedules.json:3:57: \"max_cost_usd_per_day\": -0.5 is not an amount",
    );
    let inst = instance(&file(
        "\n  \"max_cost_usd_per_day\": 20,",
        ", \"rate_limit_pause\": \"30m\", \"max_cost_usd_per_day\": 5",
        ", \"max_cost_usd_per_day\": 2.5, \"rate_limit_pause\": \"1h\"",
    ));
    let out = inst.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
