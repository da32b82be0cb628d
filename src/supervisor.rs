//! The service: placeholder until the supervisor lands.
use std::path::Path;
pub fn serve(_dir: &Path) -> u8 {
    eprintln!("serve: not available in this build yet");
    2
}
pub fn resume(_dir: &Path, _id: &str) -> u8 {
    eprintln!("resume: not available in this build yet");
    2
}
