//! Loads and checks an instance's configuration: `schedules.json` and `modes/*.md`.
//!
//! Parse, then check: serde (unknown fields rejected) turns text into types, each schedule
//! entry on its own so one bad entry does not hide the problems of the next; `check` then
//! judges what types cannot (duplicate ids, unknown modes, limits). Every problem carries
//! the file, line and column, found through a position map of the JSON text. `validate`,
//! `run-cycle` and `serve` all load through [`Config::load`], so they agree.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::zone::Zone;
use serde::Deserialize;
use serde_json::Value;

mod edit;
mod spans;

pub use edit::{Edited, set_enabled};
use spans::{Seg, Spans};

use crate::agent::Usd;
use crate::duration::HumanDuration;
use crate::mode::Mode;
use crate::schedule::{Schedule, ScheduleFields, ZoneField, is_slug};

pub const SCHEDULES_FILE: &str = "schedules.json";
pub const MODES_DIR: &str = "modes";
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub use crate::problem::{Problem, Problems};

/// Bounds of persistent-memory.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySettings {
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    #[serde(default = "default_target_lines")]
    pub target_lines: usize,
}

fn default_max_lines() -> usize {
    300
}
fn default_target_lines() -> usize {
    240
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            max_lines: default_max_lines(),
            target_lines: default_target_lines(),
        }
    }
}

/// schedules.json as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFields {
    version: u32,
    timezone: Option<ZoneField>,
    #[serde(default)]
    defaults: Option<Value>,
    #[serde(default)]
    memory: Option<MemorySettings>,
    max_concurrent_cycles: Option<usize>,
    shutdown_grace: Option<HumanDuration>,
    metrics: Option<ListenAddress>,
    #[serde(default)]
    cluster: Option<crate::cluster::ClusterConfig>,
    max_cost_usd_per_day: Option<Usd>,
    /// Required and known here; its entries are read one by one from the document (by
    /// reference: copying 10,000 entries out was a fifth of a load).
    #[allow(dead_code)]
    schedules: serde::de::IgnoredAny,
}

/// `"metrics"`: an IP address and port, parsed where the value stands so an error has its
/// position.
#[derive(Debug)]
struct ListenAddress(std::net::SocketAddr);

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(ListenAddress).map_err(|_| {
            serde::de::Error::custom(format!(
                "bad address {text:?} (expected an IP address and port: \"127.0.0.1:9464\" or \"[::1]:9464\")"
            ))
        })
    }
}

/// A validated instance configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub timezone: Zone,
    pub memory: MemorySettings,
    pub max_concurrent_cycles: usize,
    pub shutdown_grace: Duration,
    /// Where `serve` answers Prometheus scrapes (`--metrics` wins).
    pub metrics: Option<std::net::SocketAddr>,
    /// The instance's daily budget over all its schedules.
    pub max_cost_usd_per_day: Option<f64>,
    pub schedules: Vec<Schedule>,
    pub modes: BTreeMap<String, Mode>,
    /// SPEC §11; `None`: files only.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Config {
    /// Reads and checks `dir/schedules.json` and `dir/modes/*.md`.
    pub fn load(dir: &Path) -> Result<Config, Problems> {
        let path = dir.join(SCHEDULES_FILE);
        let text = std::fs::read_to_string(&path).map_err(|err| {
            Problems(vec![Problem {
                file: SCHEDULES_FILE.into(),
                line: 1,
                column: 1,
                message: format!(
                    "cannot read {}: {err} (create one with `loop-orchestrator init`)",
                    path.display()
                ),
            }])
        })?;
        let (modes, mode_problems) = load_modes(dir);
        let mut problems = Vec::new();
        if !insecure_allowed() {
            problems.extend(check_permissions(dir, SCHEDULES_FILE));
            for mode in modes.values() {
                let rel = format!("{MODES_DIR}/{}.md", mode.slug);
                problems.extend(check_permissions(dir, &rel));
            }
        }
        let config = parse_schedules(dir, &text, &modes, &mut problems);
        problems.extend(mode_problems);
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(Problems(problems)),
        }
    }

    pub fn schedule(&self, id: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.id == id)
    }
}

