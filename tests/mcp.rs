//! `mcp` end to end: the real binary driven by rmcp's own client over stdio and Streamable
//! HTTP, every result checked against the files it speaks of.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    GetPromptRequestParams, Implementation, ProgressNotificationParam, ProtocolVersion,
    ReadResourceRequestParams, ServerResult,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RunningService,
};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use common::{BIN, Instance, fixture, process_exists};

/// The tools SPEC §9 names.
const TOOLS: [&str; 12] = [
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

/// A client that keeps the progress notifications it receives.
#[derive(Clone, Default)]
struct Client {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Client {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("loop-orchestrator-tests", "1"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }
}

impl Client {
    fn progress_of(&self, token: &rmcp::model::ProgressToken) -> Vec<ProgressNotificationParam> {
        self.progress
            .lock()
            .unwrap()
            .iter()
            .filter(|p| &p.progress_token == token)
            .cloned()
            .collect()
    }
}

/// `mcp` on stdio with `-vv` logging, its stdout copied line by line (to check that every
/// line is JSON-RPC) on its way to the client.
struct Stdio {
    client: RunningService<RoleClient, Client>,
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The pipe the server's stdout is, as `readlink` names it (`pipe:[123]`).
    stdout_pipe: String,
    _stderr: tempfile::NamedTempFile,
}

impl Stdio {
    async fn start(inst: &Instance) -> Stdio {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("--dir")
            .arg(inst.path())
            .args(["-vv", "mcp"])
            .env_remove("LOOP_ORCHESTRATOR_DIR")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdout_pipe = {
            use std::os::fd::AsRawFd;
            std::fs::read_link(format!("/proc/self/fd/{}", stdout.as_raw_fd()))
                .unwrap()
                .display()
                .to_string()
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (client_end, mut tee_end) = tokio::io::duplex(1 << 20);
        tokio::spawn({
            let lines = lines.clone();
            async move {
                let mut reader = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line.clone());
                    if tee_end
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        let (reader, _) = tokio::io::split(client_end);
        let client = Client::default()
            .serve_with_lifecycle((reader, stdin), ClientLifecycleMode::Initialize)
            .await
            .expect("the server initializes");
        Stdio {
            client,
            child,
            lines,
            stdout_pipe,
            _stderr: stderr,
        }
    }

    fn handler(&self) -> &Client {
        self.client.service()
    }

    async fn call(&self, tool: &str, arguments: Value) -> CallToolResult {
        let mut params = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.client
            .call_tool(params)
            .await
            .unwrap_or_else(|err| panic!("{tool}: {err}"))
    }

    /// Closes stdin and checks that the server exits 0 and wrote only JSON-RPC on stdout.
    async fn close(self) -> Vec<String> {
        let Stdio {
            client,
            mut child,
            lines,
            _stderr: stderr,
            ..
        } = self;
        client.cancel().await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("the server exits after stdin closes")
            .unwrap();
        let stderr = std::fs::read_to_string(stderr.path()).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{stderr}");
        let lines = lines.lock().unwrap().clone();
        assert!(!lines.is_empty());
        for line in &lines {
            let message: Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC: {line}");
        }
        lines
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn structured(result: &CallToolResult) -> &Value {
    result
        .structured_content
        .as_ref()
        .unwrap_or_else(|| panic!("no structured content: {}", text_of(result)))
}

fn assert_ok(result: &CallToolResult) {
    assert_ne!(result.is_error, Some(true), "{}", text_of(result));
}

fn assert_tool_error(result: &CallToolResult, needle: &str) {
    assert_eq!(
        result.is_error,
        Some(true),
        "not an error: {}",
        text_of(result)
    );
    assert!(
        text_of(result).contains(needle),
        "{needle:?} not in: {}",
        text_of(result)
    );
}

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An instance with schedule `main` (modes `first`, `second`, each the MCP test mode), a
/// TODO.md and the given extra environment for the modes (TOML inline-table body).
fn instance(env: &str) -> Instance {
    let inst = Instance::new(
        r#"[{ "id": "main", "task": "Keep the loop green", "cron": "0 0 * * * *", "modes": ["first", "second"] }]"#,
    );
    for slug in ["first", "second"] {
        inst.mode(
            slug,
            &format!("[\"{}\"]", fixture("mcp-mode.sh")),
            &format!("prompt = \"stdin\"\nenv = {{ {env} }}"),
        );
    }
    inst.write(
        "TODO.md",
        "# Plan\n\n## Now\n\n- [ ] one thing\n- [x] done thing\n- [ ] another thing\n",
    );
    inst
}

fn rows_of(inst: &Instance, cycle: &str) -> Vec<(String, String)> {
    inst.rows()
        .into_iter()
        .filter(|r| r[6] == cycle)
        .map(|r| (r[7].clone(), r[9].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_client_calls_every_tool_and_reads_every_resource_and_prompt() {
    let dumps = tempfile::tempdir().unwrap();
    let inst = instance(&format!(
        "FD_DUMP = \"{}\"",
        dumps.path().join("fds").display()
    ));
    let mcp = Stdio::start(&inst).await;
    let peer = mcp.client.peer_info().unwrap();
    assert_eq!(peer.server_info.as_ref().unwrap().name, "loop-orchestrator");

    // tools/list: the tools SPEC §9 names, each with an object schema.
    let tools = mcp.client.list_all_tools().await.unwrap();
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    let mut expected: Vec<String> = TOOLS.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    for tool in &tools {
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            tool.name
        );
    }
    let set_enabled = tools.iter().find(|t| t.name == "set_enabled").unwrap();
    let required = set_enabled.input_schema["required"].as_array().unwrap();
    assert!(required.contains(&json!("schedule")) && required.contains(&json!("enabled")));

    // status and list_schedules against schedules.json.
    let status = mcp.call("status", json!({})).await;
    assert_ok(&status);
    let report = structured(&status);
    assert_eq!(report["dir"], inst.path().display().to_string());
    assert_eq!(report["schedules"][0]["id"], "main");
    assert_eq!(report["service"]["running"], false);
    assert_eq!(report["todo"]["total"], 3);
    assert!(
        text_of(&status).contains("main  [idle]"),
        "{}",
        text_of(&status)
    );
    let listed = mcp.call("list_schedules", json!({})).await;
    assert_eq!(structured(&listed)["schedules"][0]["cron"], "0 0 * * * *");
    assert_eq!(
        structured(&listed)["schedules"][0]["modes"],
        json!(["first", "second"])
    );

    // next_fires: hourly instants, one hour apart.
    let next = mcp
        .call("next_fires", json!({"schedule": "main", "count": 3}))
        .await;
    let fires: Vec<chrono::DateTime<chrono::Utc>> = structured(&next)["schedules"][0]["fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(fires.len(), 3);
    for pair in fires.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::TimeDelta::hours(1));
    }
    assert!(fires.iter().all(|f| f.timestamp() % 3_600 == 0));

    // run_cycle: the rows in the file are the ones the result names.
    let ran = mcp.call("run_cycle", json!({"schedule": "main"})).await;
    assert_ok(&ran);
    let run = &structured(&ran)["runs"][0];
    assert_eq!(run["status"], "ok", "{}", text_of(&ran));
    let cycle = run["cycle"].as_str().unwrap().to_string();
    assert_eq!(
        rows_of(&inst, &cycle),
        [("first", "ok"), ("second", "ok"), ("cycle", "ok")]
            .map(|(m, s)| (m.to_string(), s.to_string()))
    );
    assert_eq!(structured(&ran)["exit_code"], 0);

    // A mode's descriptors do not include the server's stdout.
    let fds = std::fs::read_to_string(dumps.path().join("fds")).unwrap();
    assert!(!fds.is_empty());
    assert!(
        !fds.lines().any(|l| l == mcp.stdout_pipe),
        "a mode holds the MCP stream {}: {fds}",
        mcp.stdout_pipe
    );

    // timing_rows against the TSV.
    let rows = mcp
        .call("timing_rows", json!({"schedule": "main", "mode": "cycle"}))
        .await;
    let found = structured(&rows);
    assert_eq!(found["matched"], 1);
    assert_eq!(found["rows"][0]["cycle"], cycle.as_str());
    assert_eq!(found["total"], inst.rows().len());
    let failed_only = mcp.call("timing_rows", json!({"status": "failed"})).await;
    assert_eq!(structured(&failed_only)["matched"], 0);

    // report against the TSV: the rows of the one cycle, per mode.
    let report = mcp.call("report", json!({"since": "1h"})).await;
    assert_ok(&report);
    let summary = structured(&report);
    assert_eq!(summary["rows_in_window"], inst.rows().len());
    assert_eq!(summary["schedules"][0]["schedule"], "main");
    assert_eq!(summary["schedules"][0]["cycles"], 1);
    let modes: Vec<(&str, u64)> = summary["schedules"][0]["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mode"].as_str().unwrap(), m["ok"].as_u64().unwrap()))
        .collect();
    assert_eq!(modes, [("first", 1), ("second", 1), ("cycle", 1)]);
    assert!(text_of(&report).contains("main"), "{}", text_of(&report));
    let empty = mcp.call("report", json!({"since": "2999-01-01"})).await;
    assert_eq!(structured(&empty)["rows_in_window"], 0);

    // todo_list against TODO.md.
    let todo = mcp.call("todo_list", json!({})).await;
    let items = structured(&todo)["items"].as_array().unwrap().clone();
    let seen: Vec<(String, bool, u64)> = items
        .iter()
        .map(|i| {
            (
                i["text"].as_str().unwrap().to_string(),
                i["done"].as_bool().unwrap(),
                i["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("one thing".to_string(), false, 5),
            ("done thing".to_string(), true, 6),
            ("another thing".to_string(), false, 7)
        ]
    );
    assert_eq!(items[0]["headings"], json!(["Plan", "Now"]));

    // memory_add, then memory_show whole and by section.
    let added = mcp
        .call(
            "memory_add",
            json!({"section": "Commands", "text": "cargo nextest run"}),
        )
        .await;
    assert_ok(&added);
    let memory = inst.read("persistent-memory.md");
    let commands = memory.find("## Commands").unwrap();
    assert!(
        memory[commands..].contains("- cargo nextest run"),
        "{memory}"
    );
    let shown = mcp.call("memory_show", json!({})).await;
    assert_eq!(structured(&shown)["text"], memory.as_str());
    let section = mcp
        .call("memory_show", json!({"section": "commands"}))
        .await;
    let line = memory
        .lines()
        .position(|l| l == "- cargo nextest run")
        .unwrap()
        + 1;
    assert_eq!(
        structured(&section)["entries"],
        json!([{ "text": "cargo nextest run", "line": line }])
    );

    // validate.
    let valid = mcp.call("validate", json!({})).await;
    assert_eq!(structured(&valid)["valid"], true);
    assert_eq!(structured(&valid)["modes"], 2);

    // resume lifts an escalation marker and says so in memory.
    inst.write(
        ".loop-orchestrator/escalated/main.json",
        r#"{"at":"2026-01-01T00:00:00Z","failures":3,"fingerprint":"x"}"#,
    );
    let resumed = mcp.call("resume", json!({"schedule": "main"})).await;
    assert_eq!(
        structured(&resumed)["was_escalated"],
        true,
        "{}",
        text_of(&resumed)
    );
    assert!(
        !inst
            .path()
            .join(".loop-orchestrator/escalated/main.json")
            .exists()
    );
    assert!(
        inst.read("persistent-memory.md")
            .contains("[main] resumed by `resume`")
    );

    // Resources: the files as they are.
    let resources = mcp.client.list_all_resources().await.unwrap();
    let mut uris: Vec<String> = resources.iter().map(|r| r.uri.clone()).collect();
    uris.sort();
    assert_eq!(
        uris,
        [
            "loop://TODO.md",
            "loop://persistent-memory.md",
            "loop://schedules.json",
            "loop://task_timing.tsv"
        ]
    );
    for (uri, file) in [
        ("loop://schedules.json", "schedules.json"),
        ("loop://TODO.md", "TODO.md"),
        ("loop://persistent-memory.md", "persistent-memory.md"),
        ("loop://task_timing.tsv", "task_timing.tsv"),
    ] {
        assert_eq!(
            read_text(&mcp, uri).await.unwrap(),
            inst.read(file),
            "{uri}"
        );
    }
    let templates = mcp.client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates[0].uri_template, "loop://runs/{cycle}/{mode}.log");
    let log = read_text(&mcp, &format!("loop://runs/{cycle}/first.log"))
        .await
        .unwrap();
    assert_eq!(
        log,
        inst.read(&format!(".loop-orchestrator/runs/{cycle}/first.log"))
    );
    assert!(log.contains("mode first says hello on stdout"), "{log}");

    // Prompts: one per mode, the composed prompt of now.
    let prompts = mcp.client.list_all_prompts().await.unwrap();
    let mut prompt_names: Vec<String> = prompts.iter().map(|p| p.name.clone()).collect();
    prompt_names.sort();
    assert_eq!(prompt_names, ["mode/first", "mode/second"]);
    let prompt = mcp
        .client
        .get_prompt(GetPromptRequestParams::new("mode/second"))
        .await
        .unwrap();
    let text = prompt.messages[0].content.as_text().unwrap().text.clone();
    for needle in [
        "Keep the loop green",
        "- mode: second (second)",
        "- [ ] 1. one thing (Plan > Now) — TODO.md:5",
        "- [ ] 3. another thing",
        "- cargo nextest run",
        "- second (cycle",
        "second done",
        "Instructions of second.",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in the prompt:\n{text}"
        );
    }
    assert!(!text.contains("done thing"), "{text}");
    assert!(prompt.description.unwrap().contains("first"));

    // set_enabled last: it changes what the others would show.
    let before = inst.read("schedules.json");
    let edited = mcp
        .call("set_enabled", json!({"schedule": "main", "enabled": false}))
        .await;
    assert_eq!(structured(&edited)["changed"], true, "{}", text_of(&edited));
    let after = inst.read("schedules.json");
    assert_eq!(
        after,
        before.replace(
            r#""modes": ["first", "second"] }"#,
            r#""modes": ["first", "second"], "enabled": false }"#
        )
    );
    let listed = mcp.call("list_schedules", json!({})).await;
    assert_eq!(structured(&listed)["schedules"][0]["enabled"], false);

    let lines = mcp.close().await;
    assert!(lines.iter().any(|l| l.contains("\"tools\"")));
}

async fn read_text(mcp: &Stdio, uri: &str) -> Result<String, String> {
    let result = mcp
        .client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .map_err(|err| err.to_string())?;
    match &result.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => Ok(text.clone()),
        other => panic!("not text: {other:?}"),
    }
}

/// Sends a `tools/call` that can be cancelled, with the progress token rmcp's client puts on
/// every request.
async fn call_cancellable(
    mcp: &Stdio,
    tool: &str,
    arguments: Value,
) -> rmcp::service::RequestHandle<RoleClient> {
    let params = CallToolRequestParams::new(tool.to_string())
        .with_arguments(arguments.as_object().unwrap().clone());
    mcp.client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(rmcp::model::Request::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap()
}

fn tool_result(response: ServerResult) -> CallToolResult {
    match response {
        ServerResult::CallToolResult(result) => result,
        other => panic!("not a tool result: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cycle_sends_one_progress_notification_per_mode() {
    let inst = Instance::new(
        r#"[{ "id": "three", "task": "t", "cron": "0 0 * * * *", "modes": ["a", "b", "c"] }]"#,
    );
    for slug in ["a", "b", "c"] {
        inst.mode(
            slug,
            &format!("[\"{}\"]", fixture("mcp-mode.sh")),
            "prompt = \"none\"",
        );
    }
    let mcp = Stdio::start(&inst).await;
    let handle = call_cancellable(&mcp, "run_cycle", json!({"schedule": "three"})).await;
    let token = handle.progress_token.clone();
    let result = tool_result(handle.await_response().await.unwrap());
    assert_ok(&result);
    wait_for(
        Duration::from_secs(5),
        "three progress notifications",
        || mcp.handler().progress_of(&token).len() >= 3,
    )
    .await;
    let progress = mcp.handler().progress_of(&token);
    assert_eq!(progress.len(), 3, "{progress:?}");
    for (i, (note, mode)) in progress.iter().zip(["a", "b", "c"]).enumerate() {
        assert_eq!(note.progress, (i + 1) as f64);
        assert_eq!(note.total, Some(3.0));
        let message = note.message.as_deref().unwrap();
        assert!(
            message.starts_with(&format!("three/{mode} ok in")),
            "{message}"
        );
    }
    // Rows agree with the notifications.
    let modes: Vec<String> = inst.rows().iter().map(|r| r[7].clone()).collect();
    assert_eq!(modes, ["a", "b", "c", "cycle"]);
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_run_cycle_leaves_interrupted_rows_and_no_process() {
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("pids");
    let inst = Instance::new(
        r#"[{ "id": "slow", "task": "t", "cron": "0 0 * * * *", "modes": ["sleeper", "after"] }]"#,
    );
    inst.mode(
        "sleeper",
        &format!("[\"{}\"]", fixture("mcp-mode.sh")),
        &format!(
            "prompt = \"none\"\nkill_grace = \"2s\"\nenv = {{ SLEEP = \"300\", PID_FILE = \"{}\" }}",
            pid_file.display()
        ),
    );
    inst.mode("after", "[\"true\"]", "prompt = \"none\"");
    let mcp = Stdio::start(&inst).await;
    let handle = call_cancellable(&mcp, "run_cycle", json!({"schedule": "slow"})).await;
    wait_for(Duration::from_secs(10), "the mode starts", || {
        pid_file.exists()
    })
    .await;
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| process_exists(p)));
    handle
        .cancel(Some("the test cancels".into()))
        .await
        .unwrap();
    wait_for(Duration::from_secs(10), "the cycle row is written", || {
        inst.rows().iter().any(|r| r[7] == "cycle")
    })
    .await;
    let statuses: Vec<(String, String)> = inst.mode_statuses();
    assert_eq!(
        statuses,
        [("sleeper", "interrupted"), ("cycle", "interrupted")]
            .map(|(m, s)| (m.to_string(), s.to_string()))
    );
    wait_for(
        Duration::from_secs(5),
        "the mode and its child are gone",
        || pids.iter().all(|&p| !process_exists(p)),
    )
    .await;
    // The server goes on serving, and the schedule's lock is free again.
    let status = mcp.call("status", json!({})).await;
    assert_eq!(structured(&status)["schedules"][0]["running"], Value::Null);
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_busy_in_run_cycle_is_a_tool_error_naming_its_pid() {
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("pids");
    let inst = Instance::new(r#"[{ "id": "busy", "task": "t", "modes": ["sleeper"] }]"#);
    inst.mode(
        "sleeper",
        &format!("[\"{}\"]", fixture("mcp-mode.sh")),
        &format!(
            "prompt = \"none\"\nenv = {{ SLEEP = \"300\", PID_FILE = \"{}\" }}",
            pid_file.display()
        ),
    );
    let mut cli = inst
        .command(&["run-cycle", "--schedule", "busy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(cli.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "run-cycle's mode did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    let mcp = Stdio::start(&inst).await;
    let result = mcp.call("run_cycle", json!({"schedule": "busy"})).await;
    assert_tool_error(
        &result,
        &format!(
            "busy: a cycle of this schedule is already running (pid {})",
            cli.id()
        ),
    );
    assert_eq!(structured(&result)["runs"][0]["pid"], cli.id().to_string());
    // No row yet (run-cycle's mode still runs): the MCP call ran nothing.
    assert!(inst.rows().is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(cli.wait().unwrap().code(), Some(130));
    drop(guard);
    mcp.close().await;
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let inst = instance("");
    let mcp = Stdio::start(&inst).await;
    // Unknown tool: a protocol error naming the tools there are.
    let err = mcp
        .client
        .call_tool(CallToolRequestParams::new("launch_rockets"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown tool \"launch_rockets\""), "{err}");
    assert!(err.contains("run_cycle"), "{err}");
    // Wrong types, missing and unknown arguments: tool errors naming the argument.
    assert_tool_error(
        &mcp.call("next_fires", json!({"count": "five"})).await,
        "count: invalid type: string \"five\"",
    );
    assert_tool_error(
        &mcp.call("next_fires", json!({"count": 0})).await,
        "count 0 is out of range",
    );
    assert_tool_error(
        &mcp.call("set_enabled", json!({"schedule": "main", "enabled": "no"}))
            .await,
        "enabled: invalid type: string \"no\", expected a boolean",
    );
    assert_tool_error(
        &mcp.call("resume", json!({})).await,
        "missing field `schedule`",
    );
    assert_tool_error(
        &mcp.call("status", json!({"verbose": true})).await,
        "unknown field `verbose`",
    );
    assert_tool_error(
        &mcp.call("timing_rows", json!({"status": "exploded"})).await,
        "unknown status \"exploded\" (expected one of: ok, failed",
    );
    for tool in ["timing_rows", "report"] {
        assert_tool_error(
            &mcp.call(tool, json!({"since": "last tuesday"})).await,
            "since \"last tuesday\": expected a duration back from now",
        );
    }
    // Unknown schedule.
    for (tool, args) in [
        ("run_cycle", json!({"schedule": "nope"})),
        ("next_fires", json!({"schedule": "nope"})),
        ("resume", json!({"schedule": "nope"})),
        ("set_enabled", json!({"schedule": "nope", "enabled": false})),
    ] {
        assert_tool_error(
            &mcp.call(tool, args).await,
            "schedules.json has no schedule \"nope\" (expected one of: main)",
        );
    }
    assert_tool_error(
        &mcp.call("run_cycle", json!({"todo": 99})).await,
        "TODO.md has no item 99",
    );
    // memory_add: an unknown section, 1 MB of text, an empty text; the file is untouched.
    let memory_before = inst.read("persistent-memory.md");
    assert_tool_error(
        &mcp.call("memory_add", json!({"section": "Gossip", "text": "x"}))
            .await,
        "unknown section \"Gossip\" (expected one of: Implementation Patterns, Commands, System Updates)",
    );
    let huge = "a".repeat(1 << 20);
    assert_tool_error(
        &mcp.call("memory_add", json!({"section": "Commands", "text": huge}))
            .await,
        "text is 1048576 bytes; an entry is one fact of at most 4096 bytes",
    );
    assert_tool_error(
        &mcp.call(
            "memory_add",
            json!({"section": "Commands", "text": "  \n "}),
        )
        .await,
        "text is empty",
    );
    assert_eq!(inst.read("persistent-memory.md"), memory_before);
    // validate with a broken mode: the problems, with file:line:column.
    inst.write("modes/second.md", "+++\ncommand = 7\n+++\n");
    let invalid = mcp.call("validate", json!({})).await;
    assert_eq!(invalid.is_error, Some(false));
    assert_eq!(structured(&invalid)["valid"], false);
    assert!(
        text_of(&invalid).contains("modes/second.md:2:"),
        "{}",
        text_of(&invalid)
    );
    // An unknown prompt or resource: JSON-RPC errors saying what there is.
    let err = mcp
        .client
        .get_prompt(GetPromptRequestParams::new("mode/ghost"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("modes/") || err.contains("modes"), "{err}");
    let err = read_text(&mcp, "loop://secrets").await.unwrap_err();
    assert!(err.contains("unknown resource"), "{err}");
    // Still serving.
    inst.write("modes/second.md", "+++\ncommand = [\"true\"]\n+++\n");
    assert_ok(&mcp.call("status", json!({})).await);
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_template_refuses_paths_that_leave_the_runs_folder() {
    let inst = instance("");
    let mcp = Stdio::start(&inst).await;
    let ran = mcp.call("run_cycle", json!({"schedule": "main"})).await;
    let cycle = structured(&ran)["runs"][0]["cycle"]
        .as_str()
        .unwrap()
        .to_string();
    let runs = inst.path().join(".loop-orchestrator/runs");
    // Symlinks planted in the runs folder: a run folder and a log pointing outside.
    std::os::unix::fs::symlink("/etc", runs.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", runs.join(&cycle).join("passwd.log")).unwrap();
    for (uri, why) in [
        (
            "loop://runs/../../etc/passwd.log".to_string(),
            "bad run name \"..\"",
        ),
        (
            "loop://runs/..%2F..%2Fetc/passwd.log".to_string(),
            "bad run name",
        ),
        (
            "loop://runs//etc/passwd.log".to_string(),
            "bad run name \"\"",
        ),
        (
            format!("loop://runs/{cycle}/../../../schedules.json.log"),
            "bad log name",
        ),
        (
            format!("loop://runs/{cycle}/..%2F..%2F..%2Fschedules.json.log"),
            "bad log name",
        ),
        (
            "loop://runs/etc/passwd.log".to_string(),
            "the run folder is a symlink",
        ),
        (
            format!("loop://runs/{cycle}/passwd.log"),
            "the log is a symlink",
        ),
        (format!("loop://runs/{cycle}/.hidden.log"), "bad log name"),
        (
            format!("loop://runs/{cycle}/first.txt"),
            "expected loop://runs/{cycle}/{mode}.log",
        ),
        ("loop:///etc/passwd".to_string(), "unknown resource"),
    ] {
        let err = read_text(&mcp, &uri).await.unwrap_err();
        assert!(err.contains(why), "{uri}: {why:?} not in {err}");
        assert!(!err.contains("root:"), "{uri} leaked: {err}");
    }
    // The real log still reads.
    let log = read_text(&mcp, &format!("loop://runs/{cycle}/second.log"))
        .await
        .unwrap();
    assert!(log.contains("mode second says hello"), "{log}");
    mcp.close().await;
}

/// A raw client: JSON lines written by the test, for what rmcp's client cannot send (a
/// request without a progress token, a line that is not JSON).
#[test]
fn raw_lines_without_a_progress_token_get_no_notifications_and_garbage_is_survived() {
    use std::io::{BufRead, Write};
    let inst = instance("");
    let mut child = inst
        .command(&["mcp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, line: &str| {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    let mut next = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
    );
    assert_eq!(next()["result"]["serverInfo"]["name"], "loop-orchestrator");
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    send(&mut stdin, "{this is not json");
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"status","arguments":[1]}}"#,
    );
    let malformed = next();
    assert_eq!(malformed["id"], 2);
    assert!(malformed["error"]["code"].is_i64(), "{malformed}");
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"run_cycle","arguments":{"schedule":"main"}}}"#,
    );
    // The next message is the result itself: no progress notification without a token.
    let result = next();
    assert_eq!(result["id"], 3, "{result}");
    assert_eq!(
        result["result"]["structuredContent"]["runs"][0]["status"],
        "ok"
    );
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `mcp --http` on an ephemeral loopback port, killed if the test ends early.
struct Http {
    child: std::process::Child,
    url: String,
    port: u16,
}

impl Http {
    fn start(inst: &Instance, token: Option<&str>) -> Http {
        Http::start_with(inst, token, &[])
    }

    fn start_with(inst: &Instance, token: Option<&str>, extra: &[&str]) -> Http {
        use std::io::BufRead;
        // reqwest (rmcp's HTTP client) is built with rustls and no provider of its own: ring,
        // as the crate uses. Already installed by another test of this process is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut command = inst.command(&["mcp", "--http", "127.0.0.1:0"]);
        command.args(extra);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .env_remove("LOOP_ORCHESTRATOR_MCP_TOKEN");
        if let Some(token) = token {
            command.env("LOOP_ORCHESTRATOR_MCP_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "the server exited");
            if let Some(url) = line.trim().strip_prefix("mcp: serving ") {
                break url.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let port = url
            .rsplit_once(':')
            .unwrap()
            .1
            .trim_end_matches("/mcp")
            .parse()
            .unwrap();
        Http { child, url, port }
    }

    async fn client(&self, token: Option<&str>) -> RunningService<RoleClient, Client> {
        let mut config =
            rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                self.url.clone(),
            );
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
        Client::default()
            .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
            .await
            .expect("the HTTP client initializes")
    }

    /// A raw `initialize` POST with extra headers: (status, session id, WWW-Authenticate).
    async fn initialize(
        &self,
        headers: &[(&str, String)],
    ) -> (u16, Option<String>, Option<String>) {
        let mut request = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        (
            response.status().as_u16(),
            header("mcp-session-id"),
            header("www-authenticate"),
        )
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    client: &RunningService<RoleClient, Client>,
    tool: &str,
    arguments: Value,
) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(arguments.as_object().unwrap().clone()),
        )
        .await
        .unwrap_or_else(|err| panic!("{tool}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_serves_two_sessions_at_once() {
    let inst = Instance::new(
        r#"[{ "id": "slow", "task": "t", "modes": ["nap"] }, { "id": "quick", "task": "t", "modes": ["ok"] }]"#,
    );
    inst.mode(
        "nap",
        &format!("[\"{}\"]", fixture("mcp-mode.sh")),
        "prompt = \"none\"\nenv = { SLEEP = \"3\" }",
    );
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    let http = Http::start(&inst, None);
    // Each initialize gets a session of its own.
    let (a, session_a, _) = http.initialize(&[]).await;
    let (b, session_b, _) = http.initialize(&[]).await;
    assert_eq!((a, b), (200, 200));
    assert!(session_a.is_some() && session_a != session_b);

    let first = http.client(None).await;
    let second = http.client(None).await;
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let result = call(&first, "run_cycle", json!({"schedule": "slow"})).await;
        (result, first)
    });
    wait_for(Duration::from_secs(10), "the slow cycle starts", || {
        inst.path()
            .join(".loop-orchestrator/locks/schedule-slow.lock")
            .exists()
            && std::fs::read_dir(inst.path().join(".loop-orchestrator/runs"))
                .is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    // The second session is answered while the first one's cycle runs.
    let status = call(&second, "status", json!({})).await;
    let schedules = structured(&status)["schedules"].as_array().unwrap().clone();
    let slow_status = schedules.iter().find(|s| s["id"] == "slow").unwrap();
    assert!(slow_status["running"].is_string(), "{slow_status}");
    let quick = call(&second, "run_cycle", json!({"schedule": "quick"})).await;
    assert_eq!(structured(&quick)["runs"][0]["status"], "ok");
    assert!(
        !slow.is_finished(),
        "the slow cycle ended before the other session was served"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let (result, first) = slow.await.unwrap();
    assert_eq!(structured(&result)["runs"][0]["status"], "ok");
    first.cancel().await.unwrap();
    second.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_a_foreign_origin_or_host() {
    let inst = instance("");
    let http = Http::start(&inst, None);
    let port = http.port;
    let (status, _, _) = http
        .initialize(&[("origin", "http://evil.example".to_string())])
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = http
        .initialize(&[("origin", format!("http://localhost.evil.example:{port}"))])
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = http.initialize(&[("origin", "null".to_string())]).await;
    assert_eq!(status, 403);
    let (status, _, _) = http
        .initialize(&[("host", format!("rebound.evil.example:{port}"))])
        .await;
    assert_eq!(status, 403);
    // The server's own origin, and no origin at all, are served.
    let (status, session, _) = http
        .initialize(&[("origin", format!("http://127.0.0.1:{port}"))])
        .await;
    assert_eq!(status, 200);
    assert!(session.is_some());
    let (status, _, _) = http
        .initialize(&[("origin", format!("http://localhost:{port}"))])
        .await;
    assert_eq!(status, 200);
    let client = http.client(None).await;
    assert_ok(&call(&client, "status", json!({})).await);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requires_the_token_on_every_request_when_set() {
    let inst = instance("");
    let http = Http::start(&inst, Some("correct horse battery staple"));
    let (status, _, challenge) = http.initialize(&[]).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().starts_with("Bearer"));
    for wrong in [
        "Bearer correct horse",
        "Bearer correct horse battery staple!",
        "Basic x",
    ] {
        let (status, _, challenge) = http
            .initialize(&[("authorization", wrong.to_string())])
            .await;
        assert_eq!(status, 401, "{wrong}");
        assert!(challenge.is_some());
    }
    let (status, session, _) = http
        .initialize(&[(
            "authorization",
            "Bearer correct horse battery staple".to_string(),
        )])
        .await;
    assert_eq!(status, 200);
    // A GET (the SSE stream) and a DELETE without the token are refused too.
    let url = http.url.clone();
    let get = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 401);
    let delete = reqwest::Client::new()
        .delete(&url)
        .header("mcp-session-id", session.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 401);
    let client = http.client(Some("correct horse battery staple")).await;
    assert_ok(&call(&client, "validate", json!({})).await);
    client.cancel().await.unwrap();
}

#[test]
fn http_on_a_remote_address_needs_allow_remote_and_a_token() {
    let inst = instance("");
    let out = inst
        .command(&["mcp", "--http", "0.0.0.0:0"])
        .env_remove("LOOP_ORCHESTRATOR_MCP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--http 0.0.0.0:0: not a loopback address")
            && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    let out = inst
        .command(&["mcp", "--http", "0.0.0.0:0", "--allow-remote"])
        .env_remove("LOOP_ORCHESTRATOR_MCP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--allow-remote requires a bearer token: set LOOP_ORCHESTRATOR_MCP_TOKEN"),
        "{}",
        common::text(&out)
    );
    let out = inst.command(&["mcp", "--allow-remote"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_enabled_while_serve_runs_reloads_and_keeps_every_other_byte() {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    // Unusual but valid formatting: it must survive the edit byte for byte.
    let before = "{\n\t\"version\" : 1,\n  \"timezone\":\"UTC\",   \"schedules\": [\n    {\"id\":\"tick\",\"task\":\"t — ünïcode\", \"cron\": \"* * * * * *\",\n       \"enabled\" :  true ,\"modes\":[\"ok\"]},\n    { \"id\": \"tock\", \"task\": \"t\", \"cron\": \"* * * * * *\", \"modes\": [\"ok\"] }\n  ]\n}";
    inst.write("schedules.json", before);
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    let log = inst.path().join("serve.log");
    let mut serve = inst
        .command(&["--log-format", "json", "serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(serve.id() as i32);
    let fires = |id: &str| {
        inst.rows()
            .iter()
            .filter(|r| r[5] == id && r[7] == "cycle")
            .count()
    };
    wait_for(Duration::from_secs(10), "tick fires", || fires("tick") >= 2).await;

    let mcp = Stdio::start(&inst).await;
    let edited = mcp
        .call("set_enabled", json!({"schedule": "tick", "enabled": false}))
        .await;
    assert_ok(&edited);
    assert_eq!(
        structured(&edited)["service_pid"],
        serve.id().to_string(),
        "{}",
        text_of(&edited)
    );
    let after = inst.read("schedules.json");
    assert_eq!(
        after,
        before.replace("\"enabled\" :  true ,", "\"enabled\" :  false ,")
    );
    wait_for(Duration::from_secs(5), "the service reloads", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["fields"]["message"] == "reloaded")
    })
    .await;
    // tick stops firing; tock goes on.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (tick, tock) = (fires("tick"), fires("tock"));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(fires("tick"), tick, "tick fired after it was disabled");
    assert!(fires("tock") >= tock + 2, "tock stopped firing");
    let status = mcp.call("status", json!({})).await;
    let report = structured(&status);
    assert_eq!(report["service"]["running"], true);
    assert_eq!(report["service"]["last_reload"]["ok"], true);
    assert_eq!(report["schedules"][0]["enabled"], false);
    mcp.close().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(serve.wait().unwrap().code(), Some(0));
}

/// An instance whose cycle's mode sleeps 300 s writing its pids to a file in `pids`, a stdio
/// server, and a `run_cycle` call in flight once the mode has started.
async fn sleeping_cycle() -> (
    Instance,
    tempfile::TempDir,
    Stdio,
    rmcp::service::RequestHandle<rmcp::RoleClient>,
) {
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("pids");
    let inst = instance(&format!(
        "SLEEP = \"300\", PID_FILE = \"{}\"",
        pid_file.display()
    ));
    let mcp = Stdio::start(&inst).await;
    let handle = call_cancellable(&mcp, "run_cycle", json!({"schedule": "main"})).await;
    wait_for(Duration::from_secs(10), "the mode starts", || {
        pid_file.exists()
    })
    .await;
    (inst, pids, mcp, handle)
}

/// The cycle of [`sleeping_cycle`] was recorded interrupted and none of its processes lives.
fn interrupted_and_gone(inst: &Instance, pids: &tempfile::TempDir) {
    assert_eq!(
        inst.mode_statuses(),
        [("first", "interrupted"), ("cycle", "interrupted")]
            .map(|(m, s)| (m.to_string(), s.to_string()))
    );
    let text = std::fs::read_to_string(pids.path().join("pids")).unwrap();
    for pid in text.split_whitespace().map(|p| p.parse::<i32>().unwrap()) {
        assert!(!process_exists(pid), "pid {pid} survived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_and_interrupts_its_cycle() {
    let (inst, pids, mcp, handle) = sleeping_cycle().await;
    let server = mcp.child.id().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = handle.await_response().await;
    let mut child = mcp.child;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server exits on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    interrupted_and_gone(&inst, &pids);
}

/// A self-signed certificate for 127.0.0.1 and localhost (cert.pem, key.pem), made with the
/// openssl command; `None` (the test skipped, with a message) without it, except in CI.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(out) if out.status.success() => Some((cert, key)),
        other if std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_some() => {
            panic!("openssl cannot make a test certificate: {other:?}")
        }
        other => {
            eprintln!("skipped: the openssl command cannot make a test certificate ({other:?})");
            None
        }
    }
}

/// A reqwest client that trusts `cert` alone, over rustls with the ring provider.
fn https_client(cert: &std::path::Path) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_tls_cert_serves_an_mcp_client_and_only_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(certs.path()) else {
        return;
    };
    let inst = instance("");
    // Files that are not a certificate or a key: exit 2 naming the file.
    let out = inst
        .command(&["mcp", "--http", "127.0.0.1:0", "--tls-cert"])
        .arg(&key)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("{}: no certificate", key.display())),
        "{}",
        common::text(&out)
    );
    let http = Http::start_with(
        &inst,
        None,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(http.url.starts_with("https://127.0.0.1:"), "{}", http.url);
    // rmcp's client over TLS.
    let transport = rmcp::transport::StreamableHttpClientTransport::with_client(
        https_client(&cert),
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            http.url.clone(),
        ),
    );
    let client = Client::default()
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("initializes over TLS");
    assert_ok(&call(&client, "status", json!({})).await);
    client.cancel().await.unwrap();
    // The server's own origin is https now; plain http is another origin.
    let post = |origin: String| {
        https_client(&cert)
            .post(&http.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("origin", origin)
            .body(
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
            )
            .send()
    };
    let port = http.port;
    assert_eq!(
        post(format!("https://127.0.0.1:{port}"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap()
            .status(),
        403
    );
    // Plain HTTP gets no MCP answer.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_stdio_mid_cycle_leaves_interrupted_rows() {
    let (inst, pids, mcp, _pending) = sleeping_cycle().await;
    let Stdio {
        client, mut child, ..
    } = mcp;
    // Closing the transport closes the server's stdin.
    client.cancel().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits after its client goes")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    interrupted_and_gone(&inst, &pids);
}
