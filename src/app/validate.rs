//! `validate`: every problem of an instance's files at once, with file:line:column.
//!
//! Rule: the configuration goes through [`Config::load`], exactly what `serve` runs at load
//! and at each reload; TODO.md and the memory file must be UTF-8.

use crate::config::{Config, Problem};
use crate::exit::Error;
use crate::instance::{self, Instance};

/// What a valid instance holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Validated {
    pub schedules: usize,
    pub modes: usize,
}

pub fn validate(inst: &Instance) -> Result<Validated, Error> {
    let (config, mut problems) = match Config::load(inst.root()) {
        Ok(config) => (Some(config), Vec::new()),
        Err(problems) => (None, problems.0),
    };
    for (file, path) in [
        (instance::TODO, inst.todo()),
        (instance::MEMORY, inst.memory()),
    ] {
        match std::fs::read(&path) {
            Ok(bytes) => {
                if let Err(err) = std::str::from_utf8(&bytes) {
                    let (line, column) = crate::mode::line_col(
                        &String::from_utf8_lossy(&bytes[..err.valid_up_to()]),
                        err.valid_up_to(),
                    );
                    problems.push(Problem {
                        file: file.into(),
                        line,
                        column,
                        message: "not valid UTF-8".into(),
                    });
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => problems.push(Problem {
                file: file.into(),
                line: 1,
                column: 1,
                message: format!("cannot read: {err}"),
            }),
        }
    }
    match config {
        Some(config) if problems.is_empty() => Ok(Validated {
            schedules: config.schedules.len(),
            modes: config.modes.len(),
        }),
        _ => Err(Error::Problems(problems)),
    }
}