/// Whether files anyone else can write are accepted; set once from `--allow-insecure-config`.
/// A process-wide policy rather than a parameter: it is fixed before anything loads and every
/// load of the process (validate, run-cycle, each reload of serve) must apply the same one.
static ALLOW_INSECURE: AtomicBool = AtomicBool::new(false);

pub fn allow_insecure_config(allow: bool) {
    ALLOW_INSECURE.store(allow, Ordering::Relaxed);
}

fn insecure_allowed() -> bool {
    ALLOW_INSECURE.load(Ordering::Relaxed)
}

/// Refuses a file that can run commands as this user when someone else could write it, as cron
/// refuses an insecure crontab: writable by group or others, or a symlink owned by (or to a
/// file owned by) another user than this one or root.
fn check_permissions(dir: &Path, rel: &str) -> Option<Problem> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(rel);
    let link = std::fs::symlink_metadata(&path).ok()?;
    let target = std::fs::metadata(&path).ok()?;
    let me = nix::unistd::geteuid().as_raw();
    let foreign = |uid: u32| uid != me && uid != 0;
    let fix = "or pass --allow-insecure-config";
    let message = if target.mode() & 0o022 != 0 {
        format!(
            "refused: {rel} is writable by {} (mode {:04o}), and it says what commands run as this user; fix with `chmod go-w {rel}` {fix}",
            match target.mode() & 0o022 {
                0o020 => "its group",
                0o002 => "others",
                _ => "its group and others",
            },
            target.mode() & 0o7777
        )
    } else if link.file_type().is_symlink() && (foreign(link.uid()) || foreign(target.uid())) {
        let owner = if foreign(link.uid()) {
            link.uid()
        } else {
            target.uid()
        };
        format!(
            "refused: {rel} is a symlink owned by, or to a file owned by, another user (uid {owner}); replace it with a file of your own {fix}"
        )
    } else {
        return None;
    };
    Some(Problem {
        file: rel.to_string(),
        line: 1,
        column: 1,
        message,
    })
}

