//! Graceful interruption of a long `run`: the first SIGINT or SIGTERM (or SIGHUP) only raises a flag that
//! the runner reads between training chunks and between runs; it then stops, discards the unfinished run
//! and returns [`Interrupted`]. A second signal ends the process at once with exit code 130.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::Result;

/// The exit code of an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT_CODE: u8 = 130;

/// Set by the first signal.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Set on data-parallel ranks other than 0: rank 0 alone says what the interruption did.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Makes this process's interruption messages silent (the handler's and `main`'s); the behaviour is
/// unchanged.
pub fn quiet() {
    QUIET.store(true, Ordering::SeqCst);
}

/// True after [`quiet`].
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::SeqCst)
}

/// Ends the process at once with [`EXIT_CODE`], from the signal thread while the main thread may be inside
/// libtorch. `std::process::exit` would run libtorch's static destructors under the running main thread
/// (observed: a segfault, exit 139), and the workspace forbids the `unsafe` of `libc::_exit`; so on Unix
/// the process image is replaced by `sh -c 'exit 130'` (exec ends every thread, runs no destructor, and
/// keeps the process id, so the parent sees code 130). Where exec fails, `std::process::exit`. This is the
/// library's only process exit: it runs on the signal thread, where no error can be returned to anyone.
fn exit_now() -> ! {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let _ = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("exit {EXIT_CODE}")])
            .exec();
    }
    std::process::exit(i32::from(EXIT_CODE))
}

/// Whether the handler was installed (and the installation's error, kept as text).
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// What a signal does, also for other reasons to stop (`why` starts the message: "interrupting", "the
/// launcher is gone"): the first request raises the [`flag`]; a second one ends the process at once
/// with [`EXIT_CODE`].
pub fn request(why: &str) {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        if !is_quiet() {
            eprintln!("interrupted again: exiting now");
        }
        exit_now();
    }
    if !is_quiet() {
        eprintln!("{why}: finishing the current training chunk (press Ctrl-C again to exit now)");
    }
}

/// Installs the process's signal handler once (later calls return the first call's result). From then on
/// the first SIGINT/SIGTERM/SIGHUP sets the flag that [`flag`] returns, and a second one exits the process
/// with code [`EXIT_CODE`] without waiting for the runner.
pub fn install() -> Result<()> {
    let result = INSTALLED
        .get_or_init(|| ctrlc::set_handler(|| request("interrupting")).map_err(|e| e.to_string()));
    result
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the SIGINT/SIGTERM handler: {e}"))
}

/// The flag the first signal sets (false until then, and forever where [`install`] was never called).
pub fn flag() -> &'static AtomicBool {
    &REQUESTED
}

/// The error of a run stopped by a signal: how many runs had finished (stored ones included) of how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// Runs finished, stored or trained in this process.
    pub finished: usize,
    /// Runs of the whole experiment.
    pub total: usize,
    /// The run store (`DIR/runs`) the finished runs are in, when `--out` was given.
    pub store: Option<PathBuf>,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interrupted: {} of {} runs finished",
            self.finished, self.total
        )?;
        match &self.store {
            Some(dir) => write!(
                f,
                "; they are stored in {}: rerun the same command to resume",
                dir.display()
            ),
            None => write!(
                f,
                " (not stored: without --out a rerun starts over; give --out DIR to make runs resumable)"
            ),
        }
    }
}

impl std::error::Error for Interrupted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_says_how_many_and_how_to_resume() {
        let stored = Interrupted {
            finished: 3,
            total: 8,
            store: Some(PathBuf::from("out/runs")),
        };
        let text = stored.to_string();
        assert!(text.contains("3 of 8 runs finished"), "{text}");
        assert!(text.contains("rerun the same command to resume"), "{text}");
        let unstored = Interrupted {
            store: None,
            ..stored
        };
        assert!(unstored.to_string().contains("without --out"));
    }

    #[test]
    fn flag_starts_clear() {
        assert!(!flag().load(Ordering::SeqCst));
    }
}
