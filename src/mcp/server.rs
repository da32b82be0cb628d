//! The MCP tools (SPEC §9): each one decodes its arguments, calls one function of
//! [`crate::app`] and renders what it returns as structured content (an object) plus text.
//!
//! Rules: blocking app calls run on tokio's blocking pool, so one slow file read holds no
//! session up; an app error is a tool error (`isError`) with the error's own message; a
//! `run_cycle` runs on the server's task tracker, so a server that stops waits for its
//! cycles to write their `interrupted` rows; its progress notifications are sent from the
//! request's own task, which is how the Streamable HTTP transport puts them on that
//! request's stream.

use std::sync::Arc;

use chrono::Utc;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::args::{
    ARGUMENT_ERROR, MemoryAddArgs, MemoryShowArgs, NextFiresArgs, NoArgs, Parameters, ReportArgs,
    RunCycleArgs, ScheduleArgs, SetEnabledArgs, TimingRowsArgs,
};
use super::text;
use crate::app;
use crate::exit::Error;
use crate::instance::Instance;
use crate::render;

/// The longest `memory_add` text: an entry is one fact, and every mode's prompt carries
/// the memory file, so a pasted document would crowd out the rest.
pub const MAX_MEMORY_TEXT: usize = 4_096;
/// The most instants `next_fires` lists per schedule.
pub const MAX_NEXT_FIRES: u32 = 1_000;

/// What every session of one server shares: the instance, the stop signal and the running
/// cycles.
#[derive(Debug, Clone)]
pub struct Shared {
    pub inst: Instance,
    /// Cancelled when the server stops: running cycles end as on SIGTERM.
    pub stop: CancellationToken,
    /// The cycles started by any session; the server waits for them before it exits.
    pub cycles: TaskTracker,
}

impl Shared {
    pub fn new(inst: Instance) -> Shared {
        Shared {
            inst: inst.absolute(),
            stop: CancellationToken::new(),
            cycles: TaskTracker::new(),
        }
    }
}

/// One MCP session's handler (one per stdio server, one per HTTP session).
#[derive(Clone)]
pub struct LoopServer {
    shared: Arc<Shared>,
    tool_router: ToolRouter<LoopServer>,
}

impl LoopServer {
    pub fn new(shared: Arc<Shared>) -> LoopServer {
        LoopServer {
            shared,
            tool_router: Self::tool_router(),
        }
    }

    fn inst(&self) -> Instance {
        self.shared.inst.clone()
    }
}

/// Runs a blocking app call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(Error::Failed(format!("internal error: {err}"))))
}

/// A successful result: `value` as structured content, `text` for people.
fn done(text: String, value: &impl Serialize) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = serde_json::to_value(value).ok();
    result
}

/// A tool error carrying the app error's message and exit code (as the CLI would exit).
fn failed(err: &Error) -> CallToolResult {
    let message = err.to_string();
    let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
    let mut value = serde_json::json!({ "error": message, "exit_code": err.exit_code().0 });
    match err {
        Error::Problems(problems) => {
            value["problems"] = problems.iter().map(ToString::to_string).collect();
        }
        Error::Busy { schedule, pid } => {
            value["schedule"] = schedule.as_str().into();
            value["pid"] = pid.as_str().into();
        }
        _ => {}
    }
    result.structured_content = Some(value);
    result
}

fn respond<T>(result: Result<T, Error>, ok: impl FnOnce(T) -> CallToolResult) -> CallToolResult {
    match result {
        Ok(value) => ok(value),
        Err(err) => failed(&err),
    }
}