/// Parses the text of schedules.json against the loaded modes. Pushes every problem found;
/// returns the configuration when the file could be read far enough to build one.
pub fn parse_schedules(
    dir: &Path,
    text: &str,
    modes: &BTreeMap<String, Mode>,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            problems.push(Problem {
                file: SCHEDULES_FILE.into(),
                line: err.line().max(1),
                column: err.column().max(1),
                message: format!("invalid JSON: {}", strip_position(&err.to_string())),
            });
            return None;
        }
    };
    // The syntax tree only places problems, so it is built at the first one: a valid file of
    // 10,000 schedules is parsed once, by serde_json.
    let spans = std::cell::OnceCell::new();
    let at = |path: &[Seg], key: bool| -> (usize, usize) {
        spans
            .get_or_init(|| Spans::build(text))
            .position(text, path, key)
    };
    let mut report = |path: Vec<Seg>, message: String, key: bool| {
        let (line, column) = at(&path, key);
        problems.push(Problem {
            file: SCHEDULES_FILE.into(),
            line,
            column,
            message,
        });
    };

    let file: FileFields = match deserialize(&value, Vec::new()) {
        Ok(file) => file,
        Err((path, message, key)) => {
            report(path, message, key);
            return None;
        }
    };
    if file.version != 1 {
        report(
            vec![Seg::Key("version".into())],
            format!("unsupported version {} (expected 1)", file.version),
            false,
        );
    }
    let defaults: ScheduleFields = match &file.defaults {
        None => ScheduleFields::default(),
        Some(value) => match deserialize(value, vec![Seg::Key("defaults".into())]) {
            Ok(fields) => fields,
            Err((path, message, key)) => {
                report(path, message, key);
                ScheduleFields::default()
            }
        },
    };
    for field in ["id", "task"] {
        let set = if field == "id" {
            defaults.id.is_some()
        } else {
            defaults.task.is_some()
        };
        if set {
            report(
                vec![Seg::Key("defaults".into()), Seg::Key(field.into())],
                format!("\"{field}\" belongs to each schedule, not to defaults"),
                true,
            );
        }
    }
    let memory = file.memory.unwrap_or_default();
    if memory.target_lines == 0 || memory.target_lines >= memory.max_lines {
        report(
            vec![Seg::Key("memory".into())],
            format!(
                "memory.target_lines ({}) must be more than 0 and less than memory.max_lines ({})",
                memory.target_lines, memory.max_lines
            ),
            false,
        );
    }
    let max_concurrent_cycles = file.max_concurrent_cycles.unwrap_or(1);
    if max_concurrent_cycles == 0 {
        report(
            vec![Seg::Key("max_concurrent_cycles".into())],
            "max_concurrent_cycles must be at least 1".into(),
            false,
        );
    }
    let timezone = file.timezone.map_or(Zone::utc(), |z| z.0);
    for (field, message) in file.cluster.iter().flat_map(|c| c.check()) {
        report(
            vec![Seg::Key("cluster".into()), Seg::Key(field.into())],
            message,
            false,
        );
    }

    let mut schedules = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut checked_dirs: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let defaults_text = file
        .defaults
        .as_ref()
        .map_or(String::new(), Value::to_string);
    let entries: &[Value] = match value.get("schedules") {
        Some(Value::Array(entries)) => entries,
        _ => {
            report(
                vec![Seg::Key("schedules".into())],
                "\"schedules\" must be an array of schedule objects".into(),
                false,
            );
            &[]
        }
    };
    for (index, entry) in entries.iter().enumerate() {
        let base = vec![Seg::Key("schedules".into()), Seg::Index(index)];
        let with = |key: &str| {
            let mut path = base.clone();
            path.push(Seg::Key(key.into()));
            path
        };
        // Read the id from the raw entry so an entry with another error still takes part in
        // the duplicate check.
        if let Some(id) = entry.get("id").and_then(Value::as_str)
            && let Some(first) = seen.insert(id.to_string(), index)
        {
            let first = at(&[Seg::Key("schedules".into()), Seg::Index(first)], false).0;
            report(
                with("id"),
                format!("duplicate id {id:?} (first used on line {first})"),
                false,
            );
        }
        let fields: ScheduleFields = match deserialize(entry, base.clone()) {
            Ok(fields) => fields,
            Err((path, message, key)) => {
                report(path, message, key);
                continue;
            }
        };
        match &fields.id {
            None => {
                report(
                    base.clone(),
                    "schedule has no \"id\" (add a unique slug such as \"main-loop\")".into(),
                    false,
                );
                continue;
            }
            Some(id) if !is_slug(id) => report(
                with("id"),
                format!("id {id:?} is not a slug (use lowercase letters, digits, '-' and '_')"),
                false,
            ),
            Some(_) => {}
        }
        if fields.task.as_deref().is_none_or(|t| t.trim().is_empty()) {
            report(
                base.clone(),
                "schedule has no \"task\" (the text handed to every mode)".into(),
                false,
            );
        }
        let mut schedule = Schedule::resolve(fields.clone(), &defaults, timezone.clone(), dir);
        // serde_json's maps are sorted, so this text is canonical.
        schedule.fingerprint = format!("{entry}|{defaults_text}|{}", timezone.name());
        let modes_path = if fields.modes.is_some() {
            with("modes")
        } else {
            vec![Seg::Key("defaults".into()), Seg::Key("modes".into())]
        };
        if schedule.modes.is_empty() {
            report(
                modes_path.clone(),
                "\"modes\" is empty (name at least one mode of modes/)".into(),
                false,
            );
        }
        for (i, mode) in schedule.modes.iter().enumerate() {
            if !modes.contains_key(mode) {
                let mut path = modes_path.clone();
                path.push(Seg::Index(i));
                let known: Vec<&str> = modes.keys().map(String::as_str).collect();
                report(
                    path,
                    format!(
                        "unknown mode {mode:?} (expected one of: {}; a mode is a file modes/<slug>.md)",
                        if known.is_empty() {
                            "none defined".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                    false,
                );
            }
        }
        if schedule.max_failures == 0 {
            report(
                with("max_failures"),
                "max_failures must be at least 1".into(),
                false,
            );
        }
        if matches!(&schedule.on_escalate, Some(argv) if argv.first().is_none_or(|p| p.is_empty()))
        {
            report(
                with("on_escalate"),
                "on_escalate needs a program: an argv such as [\"notify-send\", \"escalated\"]"
                    .into(),
                false,
            );
        }
        if schedule.timeout.is_zero() {
            report(
                with("timeout"),
                "timeout must be more than zero".into(),
                false,
            );
        }
        // Schedules share a few directories; each is looked at once.
        if !checked_dirs.contains(&schedule.cwd) {
            if !schedule.cwd.is_dir() {
                report(
                    with("cwd"),
                    format!("cwd {} is not a directory", schedule.cwd.display()),
                    false,
                );
            }
            checked_dirs.insert(schedule.cwd.clone());
        }
        schedules.push(schedule);
    }
    Some(Config {
        dir: dir.to_path_buf(),
        timezone,
        memory,
        max_concurrent_cycles,
        shutdown_grace: file.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0),
        metrics: file.metrics.map(|a| a.0),
        max_cost_usd_per_day: file.max_cost_usd_per_day.map(|u| u.0),
        schedules,
        modes: modes.clone(),
        cluster: file.cluster,
    })
}

