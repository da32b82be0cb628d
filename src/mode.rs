//! One mode file, `modes/<slug>.md`: TOML front matter between `+++` lines, then the
//! mode's instructions in markdown (its role, as a Roo Code mode's role definition).
//!
//! Rules: the file starts with a `+++` line; the front matter is TOML with unknown keys
//! rejected; `command` is an argv run directly (never through a shell), in which only a
//! whole element `{prompt_file}` is replaced. `alternatives` are further argvs tried in
//! order when the program of `command` is not installed; `if_missing` says whether a mode
//! with no installed program fails or is skipped (an agent CLI is optional, a build tool
//! is not). `agent` names a preset (SPEC §8), or a list of them, that supplies `command`,
//! `prompt` and `output` where the file gives none; `fallback` argvs are for a rate-limited
//! agent.
//!
//! With a list of agents, the first one installed runs; `command`, when given, replaces the
//! preset of the agent whose program it runs (else the first agent's), and the other agents'
//! presets follow it before the `alternatives`.
//!
//! How one argv (a command, an alternative or a fallback) runs is its [`Invocation`]: the
//! named agent whose program it runs (by file name), else the first named agent, gives the
//! prompt delivery, the output format and the preset's environment; `prompt` and `output` in
//! the file win over every preset. A mode that names an agent is skipped, not failed, when
//! none of its programs is installed (`if_missing` says otherwise). A mode that names neither
//! an agent nor an output is judged by its exit status alone, as any command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::agent::{Agent, OutputFormat, Price};
use crate::duration::HumanDuration;

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// How the composed prompt reaches the child (`prompt = "stdin" | "file" | "none"`): the
/// runner's own delivery, named as the front matter names it.
pub use crate::runner::PromptDelivery as PromptKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Skip the later modes (except `always` ones).
    Stop,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfMissing {
    /// No program of the mode is installed: the mode fails.
    Fail,
    /// No program of the mode is installed: the mode is `skipped`, with the reason.
    Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: Option<String>,
    command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "one_or_more_agents")]
    agent: Vec<Agent>,
    output: Option<OutputFormat>,
    #[serde(default)]
    fallback: Vec<Vec<String>>,
    price: Option<Price>,
    #[serde(default)]
    expect_output: bool,
    #[serde(default)]
    alternatives: Vec<Vec<String>>,
    prompt: Option<PromptKind>,
    timeout: Option<HumanDuration>,
    kill_grace: Option<HumanDuration>,
    on_failure: Option<OnFailure>,
    #[serde(default)]
    always: bool,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    env: BTreeMap<String, String>,
    if_missing: Option<IfMissing>,
}

/// A parsed mode file.
#[derive(Debug, Clone)]
pub struct Mode {
    pub slug: String,
    pub name: String,
    /// `command` first, then the `alternatives`, each a non-empty argv.
    pub commands: Vec<Vec<String>>,
    pub prompt: PromptKind,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub on_failure: OnFailure,
    pub always: bool,
    pub retries: u32,
    pub env: BTreeMap<String, String>,
    pub if_missing: IfMissing,
    /// The agent presets named by `agent`, in order.
    pub agents: Vec<Agent>,
    /// How the first command's output is read: the file's `output`, else its preset's;
    /// `None`: judged by its exit status alone.
    pub output: Option<OutputFormat>,
    /// `prompt` and `output` as the file gives them (they win over every preset).
    prompt_given: Option<PromptKind>,
    output_given: Option<OutputFormat>,
    /// Argvs tried in order, within the same run, when the agent is rate limited.
    pub fallback: Vec<Vec<String>>,
    pub price: Option<Price>,
    /// An exit 0 with no output at all fails the run.
    pub expect_output: bool,
    /// The markdown after the front matter.
    pub instructions: String,
    pub path: PathBuf,
}

