//! The shipped systemd units and the Debian package, under a real systemd.
//!
//! `tests/systemd/run.sh` boots a minimal Debian root (debootstrap, cached outside the
//! repository by `tests/systemd/root.sh`) with `systemd-nspawn -b`, twice: once with this
//! binary and `contrib/` copied in by hand, once with the package (`cargo deb`) installed
//! by `dpkg -i`. Inside, `tests/systemd/inside.sh` drives the service with `systemctl` and
//! reads the journal; each of its checks is one `ok ID ...` / `not ok ID ...` line, and
//! this test requires every ID below to be `ok` — a check that never ran fails too.
//!
//! Needs root, `systemd-nspawn` (Debian: systemd-container) and `debootstrap`; without
//! them the test says so and passes. Without `cargo-deb` the package part is skipped with
//! a message. Runtime: about 30 s with the root cached; the first run builds the root
//! (a minute or two, from Debian's mirror).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_loop-orchestrator");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The checks of the hand-installed unit, in the order inside.sh runs them.
const MANUAL: &[&str] = &[
    "setup-user",
    "verify",
    // 1. start
    "start-active",
    "start-after-ready",
    "start-reaped",
    "type-notify",
    "status-text",
    "no-unit-warnings",
    "userns",
    // 2. a valid edit + reload
    "reload-valid",
    "reload-sighup",
    "reload-fires",
    // 3. an invalid edit + reload
    "reload-invalid-fails",
    "reload-invalid-journal",
    "reload-invalid-active",
    "reload-invalid-last-good",
    // 4. the watchdog
    "watchdog-restart",
    "watchdog-result",
    "watchdog-old-gone",
    "watchdog-reaped",
    // 5. stop while a mode runs
    "stop-result",
    "stop-interrupted",
    "stop-nothing-left",
];

/// The checks of the package in a fresh root (6).
const DEB: &[&str] = &[
    "deb-install",
    "deb-user",
    "deb-instance",
    "deb-verify",
    "deb-enable-now",
    "deb-reload",
    "deb-security",
    "template",
];

/// Why the container test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (systemd-nspawn and debootstrap need root)".into());
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
    ] {
        // debootstrap lives in /usr/sbin, which a non-login PATH may lack.
        let path = format!(
            "{}:/usr/local/sbin:/usr/sbin:/sbin",
            std::env::var("PATH").unwrap_or_default()
        );
        if which::which_in(tool, Some(path), "/").is_err() {
            return Some(format!(
                "{tool} not found (apt-get install systemd-container debootstrap; missing: {package})"
            ));
        }
    }
    None
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The package of this very binary: `cargo deb --no-build` packages the dev-profile build
/// the test runs (cargo-deb warns that it prefers release builds; a release build here
/// would cost minutes). `Ok(None)` when cargo-deb is not installed; an error when it fails.
fn build_deb(out: &Path) -> Result<Option<PathBuf>, String> {
    let installed = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return Ok(None);
    }
    let output = Command::new(cargo())
        .current_dir(REPO)
        .args([
            "deb",
            "--profile",
            "dev",
            "--no-build",
            "--fast",
            "--output",
        ])
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run cargo deb: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo deb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = PathBuf::from(stdout.trim().lines().last().unwrap_or_default());
    if path.extension().is_some_and(|e| e == "deb") && path.is_file() {
        Ok(Some(path))
    } else {
        Err(format!("cargo deb printed no package path: {stdout:?}"))
    }
}

