//! What the harness reads from the system: the binary under test, a process's
//! context switches and RSS from `/proc`, the machine's description, and a clock
//! that processes can compare.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `loop-orchestrator` binary: `LOOP_ORCHESTRATOR_BIN`, else next to this executable.
pub fn orchestrator_bin() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LOOP_ORCHESTRATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the bench binary: {e}"))?;
    let path = exe.with_file_name("loop-orchestrator");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it into the same target dir first \
             (`cargo build --release -p loop-orchestrator`) or set LOOP_ORCHESTRATOR_BIN",
            path.display()
        ))
    }
}

/// The benchmark's own executable, for worker processes.
pub fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot locate the bench binary: {e}"))
}

/// Where temp directories go: `BENCH_DIR`, else the system temp dir. The filesystem
/// matters (fdatasync on tmpfs is free), so the machine block names it.
pub fn scratch_root() -> PathBuf {
    std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

pub fn tempdir() -> Result<tempfile::TempDir, String> {
    let root = scratch_root();
    tempfile::Builder::new()
        .prefix("lo-bench-")
        .tempdir_in(&root)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", root.display()))
}

/// Nanoseconds of CLOCK_MONOTONIC, comparable between processes of this machine.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// What `/proc` says about a process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Voluntary context switches summed over the threads alive now (a thread that
    /// exited takes its count with it).
    pub voluntary_switches: u64,
    pub threads: usize,
    pub rss_kib: u64,
    /// `RssAnon`: the process's own memory, without the pages of its binary and libraries
    /// that the page cache maps in (clean, shared, reclaimable).
    pub anon_kib: u64,
}

fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn proc_sample(pid: u32) -> Result<ProcSample, String> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(base.join("status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let mut sample = ProcSample {
        rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
        anon_kib: status_field(&status, "RssAnon:").unwrap_or(0),
        ..ProcSample::default()
    };
    let tasks = std::fs::read_dir(base.join("task"))
        .map_err(|e| format!("cannot list /proc/{pid}/task: {e}"))?;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(task.path().join("status")) {
            sample.threads += 1;
            sample.voluntary_switches +=
                status_field(&text, "voluntary_ctxt_switches:").unwrap_or(0);
        }
    }
    Ok(sample)
}

/// Runs a command to completion and returns its wall time, or why it failed.
pub fn time_command(command: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let elapsed = start.elapsed();
    if output.status.success() {
        Ok(elapsed)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let head: String = stderr.lines().take(5).collect::<Vec<_>>().join(" / ");
        Err(format!("{command:?} exited with {}: {head}", output.status))
    }
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The filesystem type of the mount that holds `path` (longest mount-point prefix).
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let point = fields.next()?;
            let kind = fields.next()?;
            path.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

/// The machine block of the benchmarks file: cores, CPU, memory, kernel, filesystem.
pub fn machine_description(bin: Option<&Path>) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = status_field(&meminfo, "MemTotal:").unwrap_or(0) as f64 / 1024.0 / 1024.0;
    let kernel = command_line("uname", &["-srm"]).unwrap_or_else(|| "unknown kernel".into());
    let root = scratch_root();
    let version = bin
        .and_then(|b| command_line(&b.display().to_string(), &["--version"]))
        .unwrap_or_else(|| "loop-orchestrator (version unknown)".into());
    format!(
        "- cores: {cores} ({model}), memory: {mem_gib:.1} GiB\n\
         - kernel: {kernel}\n\
         - temp files: {} on {}\n\
         - binary: {version}, release profile\n",
        root.display(),
        filesystem_of(&root)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_threads_switches_and_rss() {
        let sample = proc_sample(std::process::id()).unwrap();
        assert!(sample.threads >= 1);
        assert!(sample.rss_kib > 0);
        assert!(sample.anon_kib > 0 && sample.anon_kib <= sample.rss_kib);
    }

    #[test]
    fn status_field_reads_the_first_number() {
        let text = "Name:\tx\nVmRSS:\t  1234 kB\nvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_field(text, "VmRSS:"), Some(1234));
        assert_eq!(status_field(text, "voluntary_ctxt_switches:"), Some(7));
        assert_eq!(status_field(text, "Threads:"), None);
    }
}
