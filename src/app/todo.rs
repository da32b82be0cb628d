//! `todo`: the items of TODO.md, numbered for `run-cycle --todo N`.

use crate::exit::Error;
use crate::instance::Instance;
use crate::todo::Todo;

pub fn todo(inst: &Instance) -> Result<Todo, Error> {
    Todo::load(&inst.todo()).map_err(|err| Error::Invalid(err.to_string()))
}

/// The line a planning mode prints to hand the next open item to the next cycle.
pub fn handoff_line(todo: &Todo) -> String {
    let (done, total) = todo.progress();
    match todo.open_items().next() {
        Some(item) => format!(
            "HANDOFF: next: item {}. {} (TODO.md:{}); {done}/{total} done",
            item.number, item.text, item.line
        ),
        None => format!("HANDOFF: every TODO.md item is done ({total}); plan the next ones"),
    }
}