/// A problem in a mode file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Mode {
    /// Parses the text of `path`; `slug` is the file stem.
    pub fn parse(slug: &str, path: &Path, text: &str) -> Result<Mode, ModeProblem> {
        let problem = |line, column, message: String| ModeProblem {
            line,
            column,
            message,
        };
        let Some(first) = text.lines().next() else {
            return Err(problem(
                1,
                1,
                "empty mode file (expected front matter between `+++` lines, then instructions)"
                    .into(),
            ));
        };
        if first.trim_end() != "+++" {
            return Err(problem(
                1,
                1,
                "missing front matter: a mode file starts with a line `+++`, TOML such as `command = [\"cargo\", \"test\"]`, and a closing `+++`".into(),
            ));
        }
        let body_start = first.len() + 1;
        let rest = text.get(body_start..).unwrap_or("");
        let mut offset = 0;
        let mut close = None;
        for line in rest.split_inclusive('\n') {
            if line.trim_end() == "+++" {
                close = Some((offset, offset + line.len()));
                break;
            }
            offset += line.len();
        }
        let Some((toml_end, instructions_start)) = close else {
            return Err(problem(
                1,
                1,
                "front matter is not closed: add a line `+++` after the TOML".into(),
            ));
        };
        let toml_text = &rest[..toml_end];
        let front: FrontMatter = toml::from_str(toml_text).map_err(|err| {
            let (line, column) = err
                .span()
                .map(|span| line_col(text, body_start + span.start))
                .unwrap_or((2, 1));
            problem(
                line,
                column,
                format!("front matter: {}", one_line(err.message())),
            )
        })?;
        let key_at = |key: &str| {
            toml_text
                .find(&format!("{key} "))
                .or_else(|| toml_text.find(&format!("{key}=")))
                .map_or((2, 1), |at| line_col(text, body_start + at))
        };
        let preset_argv = |agent: &Agent| -> Vec<String> {
            agent.preset().argv.iter().map(|a| a.to_string()).collect()
        };
        // `command` stands for the named agent whose program it runs (else the first); the
        // other named agents' presets follow it, in order.
        let mut commands: Vec<Vec<String>> = match front.command {
            Some(command) => {
                let replaced = program_name(&command)
                    .and_then(Agent::from_name)
                    .filter(|a| front.agent.contains(a))
                    .or_else(|| front.agent.first().copied());
                std::iter::once(command)
                    .chain(
                        front
                            .agent
                            .iter()
                            .filter(|a| Some(**a) != replaced)
                            .map(preset_argv),
                    )
                    .collect()
            }
            None => front.agent.iter().map(preset_argv).collect(),
        };
        if commands.is_empty() {
            let (line, column) = if toml_text.contains("agent") {
                key_at("agent")
            } else {
                (2, 1)
            };
            return Err(problem(
                line,
                column,
                "no `command`: give an argv such as [\"cargo\", \"test\"], or an `agent` (claude, codex, gemini, aider)".into(),
            ));
        }
        commands.extend(front.alternatives);
        let empty_fallback = front
            .fallback
            .iter()
            .any(|argv| argv.first().is_none_or(|p| p.is_empty()));
        if let Some(empty) = commands
            .iter()
            .position(|argv| argv.is_empty() || argv[0].is_empty())
            .or(empty_fallback.then_some(usize::MAX))
        {
            let key = match empty {
                0 => "command",
                usize::MAX => "fallback",
                _ => "alternatives",
            };
            let (line, column) = key_at(key);
            return Err(problem(
                line,
                column,
                format!("`{key}` needs a program: an argv such as [\"cargo\", \"test\"]"),
            ));
        }
        if matches!(front.timeout, Some(t) if t.0.is_zero()) {
            let (line, column) = key_at("timeout");
            return Err(problem(
                line,
                column,
                "`timeout` must be more than zero".into(),
            ));
        }
        let preset = front.agent.first().map(|a| a.preset());
        Ok(Mode {
            slug: slug.to_string(),
            name: front.name.unwrap_or_else(|| slug.to_string()),
            commands,
            prompt: front
                .prompt
                .or(preset.map(|p| p.prompt))
                .unwrap_or(PromptKind::Stdin),
            timeout: front.timeout.map(|t| t.0),
            kill_grace: front.kill_grace.map_or(DEFAULT_KILL_GRACE, |t| t.0),
            on_failure: front.on_failure.unwrap_or(OnFailure::Stop),
            always: front.always,
            retries: front.retries,
            env: front.env,
            if_missing: front.if_missing.unwrap_or(if front.agent.is_empty() {
                IfMissing::Fail
            } else {
                IfMissing::Skip
            }),
            output: front.output.or(preset.map(|p| p.output)),
            agents: front.agent,
            prompt_given: front.prompt,
            output_given: front.output,
            fallback: front.fallback,
            price: front.price,
            expect_output: front.expect_output,
            instructions: rest[instructions_start..].trim().to_string(),
            path: path.to_path_buf(),
        })
    }
}

/// How one argv of a mode runs: its preset, prompt delivery, output format and the preset's
/// environment (set before the schedule's and the mode's own `env`, which win).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub agent: Option<Agent>,
    pub prompt: PromptKind,
    /// `None`: the run is judged by its exit status alone.
    pub output: Option<OutputFormat>,
    pub env: Vec<(String, String)>,
}

