//! The MCP prompts (SPEC §9): `mode/<slug>` for every mode in modes/, the composed prompt
//! that mode would receive if its schedule's cycle started now.
//!
//! Rules: the list follows the files (read at each `prompts/list`; rmcp's prompt router only
//! knows prompts fixed at compile time). The optional argument `schedule` picks the schedule
//! whose task and handoff are used (default: the first enabled schedule that runs the mode).
//! An unknown prompt or schedule is an invalid-params error naming what there is.

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, ListPromptsResult, Prompt, PromptArgument,
    PromptMessage, Role,
};

use crate::app;
use crate::exit::Error;
use crate::instance::Instance;

pub const PREFIX: &str = "mode/";

pub fn list(inst: &Instance) -> Result<ListPromptsResult, ErrorData> {
    let modes = app::mode_prompt::modes(inst).map_err(refused)?;
    Ok(ListPromptsResult::with_all_items(
        modes
            .into_iter()
            .map(|mode| {
                let runs_in = if mode.schedules.is_empty() {
                    "no schedule runs it yet".to_string()
                } else {
                    format!("run by {}", mode.schedules.join(", "))
                };
                let mut prompt = Prompt::new(
                    format!("{PREFIX}{}", mode.slug),
                    Some(format!(
                        "The prompt mode {} ({}) would receive if its cycle started now; {runs_in}.",
                        mode.slug, mode.name
                    )),
                    Some(vec![
                        PromptArgument::new("schedule")
                            .with_description(
                                "The schedule whose task and last handoff to use (default: the first enabled one that runs this mode).",
                            )
                            .with_required(false),
                    ]),
                );
                prompt.title = Some(mode.name);
                prompt
            })
            .collect(),
    ))
}

pub fn get(inst: &Instance, request: GetPromptRequestParams) -> Result<GetPromptResult, ErrorData> {
    let Some(slug) = request.name.strip_prefix(PREFIX) else {
        return Err(ErrorData::invalid_params(
            format!(
                "unknown prompt {:?}: prompts are named {PREFIX}<slug>, one per file in modes/",
                request.name
            ),
            None,
        ));
    };
    let arguments = request.arguments.unwrap_or_default();
    if let Some(other) = arguments.keys().find(|k| *k != "schedule") {
        return Err(ErrorData::invalid_params(
            format!("unknown argument {other:?} (expected: schedule)"),
            None,
        ));
    }
    let schedule = match arguments.get("schedule") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id.as_str()),
        Some(other) => {
            return Err(ErrorData::invalid_params(
                format!("schedule: expected a schedule id (a string), got {other}"),
                None,
            ));
        }
    };
    let composed =
        app::mode_prompt::mode_prompt(inst, slug, schedule, chrono::Utc::now()).map_err(refused)?;
    let mut description = format!(
        "What mode {} would receive in schedule {}'s next cycle ({}).",
        composed.mode, composed.schedule, composed.cycle
    );
    if !composed.earlier_modes.is_empty() {
        description.push_str(&format!(
            " In a real cycle the HANDOFF notes of {} would be added.",
            composed.earlier_modes.join(", ")
        ));
    }
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, composed.text)])
            .with_description(description),
    )
}

fn refused(err: Error) -> ErrorData {
    match err {
        Error::Failed(message) => ErrorData::internal_error(message, None),
        other => ErrorData::invalid_params(other.to_string(), None),
    }
}
