//! `run-cycle` on a terminal shows the running mode with its elapsed time, rewritten in
//! place; off a terminal its output has no control characters (the byte-exact lines are
//! held by tests/run_cycle.rs).

mod common;

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use common::{Instance, text};

fn instance() -> Instance {
    let inst = Instance::new(r#"[{ "id": "s", "task": "t", "modes": ["nap", "pass"] }]"#);
    inst.mode("nap", "[\"sleep\", \"1.2\"]", "prompt = \"none\"");
    inst.mode("pass", "[\"true\"]", "prompt = \"none\"");
    inst
}

#[test]
fn on_a_terminal_the_running_mode_and_its_elapsed_time_are_rewritten_in_place() {
    let inst = instance();
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
    let mut child = inst
        .command(&["run-cycle"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // Read until the child is gone and its side of the terminal closed (EIO on Linux).
    let mut master = std::fs::File::from(master);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let status = child.wait().unwrap();
    let screen = String::from_utf8_lossy(&bytes);
    assert_eq!(status.code(), Some(0), "{screen:?}");
    // Redrawn in place: carriage return and erase-line before each drawing, the elapsed
    // time growing, and several drawings over the 1.2 s of the mode.
    let drawings: Vec<&str> = screen
        .split("\r\x1b[2K")
        .filter(|d| d.starts_with("  nap             running"))
        .collect();
    assert!(drawings.len() >= 3, "{screen:?}");
    let elapsed: Vec<&str> = drawings
        .iter()
        .map(|d| d.trim_end().rsplit(' ').next().unwrap())
        .collect();
    assert!(
        elapsed.iter().any(|e| e.ends_with("ms") && *e != "0ms")
            && elapsed
                .last()
                .is_some_and(|e| e.ends_with('s') && !e.ends_with("ms")),
        "elapsed times {elapsed:?}"
    );
    // The live line is erased before the mode's own line is printed in its place.
    assert!(
        screen.contains("\r\x1b[2K  nap             ok "),
        "{screen:?}"
    );
    assert!(screen.contains("s: cycle ok in"), "{screen:?}");
}

#[test]
fn off_a_terminal_the_output_has_no_control_characters() {
    let inst = instance();
    let out = inst.run(&["run-cycle"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !stream.iter().any(|b| *b == b'\r' || *b == 0x1b),
            "{name}: {}",
            text(&out)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "s: cycle started (2 modes)");
    assert!(lines[1].starts_with("  nap             ok "), "{stdout}");
}
