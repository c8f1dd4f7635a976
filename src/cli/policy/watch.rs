//! `policy test --watch`: run, then run again whenever a file the run read changes. Files are
//! polled rather than watched through inotify: editors replace files by renaming, builds write
//! components in several steps, and a poll of a handful of files' sizes and times sees all of
//! it the same way on every file system.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::PolicyCliError;

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(250);
/// How long the files must stay unchanged before the run starts, so that a build writing a
/// component in steps is run once, when it is done.
const SETTLE: Duration = Duration::from_millis(300);

/// What is known of a file: its size and modification time, or nothing when it is missing.
type Stamp = Option<(u64, SystemTime)>;

fn stamps(files: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
    files
        .iter()
        .map(|file| {
            let stamp = std::fs::metadata(file)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            (file.clone(), stamp)
        })
        .collect()
}

/// Runs `run` now and after every change to the files `files` names (asked again after each
/// run, since a changed suite may name other files), until the process is interrupted.
pub fn run(files: impl Fn() -> Vec<PathBuf>, run: impl Fn()) -> Result<(), PolicyCliError> {
    loop {
        let watched = files();
        let before = stamps(&watched);
        run();
        println!(
            "watching {} files; the suite runs again when one changes (Ctrl-C ends)",
            watched.len()
        );
        let changed = wait_for_change(&before);
        println!("\n{} changed: running again", changed.display());
    }
}

/// Waits until a file differs from `before` and then stays unchanged for `SETTLE`; the first
/// file seen to change.
fn wait_for_change(before: &[(PathBuf, Stamp)]) -> PathBuf {
    let files: Vec<PathBuf> = before.iter().map(|(file, _)| file.clone()).collect();
    loop {
        std::thread::sleep(POLL);
        let now = stamps(&files);
        let Some(changed) = now
            .iter()
            .zip(before)
            .find(|(now, before)| now.1 != before.1)
            .map(|(now, _)| now.0.clone())
        else {
            continue;
        };
        let mut settled = now.clone();
        loop {
            std::thread::sleep(SETTLE);
            let again = stamps(&files);
            if again == settled {
                return changed;
            }
            settled = again;
        }
    }
}
