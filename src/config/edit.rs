//! Atomic edits of schedules.json that change one value and leave every other byte alone
//! (`set_enabled`, for the MCP server and any tool that steers a running service).
//!
//! Rules: the edited text must validate exactly as a load would (with the instance's modes)
//! before it replaces the file; the file is replaced whole by rename, keeping its mode, so a
//! running `serve` sees one change and reloads; if someone else changed the file between the
//! read and the rename, the edit starts over from their version (up to [`MAX_TRIES`]).

use super::spans::{Seg, Spans};
use super::{Config, Problem, load_modes, parse_schedules};
use crate::exit::Error;
use crate::instance::{self, Instance};

/// How often an edit starts over because the file changed under it.
const MAX_TRIES: usize = 5;

/// What an edit did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Edited {
    pub schedule: String,
    /// False when the file already said so (nothing was written).
    pub changed: bool,
}

/// Sets `enabled` of schedule `id` in schedules.json.
pub fn set_enabled(inst: &Instance, id: &str, enabled: bool) -> Result<Edited, Error> {
    let path = inst.schedules();
    for _ in 0..MAX_TRIES {
        let before = stamp(&path)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|err| Error::Failed(format!("cannot read {}: {err}", path.display())))?;
        let Some(edited) = with_enabled(&text, id, enabled)? else {
            return Ok(Edited {
                schedule: id.to_string(),
                changed: false,
            });
        };
        check(inst, &edited)?;
        if stamp(&path)? != before {
            continue;
        }
        crate::fsutil::replace_keeping_mode(&path, edited.as_bytes())
            .map_err(|err| Error::Failed(format!("cannot write {}: {err}", path.display())))?;
        tracing::info!(schedule = id, enabled, "schedules.json edited");
        return Ok(Edited {
            schedule: id.to_string(),
            changed: true,
        });
    }
    Err(Error::Failed(format!(
        "{}: changed {MAX_TRIES} times while being edited; try again",
        instance::SCHEDULES
    )))
}

/// The file's identity and version, to notice a concurrent writer.
fn stamp(path: &std::path::Path) -> Result<(u64, u64, i64, i64), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|err| Error::Failed(format!("cannot read {}: {err}", path.display())))?;
    Ok((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
}

/// The edited text, or `None` when the entry already has that value. Only the value of
/// `enabled` changes, or one property is added after the entry's last one, indented like it.
fn with_enabled(text: &str, id: &str, enabled: bool) -> Result<Option<String>, Error> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| {
        Error::Problems(vec![Problem {
            file: instance::SCHEDULES.into(),
            line: err.line().max(1),
            column: err.column().max(1),
            message: format!("invalid JSON; fix it before editing: {err}"),
        }])
    })?;
    let entries = value
        .get("schedules")
        .and_then(|s| s.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(index) = entries
        .iter()
        .position(|e| e.get("id").and_then(|v| v.as_str()) == Some(id))
    else {
        let ids: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.get("id").and_then(|v| v.as_str()))
            .collect();
        return Err(Error::Invalid(format!(
            "schedules.json has no schedule {id:?} (expected one of: {})",
            ids.join(", ")
        )));
    };
    let word = if enabled { "true" } else { "false" };
    let entry = entries[index].as_object();
    let current = entry.and_then(|e| e.get("enabled"));
    let spans = Spans::build(text);
    let path = [Seg::Key("schedules".into()), Seg::Index(index)];
    let not_placed = || Error::Failed(format!("{}: cannot place the edit", instance::SCHEDULES));
    if let Some(current) = current {
        if current.as_bool() == Some(enabled) {
            return Ok(None);
        }
        let mut enabled_path = path.to_vec();
        enabled_path.push(Seg::Key("enabled".into()));
        let range = spans.value_range(&enabled_path).ok_or_else(not_placed)?;
        return Ok(Some(format!(
            "{}{word}{}",
            &text[..range.start],
            &text[range.end..]
        )));
    }
    if enabled {
        // Absent means enabled (SPEC §2).
        return Ok(None);
    }
    let object = spans.object(&path).ok_or_else(not_placed)?;
    let insertion = match object.properties.last() {
        Some((_, last)) => {
            let line_start = text[..last.start].rfind('\n').map_or(0, |i| i + 1);
            let indent = &text[line_start..last.start];
            if indent.chars().all(char::is_whitespace) && text[object.whole.clone()].contains('\n')
            {
                (last.end, format!(",\n{indent}\"enabled\": {word}"))
            } else {
                (last.end, format!(", \"enabled\": {word}"))
            }
        }
        None => (object.whole.start + 1, format!("\"enabled\": {word}")),
    };
    let (at, added) = insertion;
    Ok(Some(format!("{}{added}{}", &text[..at], &text[at..])))
}

