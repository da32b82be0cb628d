//! The MCP resources (SPEC §9): `loop://schedules.json`, `loop://TODO.md`,
//! `loop://persistent-memory.md`, `loop://task_timing.tsv` (its last [`TAIL_ROWS`] rows) and
//! the template `loop://runs/{cycle}/{mode}.log`.
//!
//! Rules: the list follows the files (rmcp lists nothing by itself): a file that does not
//! exist is not listed. A URI is matched whole; a log URI is split into its two names and
//! handed to [`app::files::run_log`], which refuses names that could leave the runs folder.
//! Nothing is percent-decoded, so an encoded separator stays a character the name check
//! refuses. Errors are JSON-RPC errors (resources have no `isError`) with the reason.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};

use crate::app;
use crate::app::files::InstanceFile;
use crate::exit::Error;
use crate::instance::{self, Instance};

/// Rows of task_timing.tsv the resource carries (after the header).
pub const TAIL_ROWS: usize = 200;
pub const SCHEME: &str = "loop://";
pub const LOG_TEMPLATE: &str = "loop://runs/{cycle}/{mode}.log";
const RUNS_PREFIX: &str = "loop://runs/";

fn mime(file: InstanceFile) -> &'static str {
    match file {
        InstanceFile::Schedules => "application/json",
        InstanceFile::Todo | InstanceFile::Memory => "text/markdown",
    }
}

fn description(file: InstanceFile) -> &'static str {
    match file {
        InstanceFile::Schedules => {
            "What fires, when, through which modes (the service reloads it on change)."
        }
        InstanceFile::Todo => "The advisory plan: its open items are handed to every mode.",
        InstanceFile::Memory => {
            "The bounded memory every mode reads: Implementation Patterns, Commands, System Updates."
        }
    }
}

pub fn list(inst: &Instance) -> ListResourcesResult {
    let mut resources: Vec<Resource> = InstanceFile::ALL
        .into_iter()
        .filter_map(|file| {
            let meta = std::fs::metadata(file.path(inst)).ok()?;
            Some(
                Resource::new(format!("{SCHEME}{}", file.name()), file.name())
                    .with_description(description(file))
                    .with_mime_type(mime(file))
                    .with_size(meta.len()),
            )
        })
        .collect();
    if inst.timing().exists() {
        resources.push(
            Resource::new(format!("{SCHEME}{}", instance::TIMING), instance::TIMING)
                .with_description(format!(
                    "The header and the last {TAIL_ROWS} rows: one per mode run and per cycle."
                ))
                .with_mime_type("text/tab-separated-values"),
        );
    }
    ListResourcesResult::with_all_items(resources)
}

pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(LOG_TEMPLATE, "run log")
            .with_description(
                "The output of one mode run: {cycle} is a cycle id (timing_rows' `cycle`), {mode} a mode slug (`implementation.attempt2` for a retry).",
            )
            .with_mime_type("text/plain"),
    ])
}

pub fn read(inst: &Instance, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let text = |text: String| ReadResourceResult::new(vec![ResourceContents::text(text, uri)]);
    let absent = |path: std::path::PathBuf| {
        ErrorData::resource_not_found(format!("{uri}: {} does not exist", path.display()), None)
    };
    for file in InstanceFile::ALL {
        if uri == format!("{SCHEME}{}", file.name()) {
            if !file.path(inst).exists() {
                return Err(absent(file.path(inst)));
            }
            return app::files::read(inst, file).map(text).map_err(not_read);
        }
    }
    if uri == format!("{SCHEME}{}", instance::TIMING) {
        if !inst.timing().exists() {
            return Err(absent(inst.timing()));
        }
        return app::timing::tail(inst, TAIL_ROWS)
            .map(text)
            .map_err(not_read);
    }
    if let Some(rest) = uri.strip_prefix(RUNS_PREFIX) {
        let parsed = rest
            .split_once('/')
            .and_then(|(cycle, file)| Some((cycle, file.strip_suffix(".log")?)));
        let Some((cycle, mode)) = parsed else {
            return Err(ErrorData::invalid_params(
                format!("{uri}: expected {LOG_TEMPLATE}"),
                None,
            ));
        };
        return app::files::run_log(inst, cycle, mode)
            .map(|log| {
                let mut body = log.text;
                if log.cut {
                    body.push_str(&format!("\n[cut at {} bytes]\n", app::files::MAX_LOG_BYTES));
                }
                text(body)
            })
            .map_err(not_read);
    }
    Err(ErrorData::resource_not_found(
        format!(
            "unknown resource {uri:?} (expected one of: loop://{}, loop://{}, loop://{}, loop://{}, {LOG_TEMPLATE})",
            instance::SCHEDULES,
            instance::TODO,
            instance::MEMORY,
            instance::TIMING
        ),
        None,
    ))
}

/// A read that failed: bad names are the client's (invalid params), the rest the server's.
fn not_read(err: Error) -> ErrorData {
    match err {
        Error::Failed(message) => ErrorData::internal_error(message, None),
        other => ErrorData::invalid_params(other.to_string(), None),
    }
}