/// Runs `run.sh` in a process group of its own, killed whole when `limit` runs out.
fn run_bounded(mut command: Command, limit: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start run.sh: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("run.sh exited with {status}"))
            };
        }
        if Instant::now() >= deadline {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(format!("run.sh did not finish within {limit:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `(id, ok, line)` of each result line of a TAP file; `#` lines are printed as they are.
fn results(path: &Path) -> Vec<(String, bool, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines() {
        let (ok, rest) = if let Some(rest) = line.strip_prefix("not ok ") {
            (false, rest)
        } else if let Some(rest) = line.strip_prefix("ok ") {
            (true, rest)
        } else {
            continue;
        };
        let id = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        found.push((id, ok, line.to_string()));
    }
    found
}

/// Every expected ID present and ok; the problems otherwise.
fn judge(part: &str, dir: &Path, expected: &[&str]) -> Vec<String> {
    let tap = dir.join(format!("{part}.tap"));
    for line in std::fs::read_to_string(&tap).unwrap_or_default().lines() {
        eprintln!("[{part}] {line}");
    }
    let found = results(&tap);
    let mut problems = Vec::new();
    for id in expected {
        match found.iter().find(|(f, _, _)| f == id) {
            Some((_, true, _)) => {}
            Some((_, false, line)) => problems.push(format!("{part}: {line}")),
            None => problems.push(format!("{part}: check {id} never ran")),
        }
    }
    if !problems.is_empty() {
        let journal = std::fs::read_to_string(dir.join(format!("{part}.journal")))
            .unwrap_or_else(|_| "(no journal)".into());
        let tail: Vec<&str> = journal.lines().rev().take(80).collect();
        eprintln!("[{part}] journal, last 80 lines:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        for name in ["log", "console"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(format!("{part}.{name}"))) {
                eprintln!("[{part}] {name}:\n{text}");
            }
        }
    }
    problems
}

#[test]
fn the_units_and_the_package_work_under_a_real_systemd() {
    if let Some(reason) = missing_prerequisite() {
        // CI provides every tool: a skip there would hide a failure.
        assert!(
            std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_none(),
            "{reason}, and LOOP_TEST_REQUIRE_ALL says every test must run"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let deb = build_deb(scratch.path()).unwrap_or_else(|err| panic!("{err}"));
    if deb.is_none() {
        assert!(
            std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_none(),
            "cargo-deb is not installed, and LOOP_TEST_REQUIRE_ALL says every test must run"
        );
        eprintln!(
            "SKIPPED the package part (6): cargo-deb not installed (cargo install --locked cargo-deb)"
        );
    }
    let results_dir = scratch.path().join("results");
    std::fs::create_dir(&results_dir).unwrap();

    let mut command = Command::new(Path::new(REPO).join("tests/systemd/run.sh"));
    command
        .arg(BIN)
        .arg(deb.as_deref().unwrap_or(Path::new("-")))
        .arg(&results_dir);
    // A cold root build (debootstrap) plus two bounded boots.
    let outcome = run_bounded(command, Duration::from_secs(1_500));

    let mut problems = judge("manual", &results_dir, MANUAL);
    if deb.is_some() {
        problems.extend(judge("deb", &results_dir, DEB));
    }
    eprintln!("the systemd test took {:.1?}", started.elapsed());
    if let Err(err) = outcome {
        problems.insert(0, err);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The template unit must stay the service unit with `/srv/loop/%i` for `/srv/loop`: a
/// hardening line added to one and not the other would go unnoticed.
#[test]
fn the_template_unit_is_the_service_unit_for_an_instance_directory() {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new(REPO).join("contrib/systemd").join(name)).unwrap()
    };
    let service = read("loop-orchestrator.service");
    let template = read("loop-orchestrator@.service");
    // From `[Unit]` on; the header comments differ.
    let body = |text: &str| text[text.find("[Unit]").expect("[Unit]")..].to_string();
    let expected = body(&service)
        .replace("work loops (/srv/loop)\n", "work loops (/srv/loop/%i)\n")
        .replace("=/srv/loop\n", "=/srv/loop/%i\n")
        .replace(
            "`systemctl edit loop-orchestrator`",
            "`systemctl edit loop-orchestrator@NAME`",
        );
    let actual = body(&template);
    for (n, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(
            got,
            want,
            "loop-orchestrator@.service, line {} of [Unit] on",
            n + 1
        );
    }
    assert_eq!(actual.lines().count(), expected.lines().count());
    for key in [
        "WorkingDirectory=/srv/loop/%i",
        "Environment=LOOP_ORCHESTRATOR_DIR=/srv/loop/%i",
        "ReadWritePaths=/srv/loop/%i",
    ] {
        assert!(template.lines().any(|l| l == key), "{key}");
    }
}
