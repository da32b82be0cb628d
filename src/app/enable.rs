//! `set_enabled`: turns a schedule on or off by editing its entry in schedules.json.
//!
//! Rule: the edit is [`crate::config::set_enabled`] (one value changed, validated before
//! the rename, every other byte kept); a running service sees the rename and reloads, as it
//! does for any edit, so nothing is signalled here.

use crate::exit::Error;
use crate::instance::Instance;
use crate::lock::LockFile;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Enabled {
    pub schedule: String,
    pub enabled: bool,
    /// False when the file already said so (nothing was written).
    pub changed: bool,
    /// The service that will reload the file, if one runs on the directory.
    pub service_pid: Option<String>,
}

pub fn set_enabled(inst: &Instance, id: &str, enabled: bool) -> Result<Enabled, Error> {
    let edited = crate::config::set_enabled(inst, id, enabled)?;
    Ok(Enabled {
        schedule: edited.schedule,
        enabled,
        changed: edited.changed,
        service_pid: LockFile::service(inst).ok().and_then(|l| l.probe()),
    })
}
