//! The tools' arguments: their types (whose JSON Schemas the tool list carries) and how a
//! call's `arguments` object becomes one.
//!
//! Rules: every argument struct denies unknown fields; decoding goes through
//! `serde_path_to_error`, so a wrong type names the argument (`count: invalid type: string
//! "x", expected u32`). A call whose arguments do not decode is a tool error (`isError`)
//! with that message, never a protocol error: the model reads it and corrects the call
//! (MCP 2025-11-25, "Tool Execution Errors").

use std::borrow::Cow;

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A tool's decoded arguments. Named `Parameters` because rmcp's `#[tool]` macro takes the
/// input schema from the argument of that name; it decodes as [`decode`] does.
pub struct Parameters<T>(pub T);

impl<T: JsonSchema> JsonSchema for Parameters<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// Marks the invalid-params errors of argument decoding, which `call_tool` turns into tool
/// errors.
pub const ARGUMENT_ERROR: &str = "loop-orchestrator/argument-error";

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<T> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, rmcp::ErrorData> {
        decode(context.arguments.take())
            .map(Parameters)
            .map_err(|message| {
                rmcp::ErrorData::invalid_params(
                    format!("failed to deserialize parameters: {message}"),
                    Some(serde_json::json!({ ARGUMENT_ERROR: true })),
                )
            })
    }
}

/// Decodes a call's `arguments` (absent means `{}`); the error names the argument at fault.
pub fn decode<T: DeserializeOwned>(arguments: Option<JsonObject>) -> Result<T, String> {
    let value = serde_json::Value::Object(arguments.unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextFiresArgs {
    /// A schedule id (default: every schedule).
    pub schedule: Option<String>,
    /// How many instants per schedule (default 5, at most 1000).
    pub count: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCycleArgs {
    /// Run only this schedule (default: every enabled schedule, in file order).
    pub schedule: Option<String>,
    /// Run TODO.md item N (see `todo_list`) through the schedule's modes, as priority `todo`.
    pub todo: Option<u32>,
    /// Show what would run (commands, prompt delivery, limits); run and write nothing.
    pub dry_run: Option<bool>,
    /// Run even when a schedule is paused by a rate limit or has spent its budget for the
    /// day (otherwise it gets a `skipped` row and is not run).
    pub ignore_limits: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimingRowsArgs {
    /// Only rows of this schedule.
    pub schedule: Option<String>,
    /// Only rows of this mode (`cycle` for the rows that sum up cycles).
    pub mode: Option<String>,
    /// Only rows with this status: ok, failed, timeout, blocked, skipped, interrupted,
    /// escalated.
    pub status: Option<String>,
    /// Only rows that started at or after: a duration back from now (`90m`, `2h`, `7d`), a
    /// date (`2026-11-21`) or an RFC 3339 time.
    pub since: Option<String>,
    /// The newest N matching rows (default 100, at most 10000).
    pub limit: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryShowArgs {
    /// Only this section's entries: Implementation Patterns, Commands or System Updates.
    pub section: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryAddArgs {
    /// Implementation Patterns, Commands or System Updates.
    pub section: String,
    /// The entry: one fact, at most 4096 bytes.
    pub text: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleArgs {
    /// The schedule id.
    pub schedule: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportArgs {
    /// Rows that started since then: a duration back from now (`7d`, `36h`, `90m`), a date
    /// (`2026-11-20`, midnight UTC) or an RFC 3339 time. Default `7d`.
    pub since: Option<String>,
    /// Only this schedule.
    pub schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEnabledArgs {
    /// The schedule id.
    pub schedule: String,
    /// true to let it fire, false to stop its fires.
    pub enabled: bool,
}

/// What decoding a tool's arguments gave, with the schema's property names: for the fuzz
/// target, which checks that decoding never panics and agrees with the schema the tool
/// list publishes.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub struct Decoded {
    pub result: Result<(), String>,
    /// The properties of the tool's input schema.
    pub properties: Vec<String>,
    /// The properties the schema requires.
    pub required: Vec<String>,
}

/// Decodes `arguments` as the arguments of `tool`; `None` for a tool that does not exist.
#[cfg(any(test, feature = "testing"))]
pub fn decode_for(tool: &str, arguments: Option<JsonObject>) -> Option<Decoded> {
    fn check<T: DeserializeOwned + JsonSchema>(arguments: Option<JsonObject>) -> Decoded {
        let schema = schemars::schema_for!(T);
        let names = |key: &str| -> Vec<String> {
            match schema.get(key) {
                Some(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            }
        };
        Decoded {
            result: decode::<T>(arguments).map(drop),
            properties: names("properties"),
            required: names("required"),
        }
    }
    Some(match tool {
        "status" | "list_schedules" | "todo_list" | "validate" => check::<NoArgs>(arguments),
        "next_fires" => check::<NextFiresArgs>(arguments),
        "run_cycle" => check::<RunCycleArgs>(arguments),
        "timing_rows" => check::<TimingRowsArgs>(arguments),
        "memory_show" => check::<MemoryShowArgs>(arguments),
        "memory_add" => check::<MemoryAddArgs>(arguments),
        "resume" => check::<ScheduleArgs>(arguments),
        "set_enabled" => check::<SetEnabledArgs>(arguments),
        "report" => check::<ReportArgs>(arguments),
        _ => return None,
    })
}

/// The tools whose arguments [`decode_for`] knows.
#[cfg(any(test, feature = "testing"))]
pub const TOOLS: [&str; 12] = [
    "status",
    "list_schedules",
    "next_fires",
    "run_cycle",
    "timing_rows",
    "todo_list",
    "memory_show",
    "memory_add",
    "validate",
    "resume",
    "set_enabled",
    "report",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: serde_json::Value) -> Option<JsonObject> {
        json.as_object().cloned()
    }

    #[test]
    fn a_wrong_type_names_the_argument() {
        let err = decode::<NextFiresArgs>(object(serde_json::json!({"count": "x"}))).unwrap_err();
        assert!(
            err.starts_with("count: invalid type: string \"x\""),
            "{err}"
        );
        let err = decode::<NextFiresArgs>(object(serde_json::json!({"count": -1}))).unwrap_err();
        assert!(err.starts_with("count: invalid value"), "{err}");
        let err =
            decode::<SetEnabledArgs>(object(serde_json::json!({"schedule": "a"}))).unwrap_err();
        assert!(err.contains("missing field `enabled`"), "{err}");
        let err = decode::<ScheduleArgs>(object(serde_json::json!({"schedule": "a", "x": 1})))
            .unwrap_err();
        assert!(err.contains("unknown field `x`"), "{err}");
        let ok = decode::<NextFiresArgs>(None).unwrap();
        assert!(ok.schedule.is_none() && ok.count.is_none());
    }

    #[test]
    fn every_tool_has_a_decoder_that_agrees_with_its_schema() {
        for tool in TOOLS {
            let decoded = decode_for(tool, None).unwrap();
            // No arguments decode exactly when the schema requires none.
            assert_eq!(
                decoded.result.is_ok(),
                decoded.required.is_empty(),
                "{tool}"
            );
        }
        let add = decode_for("memory_add", None).unwrap();
        assert_eq!(add.required, ["section", "text"]);
        assert!(decode_for("nope", None).is_none());
    }
}
