//! The prompt a mode would receive if its schedule's cycle started now (the MCP prompts
//! `mode/<slug>`), and the modes there are.
//!
//! Rules: the prompt is composed by [`crate::prompt::compose`] from what a cycle starting now
//! would read — the schedule's task, the mode's instructions, TODO.md's open items, the memory
//! file and the schedule's last HANDOFF — with the cycle id it would get. The HANDOFF notes of
//! the earlier modes of that cycle do not exist yet; `earlier_modes` names them. The schedule
//! is the one asked for, or the first enabled schedule whose pipeline has the mode.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;
use crate::prompt::{self, PromptParts};
use crate::timing::Priority;
use crate::todo::{Todo, TodoItem};

/// A mode of the instance, as a client lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeInfo {
    pub slug: String,
    pub name: String,
    /// The schedules whose pipeline has the mode, in file order.
    pub schedules: Vec<String>,
}

/// A composed prompt and what it was composed for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModePrompt {
    pub mode: String,
    pub schedule: String,
    /// The id the cycle would get if it started at the instant the prompt was composed.
    pub cycle: String,
    /// Modes that run before this one in the pipeline: their HANDOFF notes would join the
    /// prompt in a real cycle.
    pub earlier_modes: Vec<String>,
    pub text: String,
}

/// Every mode in modes/, with the schedules that run it.
pub fn modes(inst: &Instance) -> Result<Vec<ModeInfo>, Error> {
    let config = Config::load(inst.root())?;
    Ok(config
        .modes
        .values()
        .map(|mode| ModeInfo {
            slug: mode.slug.clone(),
            name: mode.name.clone(),
            schedules: config
                .schedules
                .iter()
                .filter(|s| s.modes.contains(&mode.slug))
                .map(|s| s.id.clone())
                .collect(),
        })
        .collect())
}

pub fn mode_prompt(
    inst: &Instance,
    slug: &str,
    schedule: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ModePrompt, Error> {
    let config = Config::load(inst.root())?;
    let Some(mode) = config.modes.get(slug) else {
        let slugs: Vec<&str> = config.modes.keys().map(String::as_str).collect();
        return Err(Error::Invalid(format!(
            "modes/ has no mode {slug:?} (expected one of: {})",
            slugs.join(", ")
        )));
    };
    let schedule = match schedule {
        Some(id) => super::find_schedule(&config, id)?,
        None => {
            let runs_it = |s: &&crate::schedule::Schedule| s.modes.iter().any(|m| m == slug);
            config
                .schedules
                .iter()
                .filter(|s| s.enabled)
                .find(runs_it)
                .or_else(|| config.schedules.iter().find(runs_it))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "no schedule runs mode {slug:?}: add it to a schedule's modes, or name a schedule"
                    ))
                })?
        }
    };
    let Some(position) = schedule.modes.iter().position(|m| m == slug) else {
        return Err(Error::Invalid(format!(
            "schedule {:?} does not run mode {slug:?} (its modes: {})",
            schedule.id,
            schedule.modes.join(", ")
        )));
    };
    let todo = Todo::load(&inst.todo()).map_err(|err| Error::Invalid(err.to_string()))?;
    let open: Vec<&TodoItem> = todo.open_items().collect();
    let memory = super::memory::read_text(inst)?;
    let previous = crate::state::load_handoff(inst, &schedule.id)
        .map_err(|err| Error::Failed(err.to_string()))?;
    let cycle = format!("{}-{}", crate::runs::stamp(now), schedule.id);
    let text = prompt::compose(&PromptParts {
        task: &schedule.task,
        schedule: &schedule.id,
        cycle: &cycle,
        mode: slug,
        mode_name: &mode.name,
        attempt: 1,
        priority: Priority::Schedule.as_str(),
        instructions: &mode.instructions,
        open_items: &open,
        memory: &memory,
        earlier: &[],
        previous_cycle: previous.as_ref(),
    });
    Ok(ModePrompt {
        mode: slug.to_string(),
        schedule: schedule.id.clone(),
        cycle,
        earlier_modes: schedule.modes[..position].to_vec(),
        text,
    })
}