#[tool_router]
impl LoopServer {
    #[tool(
        description = "What the loop is doing: per schedule the next fire, the last cycle, the failure streak, whether it runs or is escalated; TODO progress, memory use, timing rows, whether a service runs.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn status(&self, Parameters(NoArgs {}): Parameters<NoArgs>) -> CallToolResult {
        let inst = self.inst();
        let now = Utc::now();
        let report = blocking(move || Ok(app::status::status(&inst, now))).await;
        respond(report, |r| done(render::status(&r, now), &r))
    }

    #[tool(
        description = "The schedules of schedules.json as the service runs them (defaults applied): cron, time zone, modes, limits, enabled.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_schedules(&self, Parameters(NoArgs {}): Parameters<NoArgs>) -> CallToolResult {
        let inst = self.inst();
        let list = blocking(move || app::schedules::list(&inst)).await;
        respond(list, |list| {
            done(
                text::schedules(&list),
                &serde_json::json!({ "schedules": list }),
            )
        })
    }

    #[tool(
        description = "Upcoming fire instants of one schedule or of all, in UTC and in the schedule's time zone.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn next_fires(&self, Parameters(args): Parameters<NextFiresArgs>) -> CallToolResult {
        let count = args.count.unwrap_or(5);
        if count == 0 || count > MAX_NEXT_FIRES {
            return failed(&Error::Invalid(format!(
                "count {count} is out of range (expected 1 to {MAX_NEXT_FIRES})"
            )));
        }
        let inst = self.inst();
        let fires = blocking(move || {
            app::next::next(&inst, args.schedule.as_deref(), count as usize, Utc::now())
        })
        .await;
        respond(fires, |fires| {
            done(
                render::next(&fires),
                &serde_json::json!({ "schedules": fires }),
            )
        })
    }

    #[tool(
        description = "Run one cycle now through the run-cycle code path (the schedule's lock, so it never runs beside the same schedule's cycle from serve or run-cycle). Without schedule: every enabled schedule in file order. todo: run TODO.md item N. dry_run: show what would run. Sends a progress notification per mode when the request has a progress token; cancelling the request stops the cycle as SIGTERM would (rows `interrupted`). A busy schedule is a tool error naming the holder's pid. A schedule paused by a rate limit or over its daily budget is not run (a `skipped` row says why and until when) unless ignore_limits.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn run_cycle(
        &self,
        Parameters(args): Parameters<RunCycleArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let request = app::run_cycle::Request {
            schedule: args.schedule,
            todo: args.todo.map(|n| n as usize),
            ignore_limits: args.ignore_limits == Some(true),
        };
        let inst = self.inst();
        let plans = {
            let (inst, request) = (inst.clone(), request.clone());
            blocking(move || app::run_cycle::plan(&inst, &request)).await
        };
        let plans = match plans {
            Ok(plans) => plans,
            Err(err) => return failed(&err),
        };
        if args.dry_run == Some(true) {
            return done(
                render::plans(&plans),
                &serde_json::json!({ "dry_run": true, "plans": plans }),
            );
        }
        let total: usize = plans.iter().map(|p| p.modes.len()).sum();
        let (events, mut receive) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let job = self.shared.cycles.spawn({
            let cancel = cancel.clone();
            async move {
                app::run_cycle::run(&inst, &request, cancel, |progress| {
                    if let Some(event) = text::ModeDone::of(&progress) {
                        let _ = events.send(event);
                    }
                })
                .await
            }
        });
        let token = ctx.meta.get_progress_token();
        let mut finished = 0usize;
        let mut modes = Vec::new();
        loop {
            tokio::select! {
                event = receive.recv() => {
                    let Some(event) = event else { break };
                    finished += 1;
                    if let Some(token) = &token {
                        let note = ProgressNotificationParam::new(token.clone(), finished as f64)
                            .with_total(total.max(finished) as f64)
                            .with_message(event.line());
                        if let Err(err) = ctx.peer.notify_progress(note).await {
                            tracing::debug!(error = %err, "progress notification not sent");
                        }
                    }
                    modes.push(event);
                }
                () = ctx.ct.cancelled(), if !cancel.is_cancelled() => {
                    tracing::info!("run_cycle cancelled by the client: stopping the running mode");
                    cancel.cancel();
                }
                () = self.shared.stop.cancelled(), if !cancel.is_cancelled() => cancel.cancel(),
            }
        }
        let outcome = job
            .await
            .unwrap_or_else(|err| Err(Error::Failed(format!("internal error: {err}"))));
        respond(outcome, |outcome| text::run_result(&outcome, modes))
    }

    #[tool(
        description = "Rows of task_timing.tsv (one per mode run and per cycle), newest last, filtered by schedule, mode (`cycle` for cycle rows), status and start time.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn timing_rows(&self, Parameters(args): Parameters<TimingRowsArgs>) -> CallToolResult {
        let filter = match text::row_filter(args, Utc::now()) {
            Ok(filter) => filter,
            Err(err) => return failed(&err),
        };
        let inst = self.inst();
        let rows = blocking(move || app::timing::rows(&inst, &filter)).await;
        respond(rows, |rows| done(text::rows(&rows), &rows))
    }

    #[tool(
        description = "The task items of TODO.md, numbered for run_cycle's todo argument, with their headings and lines.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn todo_list(&self, Parameters(NoArgs {}): Parameters<NoArgs>) -> CallToolResult {
        let inst = self.inst();
        let todo = blocking(move || app::todo::todo(&inst)).await;
        respond(todo, |todo| done(render::todo(&todo), &text::todo(&todo)))
    }

    #[tool(
        description = "persistent-memory.md: the whole file and its size against the limits, or one section's entries.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn memory_show(&self, Parameters(args): Parameters<MemoryShowArgs>) -> CallToolResult {
        let inst = self.inst();
        match args.section {
            None => {
                let shown = blocking(move || app::memory::show(&inst)).await;
                respond(shown, |shown| {
                    done(
                        format!("{}\n({})", shown.text, render::memory_use(&shown)),
                        &shown,
                    )
                })
            }
            Some(name) => {
                let entries = blocking(move || {
                    app::memory_section::section(&inst, app::memory::section(&name)?)
                })
                .await;
                respond(entries, |entries| done(text::entries(&entries), &entries))
            }
        }
    }

    #[tool(
        description = "Add an entry to a section of persistent-memory.md (Implementation Patterns, Commands or System Updates), under the memory lock, pruning when the file passes its limit.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn memory_add(&self, Parameters(args): Parameters<MemoryAddArgs>) -> CallToolResult {
        let entry = args.text.trim().to_string();
        if entry.is_empty() {
            return failed(&Error::Invalid(
                "text is empty: an entry needs a fact".into(),
            ));
        }
        if entry.len() > MAX_MEMORY_TEXT {
            return failed(&Error::Invalid(format!(
                "text is {} bytes; an entry is one fact of at most {MAX_MEMORY_TEXT} bytes (keep documents in the repository and note where they are)",
                entry.len()
            )));
        }
        let inst = self.inst();
        let added = blocking(move || {
            let section = app::memory::section(&args.section)?;
            app::memory::add(&inst, section, &entry)?;
            Ok(section)
        })
        .await;
        respond(added, |section| {
            done(
                format!("added to {section}"),
                &serde_json::json!({ "section": section.title(), "added": true }),
            )
        })
    }

    #[tool(
        description = "Check schedules.json, modes/, TODO.md and the memory file exactly as serve does at load; every problem with file:line:column.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn validate(&self, Parameters(NoArgs {}): Parameters<NoArgs>) -> CallToolResult {
        let inst = self.inst();
        match blocking(move || app::validate::validate(&inst)).await {
            Ok(valid) => done(
                format!(
                    "ok: {} schedule(s), {} mode(s)",
                    valid.schedules, valid.modes
                ),
                &serde_json::json!({ "valid": true, "schedules": valid.schedules, "modes": valid.modes }),
            ),
            Err(Error::Problems(problems)) => {
                let err = Error::Problems(problems);
                let mut result = failed(&err);
                // Finding problems is this tool's answer, not its failure.
                result.is_error = Some(false);
                if let Some(value) = &mut result.structured_content {
                    value["valid"] = false.into();
                }
                result
            }
            Err(err) => failed(&err),
        }
    }

    #[tool(
        description = "Lift the escalation of a schedule (paused after max_failures failed cycles) so it fires again; a running service is told.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn resume(&self, Parameters(args): Parameters<ScheduleArgs>) -> CallToolResult {
        let inst = self.inst();
        let resumed = blocking(move || app::resume::resume(&inst, &args.schedule)).await;
        respond(resumed, |resumed| done(render::resumed(&resumed), &resumed))
    }

    #[tool(
        description = "Enable or disable a schedule: an atomic edit of its `enabled` in schedules.json, validated before it replaces the file, every other byte kept; a running service reloads it.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn set_enabled(&self, Parameters(args): Parameters<SetEnabledArgs>) -> CallToolResult {
        let inst = self.inst();
        let edited =
            blocking(move || app::enable::set_enabled(&inst, &args.schedule, args.enabled)).await;
        respond(edited, |edited| done(text::enabled(&edited), &edited))
    }

    #[tool(
        description = "`report`: per schedule and mode the runs, ok %, failed/timeout/blocked, p50/p95/max duration and cost; per schedule lateness p50/p99, cycles per day, the longest failure streak; cost per day. From task_timing.tsv, since a time (default 7d).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn report(&self, Parameters(args): Parameters<ReportArgs>) -> CallToolResult {
        let since = match text::since(args.since.as_deref().unwrap_or("7d")) {
            Ok(since) => since,
            Err(err) => return failed(&err),
        };
        let request = app::report::Request {
            since,
            schedule: args.schedule,
        };
        let inst = self.inst();
        let report = blocking(move || app::report::report(&inst, &request, Utc::now())).await;
        respond(report, |report| {
            done(crate::report::text::render(&report), &report)
        })
    }
}