/// Reads every `modes/*.md`. Returns the modes that parsed and the problems of the others.
pub fn load_modes(dir: &Path) -> (BTreeMap<String, Mode>, Vec<Problem>) {
    let mut modes = BTreeMap::new();
    let mut problems = Vec::new();
    let modes_dir = dir.join(MODES_DIR);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&modes_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let file = format!(
            "{MODES_DIR}/{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        if stem.starts_with('.') {
            continue; // editor swap or backup files
        }
        if !is_slug(&stem) {
            problems.push(Problem {
                file,
                line: 1,
                column: 1,
                message: format!("mode file name {stem:?} is not a slug (use lowercase letters, digits, '-' and '_')"),
            });
            continue;
        }
        match std::fs::read_to_string(&path) {
            Err(err) => problems.push(Problem {
                file,
                line: 1,
                column: 1,
                message: format!("cannot read: {err}"),
            }),
            Ok(text) => match Mode::parse(&stem, &path, &text) {
                Ok(mode) => {
                    modes.insert(stem, mode);
                }
                Err(p) => problems.push(Problem {
                    file,
                    line: p.line,
                    column: p.column,
                    message: p.message,
                }),
            },
        }
    }
    (modes, problems)
}

/// Deserializes `value`, turning an error into (path, message, whether the path names a key).
fn deserialize<'de, T: Deserialize<'de>>(
    value: &'de Value,
    base: Vec<Seg>,
) -> Result<T, (Vec<Seg>, String, bool)> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut path = base;
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
                _ => {}
            }
        }
        let raw = err.inner().to_string();
        humanize(path, &raw)
    })
}