/// Validates `text` as schedules.json of `inst`, as a load would.
fn check(inst: &Instance, text: &str) -> Result<(), Error> {
    let (modes, mut problems) = load_modes(inst.root());
    let config: Option<Config> = parse_schedules(inst.root(), text, &modes, &mut problems);
    if config.is_some() && problems.is_empty() {
        Ok(())
    } else {
        problems.push(Problem {
            file: instance::SCHEDULES.into(),
            line: 1,
            column: 1,
            message: "the edit was not written: the file would not validate".into(),
        });
        Err(Error::Problems(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
  "version": 1,
  "timezone": "UTC",
  "schedules": [
    { "id": "inline", "task": "t" },
    {
      "id": "multi",
      "task": "t",
      "cron": "0 * * * * *"
    },
    { "id": "set", "task": "t", "enabled": true }
  ]
}
"#;

    #[test]
    fn only_the_value_changes_or_one_property_is_added_in_the_entrys_style() {
        let inline = with_enabled(FILE, "inline", false).unwrap().unwrap();
        assert_eq!(
            inline,
            FILE.replace(
                r#"{ "id": "inline", "task": "t" }"#,
                r#"{ "id": "inline", "task": "t", "enabled": false }"#
            )
        );
        let multi = with_enabled(FILE, "multi", false).unwrap().unwrap();
        assert_eq!(
            multi,
            FILE.replace(
                "\"cron\": \"0 * * * * *\"\n",
                "\"cron\": \"0 * * * * *\",\n      \"enabled\": false\n"
            )
        );
        let set = with_enabled(FILE, "set", false).unwrap().unwrap();
        assert_eq!(set, FILE.replace("\"enabled\": true", "\"enabled\": false"));
        // Back again: the value flips in place.
        let back = with_enabled(&set, "set", true).unwrap().unwrap();
        assert_eq!(back, FILE);
    }

    #[test]
    fn nothing_to_do_when_the_file_already_says_so() {
        assert_eq!(with_enabled(FILE, "set", true).unwrap(), None);
        assert_eq!(with_enabled(FILE, "inline", true).unwrap(), None);
    }

    #[test]
    fn an_unknown_schedule_names_the_ones_there_are() {
        let err = with_enabled(FILE, "nope", false).unwrap_err();
        assert!(err.to_string().contains("inline, multi, set"), "{err}");
        assert_eq!(err.exit_code(), crate::exit::Code::INVALID);
    }

    #[test]
    fn set_enabled_writes_a_valid_file_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let file = FILE.replace(
            r#""timezone": "UTC","#,
            r#""timezone": "UTC", "defaults": { "modes": ["m"] },"#,
        );
        std::fs::write(inst.schedules(), &file).unwrap();
        std::fs::set_permissions(inst.schedules(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir_all(inst.modes_dir()).unwrap();
        std::fs::write(inst.mode_file("m"), "+++\ncommand = [\"true\"]\n+++\n").unwrap();
        let edited = set_enabled(&inst, "multi", false).unwrap();
        assert!(edited.changed);
        let config = Config::load(inst.root()).unwrap();
        assert!(!config.schedule("multi").unwrap().enabled);
        assert!(config.schedule("inline").unwrap().enabled);
        let mode = std::fs::metadata(inst.schedules())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!set_enabled(&inst, "multi", false).unwrap().changed);
    }

    #[test]
    fn an_edit_of_an_invalid_file_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        // Valid JSON, but the mode "m" does not exist: the edited file would not load.
        let file = FILE.replace(
            r#""timezone": "UTC","#,
            r#""timezone": "UTC", "defaults": { "modes": ["m"] },"#,
        );
        std::fs::write(inst.schedules(), &file).unwrap();
        let err = set_enabled(&inst, "inline", false).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::Code::INVALID);
        assert!(err.to_string().contains("was not written"), "{err}");
        assert_eq!(std::fs::read_to_string(inst.schedules()).unwrap(), file);
    }
}
