//! A test's working folder and the log files of everything it started.
//!
//! [`run_test`] wraps a test body: when the body fails (an error or a panic) it prints the
//! tail of every log the test registered and keeps the folder for inspection; when it
//! passes, the folder is removed.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::FutureExt;

/// How many lines of each log [`run_test`] prints on failure.
pub const LOG_TAIL_LINES: usize = 60;

/// One test's folder and log registry. Cheap to clone.
#[derive(Clone)]
pub struct TestEnv {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    dir: PathBuf,
    logs: Mutex<Vec<(String, PathBuf)>>,
}

impl TestEnv {
    /// Creates a fresh folder `<tmp>/coinhub-tests/<name>-<random>`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir()
            .join("coinhub-tests")
            .join(format!("{name}-{}", &suffix[..8]));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                dir,
                logs: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The test's folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A path inside the test's folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.inner.dir.join(file)
    }

    /// Registers a log file whose tail is printed if the test fails.
    pub fn register_log(&self, label: &str, path: &Path) {
        let mut logs = self.inner.logs.lock().expect("log registry lock poisoned");
        if !logs.iter().any(|(_, known)| known == path) {
            logs.push((label.to_owned(), path.to_path_buf()));
        }
    }

    /// Prints the last `lines` lines of every registered log to stderr.
    pub fn print_log_tails(&self, lines: usize) {
        let logs = self
            .inner
            .logs
            .lock()
            .map(|logs| logs.clone())
            .unwrap_or_default();
        for (label, path) in logs {
            eprintln!(
                "----- {label}: last {lines} lines of {} -----",
                path.display()
            );
            eprintln!("{}", tail(&path, lines));
        }
    }
}

/// The last `lines` lines of `path` (at most the last 256 KiB are read), or a note why
/// there are none.
pub fn tail(path: &Path, lines: usize) -> String {
    const WINDOW_BYTES: u64 = 256 * 1024;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return format!("(cannot open: {error})"),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW_BYTES);
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut bytes))
        .is_err()
    {
        return "(cannot read)".to_owned();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "(empty)".to_owned();
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs one end-to-end test body in a fresh [`TestEnv`].
///
/// Everything the body starts is dropped (processes killed, databases and vhosts removed)
/// when it returns. On failure the logs' tails are printed, the folder is kept, and this
/// panics with the error so the test fails; on success the folder is removed.
pub async fn run_test<F, Fut>(name: &str, body: F)
where
    F: FnOnce(TestEnv) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let env = TestEnv::new(name).expect("cannot create the test folder");
    let outcome = AssertUnwindSafe(body(env.clone())).catch_unwind().await;
    match outcome {
        Ok(Ok(())) => {
            if let Err(error) = std::fs::remove_dir_all(env.dir()) {
                eprintln!("note: cannot remove {}: {error}", env.dir().display());
            }
        }
        Ok(Err(error)) => {
            env.print_log_tails(LOG_TAIL_LINES);
            eprintln!("test folder kept for inspection: {}", env.dir().display());
            panic!("{name} failed: {error:#}");
        }
        Err(panic) => {
            env.print_log_tails(LOG_TAIL_LINES);
            eprintln!("test folder kept for inspection: {}", env.dir().display());
            std::panic::resume_unwind(panic);
        }
    }
}