/// Rewrites serde's messages into this project's form: quoted names and the accepted values.
fn humanize(mut path: Vec<Seg>, raw: &str) -> (Vec<Seg>, String, bool) {
    let field = |path: &[Seg]| match path.last() {
        Some(Seg::Key(k)) => Some(k.clone()),
        _ => None,
    };
    let names = |list: &str| {
        list.split(['`', ',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail
            .trim_start_matches(", ")
            .trim_start_matches("expected one of ")
            .trim_start_matches("expected ");
        // serde_path_to_error stops at the object; point at the unknown key itself.
        if field(&path).as_deref() != Some(name) {
            path.push(Seg::Key(name.to_string()));
        }
        return (
            path,
            format!(
                "unknown field \"{name}\" (expected one of: {})",
                names(expected)
            ),
            true,
        );
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ");
        let what = field(&path).map_or(String::new(), |f| format!(" for \"{f}\""));
        return (
            path,
            format!(
                "unknown value \"{name}\"{what} (expected one of: {})",
                names(expected)
            ),
            false,
        );
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return (path, format!("missing field \"{name}\""), false);
    }
    let message = match field(&path) {
        Some(f) => format!("\"{f}\": {}", raw.replace('`', "\"")),
        None => raw.replace('`', "\""),
    };
    (path, message, false)
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modes() -> BTreeMap<String, Mode> {
        ["implementation", "validation"]
            .iter()
            .map(|slug| {
                let mode = Mode::parse(slug, Path::new("m.md"), "+++\ncommand = [\"true\"]\n+++\n")
                    .unwrap();
                (slug.to_string(), mode)
            })
            .collect()
    }

    fn problems(text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let dir = std::env::current_dir().unwrap();
        parse_schedules(&dir, text, &modes(), &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    const GOOD: &str = r#"{
  "version": 1,
  "timezone": "UTC",
  "defaults": { "modes": ["implementation", "validation"] },
  "schedules": [
    { "id": "main-loop", "task": "Advance" }
  ]
}"#;

    #[test]
    fn good_file_loads() {
        assert!(problems(GOOD).is_empty(), "{:?}", problems(GOOD));
    }

    #[test]
    fn unknown_field_names_key_position_and_alternatives() {
        let text = GOOD.replace(r#""task": "Advance""#, r#""task": "Advance", "crn": "x""#);
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "schedules.json:6:45: unknown field \"crn\" (expected one of: id, task, cron,"
            ),
            "{}",
            p[0]
        );
    }

    #[test]
    fn invalid_json_has_line_and_column() {
        let p = problems("{\n  \"version\": 1,\n  \"schedules\": [\n}");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("schedules.json:4:1: invalid JSON"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn every_bad_entry_is_listed() {
        let text = r#"{
  "version": 1,
  "schedules": [
    { "id": "a", "task": "t", "modes": ["implementation"], "cron": "61 * * * *" },
    { "id": "b", "task": "t", "modes": ["implementation"], "timezone": "Mars/Olympus" },
    { "id": "c", "task": "t", "modes": ["implementation"], "timeout": "soon" },
    { "id": "c", "task": "t", "modes": ["nope"] },
    { "id": "d", "task": "t", "modes": ["implementation"], "overlap": "sometimes" }
  ]
}"#;
        let p = problems(text);
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(
            p[0].starts_with("schedules.json:4:68: \"cron\""),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("schedules.json:5:72: \"timezone\""),
            "{}",
            p[1]
        );
        assert!(
            p[2].starts_with("schedules.json:6:71: \"timeout\": bad duration"),
            "{}",
            p[2]
        );
        assert!(
            p[3].starts_with("schedules.json:7:13: duplicate id \"c\" (first used on line 6)"),
            "{}",
            p[3]
        );
        assert!(p[4].starts_with("schedules.json:7:41: unknown mode \"nope\" (expected one of: implementation, validation"), "{}", p[4]);
        assert!(p[5].contains("unknown value \"sometimes\" for \"overlap\" (expected one of: skip, queue, parallel)"), "{}", p[5]);
    }

    #[test]
    fn metrics_is_an_address_with_its_position() {
        let text = GOOD.replace(r#""timezone": "UTC","#, r#""metrics": "localhost:9464","#);
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "schedules.json:3:14: \"metrics\": bad address \"localhost:9464\" (expected an IP address and port"
            ),
            "{}",
            p[0]
        );
        let text = GOOD.replace(r#""timezone": "UTC","#, r#""metrics": "[::1]:9464","#);
        let mut problems = Vec::new();
        let dir = std::env::current_dir().unwrap();
        let config = parse_schedules(&dir, &text, &modes(), &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.metrics, Some("[::1]:9464".parse().unwrap()));
    }

    #[test]
    fn checks_limits() {
        let text = GOOD.replace(
            r#""timezone": "UTC","#,
            r#""memory": {"max_lines": 10, "target_lines": 20}, "max_concurrent_cycles": 0,"#,
        );
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("target_lines (20)"));
        assert!(p[1].contains("max_concurrent_cycles must be at least 1"));
    }

    #[test]
    fn schedules_must_be_an_array() {
        let p = problems("{\n  \"version\": 1,\n  \"schedules\": {}\n}");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("schedules.json:3:16: \"schedules\" must be an array"),
            "{}",
            p[0]
        );
        let p = problems("{\n  \"version\": 1\n}");
        assert!(p[0].contains("missing field \"schedules\""), "{p:?}");
    }

    #[test]
    fn defaults_cannot_carry_ids() {
        let text = GOOD.replace(r#""defaults": {"#, r#""defaults": { "id": "x","#);
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m.contains("\"id\" belongs to each schedule")),
            "{p:?}"
        );
    }
}