/// What the server tells a client at `initialize`.
const INSTRUCTIONS: &str = "loop-orchestrator runs the schedules of schedules.json as cycles \
through a pipeline of modes, recording every step in task_timing.tsv. Start with `status`; \
`timing_rows` and the resource template loop://runs/{cycle}/{mode}.log show what ran; \
`run_cycle` runs one now; the prompts mode/<slug> show what a mode would be told.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LoopServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    /// An unknown tool is a protocol error naming the tools there are (MCP: "Unknown
    /// tools" are protocol errors); arguments that do not decode are a tool error.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tool_router.has_route(&request.name) {
            let names: Vec<String> = self
                .tool_router
                .list_all()
                .into_iter()
                .map(|t| t.name.to_string())
                .collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?} (expected one of: {})",
                    request.name,
                    names.join(", ")
                ),
                None,
            ));
        }
        let call = ToolCallContext::new(self, request, context);
        match self.tool_router.call(call).await {
            Err(err)
                if err
                    .data
                    .as_ref()
                    .is_some_and(|d| d.get(ARGUMENT_ERROR).is_some()) =>
            {
                Ok(CallToolResult::error(vec![ContentBlock::text(err.message)]).into())
            }
            other => other,
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(super::resources::list(&self.shared.inst))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(super::resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let inst = self.inst();
        tokio::task::spawn_blocking(move || super::resources::read(&inst, &request.uri))
            .await
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))?
            .map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let inst = self.inst();
        tokio::task::spawn_blocking(move || super::prompts::list(&inst))
            .await
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))?
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let inst = self.inst();
        tokio::task::spawn_blocking(move || super::prompts::get(&inst, request))
            .await
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))?
            .map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_tool_has_a_decoder() {
        let mut routed: Vec<String> = LoopServer::tool_router()
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        routed.sort();
        let mut decoded: Vec<String> = super::super::args::TOOLS
            .iter()
            .map(|t| t.to_string())
            .collect();
        decoded.sort();
        assert_eq!(routed, decoded);
    }
}