impl Mode {
    /// How `argv` (one of this mode's commands, alternatives or fallbacks, as written) runs:
    /// the named agent whose program it runs, else the first named agent, is its preset.
    pub fn invocation(&self, argv: &[String]) -> Invocation {
        let program = program_name(argv).unwrap_or_default();
        let agent = self
            .agents
            .iter()
            .copied()
            .find(|a| a.name() == program)
            .or_else(|| self.agents.first().copied());
        let preset = agent.map(Agent::preset);
        Invocation {
            agent,
            prompt: self
                .prompt_given
                .or(preset.map(|p| p.prompt))
                .unwrap_or(PromptKind::Stdin),
            output: self.output_given.or(preset.map(|p| p.output)),
            env: preset
                .map(|p| {
                    p.env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether the mode's runs are judged by what an agent says (it names an agent or an
    /// output format), and so may cost money and be rate limited.
    pub fn is_agent(&self) -> bool {
        !self.agents.is_empty() || self.output_given.is_some()
    }
}

/// The file name of an argv's program: `/usr/local/bin/codex` runs `codex`.
fn program_name(argv: &[String]) -> Option<&str> {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .and_then(|p| p.to_str())
}

/// `agent = "claude"` or `agent = ["claude", "codex"]`. Each name is read as [`Agent`] is, so
/// an unknown one gets the same message (and position) either way.
fn one_or_more_agents<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Agent>, D::Error> {
    struct Agents;
    impl<'de> serde::de::Visitor<'de> for Agents {
        type Value = Vec<Agent>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an agent name (claude, codex, gemini, aider) or a list of them")
        }

        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Vec<Agent>, E> {
            use serde::de::IntoDeserializer;
            Agent::deserialize(name.into_deserializer()).map(|a| vec![a])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Agent>, A::Error> {
            let mut agents = Vec::new();
            while let Some(agent) = seq.next_element::<Agent>()? {
                if !agents.contains(&agent) {
                    agents.push(agent);
                }
            }
            if agents.is_empty() {
                return Err(serde::de::Error::custom(
                    "`agent = []` names no agent (expected one or more of: claude, codex, gemini, aider)",
                ));
            }
            Ok(agents)
        }
    }
    deserializer.deserialize_any(Agents)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mode, ModeProblem> {
        Mode::parse("validation", Path::new("modes/validation.md"), text)
    }

    #[test]
    fn parses_the_spec_example() {
        let mode = parse(
            "+++\nname = \"Validation\"\ncommand = [\"cargo\", \"test\", \"--quiet\"]\nprompt = \"none\"\ntimeout = \"20m\"\nkill_grace = \"10s\"\non_failure = \"stop\"\nalways = false\nretries = 0\nenv = { CARGO_TERM_COLOR = \"never\" }\n+++\n# Validation\nRun the test suite.\n",
        )
        .unwrap();
        assert_eq!(mode.commands, vec![vec!["cargo", "test", "--quiet"]]);
        assert_eq!(mode.prompt, PromptKind::None);
        assert_eq!(mode.timeout, Some(Duration::from_secs(1_200)));
        assert_eq!(mode.instructions, "# Validation\nRun the test suite.");
        assert_eq!(mode.env["CARGO_TERM_COLOR"], "never");
    }

    #[test]
    fn unknown_key_is_reported_at_its_line() {
        let err = parse("+++\ncommand = [\"true\"]\ncomand = [\"x\"]\n+++\nbody\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 1), "{err:?}");
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn missing_and_unclosed_front_matter() {
        assert!(
            parse("# just markdown\n")
                .unwrap_err()
                .message
                .contains("missing front matter")
        );
        assert!(
            parse("+++\ncommand = [\"true\"]\n")
                .unwrap_err()
                .message
                .contains("not closed")
        );
    }

    #[test]
    fn bad_duration_points_at_the_value() {
        let err = parse("+++\ncommand = [\"true\"]\ntimeout = \"soon\"\n+++\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("bad duration"), "{}", err.message);
    }

    #[test]
    fn empty_command_is_refused() {
        let err = parse("+++\ncommand = []\n+++\n").unwrap_err();
        assert!(err.message.contains("needs a program"), "{}", err.message);
    }

    #[test]
    fn agent_preset_supplies_command_prompt_and_output() {
        use crate::agent::OutputFormat;
        let mode = parse("+++\nagent = \"gemini\"\nexpect_output = true\n+++\n").unwrap();
        assert_eq!(mode.commands[0][0], "gemini");
        assert_eq!(mode.output, Some(OutputFormat::GeminiJson));
        assert_eq!(
            mode.invocation(&mode.commands[0]).env,
            [("GEMINI_CLI_TRUST_WORKSPACE".to_string(), "true".to_string())]
        );
        assert!(mode.expect_output);
        assert_eq!(mode.if_missing, IfMissing::Skip, "an agent is optional");
        let mode = parse(
            "+++\nagent = \"aider\"\ncommand = [\"aider\", \"--model\", \"x\"]\nfallback = [[\"aider\", \"--model\", \"y\"]]\nprice = { input_per_mtok = 3, output_per_mtok = 15 }\n+++\n",
        )
        .unwrap();
        assert_eq!(
            mode.commands,
            vec![vec!["aider", "--model", "x"]],
            "command wins"
        );
        assert_eq!(mode.prompt, PromptKind::File);
        assert_eq!(mode.output, Some(OutputFormat::Text));
        assert_eq!(mode.fallback, vec![vec!["aider", "--model", "y"]]);
        assert_eq!(mode.price.unwrap().output_per_mtok.0, 15.0);
        let mode = parse("+++\ncommand = [\"true\"]\n+++\n").unwrap();
        assert_eq!((mode.agents.len(), mode.output), (0, None));
        assert!(!mode.is_agent());
        assert_eq!(mode.if_missing, IfMissing::Fail);
    }

    #[test]
    fn a_list_of_agents_runs_the_first_installed_each_with_its_preset() {
        use crate::agent::OutputFormat;
        let mode =
            parse("+++\nagent = [\"claude\", \"codex\", \"aider\"]\nexpect_output = true\n+++\n")
                .unwrap();
        let programs: Vec<&str> = mode.commands.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(programs, ["claude", "codex", "aider"]);
        let of = |i: usize| mode.invocation(&mode.commands[i]);
        assert_eq!(of(0).output, Some(OutputFormat::ClaudeJson));
        assert_eq!(of(1).output, Some(OutputFormat::CodexJsonl));
        assert_eq!(
            (of(2).output, of(2).prompt),
            (Some(OutputFormat::Text), PromptKind::File)
        );
        // `command` replaces the preset of the agent it runs; the others follow.
        let mode = parse(
            "+++\nagent = [\"claude\", \"codex\"]\ncommand = [\"claude\", \"-p\", \"--output-format\", \"json\", \"--permission-mode\", \"acceptEdits\"]\n+++\n",
        )
        .unwrap();
        let programs: Vec<&str> = mode.commands.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(programs, ["claude", "codex"]);
        assert_eq!(mode.commands[0].len(), 6);
        let mode = parse(
            "+++\nagent = [\"claude\", \"codex\"]\ncommand = [\"/opt/codex\", \"exec\", \"--json\", \"-\"]\n+++\n",
        )
        .unwrap();
        let programs: Vec<&str> = mode.commands.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(programs, ["/opt/codex", "claude"]);
        // A wrapper whose name is no agent's runs as the first agent; a fallback by its name.
        let wrapper = vec!["/opt/bin/run-claude.sh".to_string()];
        assert_eq!(mode.invocation(&wrapper).agent, Some(Agent::Claude));
        let codex = vec!["/usr/local/bin/codex".to_string(), "exec".to_string()];
        assert_eq!(mode.invocation(&codex).agent, Some(Agent::Codex));
        // `output` in the file wins over every preset.
        let mode = parse("+++\nagent = [\"codex\", \"gemini\"]\noutput = \"auto\"\n+++\n").unwrap();
        assert_eq!(
            mode.invocation(&mode.commands[1]).output,
            Some(OutputFormat::Auto)
        );
        assert_eq!(
            mode.invocation(&mode.commands[1]).env.len(),
            1,
            "gemini's preset environment"
        );
    }

    #[test]
    fn bad_agent_fields_are_reported_at_their_line() {
        for (text, line, wanted) in [
            (
                "+++\nagent = \"claud\"\n+++\n",
                2,
                "unknown variant `claud`",
            ),
            (
                "+++\ncommand = [\"x\"]\noutput = \"json\"\n+++\n",
                3,
                "unknown variant `json`",
            ),
            (
                "+++\nagent = \"codex\"\nprice = { input_per_mtok = -2, output_per_mtok = 1 }\n+++\n",
                3,
                "0 or more",
            ),
            (
                "+++\nagent = \"codex\"\nprice = { input_per_mtok = \"2\", output_per_mtok = 1 }\n+++\n",
                3,
                "invalid type",
            ),
            (
                "+++\nagent = \"codex\"\nfallback = [[]]\n+++\n",
                3,
                "`fallback` needs a program",
            ),
            ("+++\nname = \"x\"\n+++\n", 2, "no `command`"),
            (
                "+++\nname = \"x\"\nagent = [\"codex\", \"claud\"]\n+++\n",
                3,
                "unknown variant `claud`",
            ),
            ("+++\nagent = []\n+++\n", 2, "names no agent"),
            ("+++\nagent = 3\n+++\n", 2, "an agent name"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text}: {err:?}");
            assert!(err.message.contains(wanted), "{text}: {}", err.message);
        }
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    }
}
