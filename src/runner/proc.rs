//! What `/proc` says about processes and process groups (proc(5), `/proc/<pid>/stat`):
//! a process's start time, its state and group, and whether a group is still alive.
//!
//! The rule for a group, used by the stop machine and by the reaper of leftover groups
//! alike: **a group is alive while one of its members has not died.** A zombie (state `Z`)
//! or a dying task (`X`) has died: it runs no code, holds no pipe and ignores every signal,
//! and only waits for its parent to reap it. So a group whose only members are zombies is
//! not alive:
//!
//! - for the stop machine there is nothing left to stop: the leader is reaped by the runner
//!   itself, and the other zombies wait for a parent that may be outside the group (init, a
//!   subreaper, an escaped descendant) and take as long as that parent likes;
//! - for the reaper of leftover groups there is nothing left to kill, and the group was
//!   "already gone".
//!
//! `kill(2)` answers differently (it succeeds on a zombie), so it is only used for the
//! answer it gives cheaply and for certain: no process at all is in the group.

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

/// The fields of `/proc/<pid>/stat` this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `T`, `Z`, `X`, … (field 3).
    pub state: char,
    /// The process group (field 5).
    pub pgrp: i32,
    /// Start time in clock ticks since boot (field 22): with the pid, it names one process
    /// even after the pid is reused.
    pub start_time: u64,
}

impl Stat {
    /// Whether the process has died and only waits to be reaped.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The stat of process `pid`, `None` when it does not exist (any more).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    // Fields 6..=21 lie between the group and the start time.
    let start_time = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        start_time,
    })
}

/// Start time of a process in clock ticks since boot, `None` when it does not exist.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Whether process `pid` exists and has not died (zombies do not run).
pub fn running(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_dead())
}

/// Whether process group `pgid` is alive: one of its members has not died (see the module
/// doc: a group of zombies is not alive). When `/proc` cannot be read, any member counts.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        // 0 and negative values would address our own group or every process.
        return false;
    }
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .any(|s| s.pgrp == pgid && !s.is_dead())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command};
    use std::time::Duration;

    /// Waits (bounded) until process `pid` is in `state`.
    fn wait_for_state(pid: i32, state: char) {
        for _ in 0..1000 {
            if stat(pid).is_some_and(|s| s.state == state) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("process {pid} never reached state {state}: {:?}", stat(pid));
    }

    fn in_own_group(program: &str, args: &[&str]) -> (Child, i32) {
        let child = Command::new(program)
            .args(args)
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        (child, pgid)
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id() as i32;
        let a = start_time(me).unwrap();
        assert_eq!(Some(a), start_time(me));
        assert!(start_time(i32::MAX).is_none());
        let own = stat(me).unwrap();
        assert_eq!(own.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(running(me));
    }

    #[test]
    fn stat_reads_past_a_command_name_with_spaces_and_parentheses() {
        // The program name becomes the command name (field 2) of the process.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a) b (c");
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let (mut child, pgid) = in_own_group(odd.to_str().unwrap(), &["30"]);
        let s = stat(pgid).unwrap();
        assert_eq!(s.pgrp, pgid);
        assert!(!s.is_dead());
        assert!(s.start_time >= start_time(1).unwrap());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_group_whose_only_member_is_an_unreaped_zombie_is_not_alive() {
        let (mut child, pgid) = in_own_group("true", &[]);
        // Not reaped: the child stays a zombie of this process until wait().
        wait_for_state(pgid, 'Z');
        assert_eq!(
            killpg(Pid::from_raw(pgid), None),
            Ok(()),
            "the kernel still counts the zombie as a member"
        );
        assert!(!group_alive(pgid), "a group of zombies is not alive");
        assert!(!running(pgid));
        child.wait().unwrap();
        assert!(!group_alive(pgid));
    }

    #[test]
    fn a_group_with_a_running_member_beside_a_zombie_is_alive() {
        // `sh` forks `true`, then becomes `sleep`, which never reaps it: a zombie whose
        // parent still runs in the same group.
        let (mut child, pgid) = in_own_group("sh", &["-c", "true & exec sleep 30"]);
        let zombie = (0..1000)
            .find_map(|_| {
                let found = std::fs::read_dir("/proc")
                    .unwrap()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .find(|pid| {
                        *pid != pgid && stat(*pid).is_some_and(|s| s.pgrp == pgid && s.is_dead())
                    });
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                found
            })
            .expect("the fixture's zombie never appeared");
        assert!(!running(zombie));
        assert!(group_alive(pgid), "the sleeping member is alive");

        child.kill().unwrap();
        // The leader is a zombie of this process now, its own zombie child one of init's.
        wait_for_state(pgid, 'Z');
        assert!(!group_alive(pgid));
        child.wait().unwrap();
        assert!(!group_alive(pgid));
    }

    #[test]
    fn our_own_group_and_every_process_are_never_addressed() {
        assert!(!group_alive(0));
        assert!(!group_alive(1));
        assert!(!group_alive(-1));
    }
}
