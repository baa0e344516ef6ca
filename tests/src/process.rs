//! A child process whose stdout and stderr go to log files, that can be SIGKILLed (a crash)
//! and started again with the same command line, and that is killed on drop.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::Context;

use crate::env::{TestEnv, tail};

/// A restartable child process with captured output.
pub struct ChildProcess {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ChildProcess {
    /// Describes (does not start) `program args...` named `name`; its output goes to
    /// `<test dir>/<name>.stdout.log` and `.stderr.log`, which `env` registers for failure
    /// reports.
    pub fn new<I, S>(env: &TestEnv, name: &str, program: &Path, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let stdout_log = env.path(&format!("{name}.stdout.log"));
        let stderr_log = env.path(&format!("{name}.stderr.log"));
        env.register_log(&format!("{name} stdout"), &stdout_log);
        env.register_log(&format!("{name} stderr"), &stderr_log);
        Self {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args: args.into_iter().map(Into::into).collect(),
            envs: Vec::new(),
            stdout_log,
            stderr_log,
            child: None,
            starts: 0,
        }
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.envs.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.envs.push((key.into(), value.into()));
        }
    }

    /// Adds an environment variable for every start.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The process's name in logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stdout log file.
    pub fn stdout_log(&self) -> &Path {
        &self.stdout_log
    }

    /// The stderr log file.
    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    /// The running child's pid, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (appending to its logs). Errors if it is already running or
    /// cannot be spawned.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let open = |path: &Path| -> anyhow::Result<std::fs::File> {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(file, "===== start #{} of {} =====", self.starts, self.name)?;
            Ok(file)
        };
        let stdout = open(&self.stdout_log)?;
        let stderr = open(&self.stderr_log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the process (a crash: no shutdown code runs) and reaps it. No-op if it is
    /// not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited; waiting reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs and starts the process again with the same command line.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// `None` while running (or never started); the exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// An error if the process has exited, with the tail of its logs.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            None if self.child.is_some() => Ok(()),
            None => anyhow::bail!("{} is not started", self.name),
            Some(status) => anyhow::bail!(
                "{} exited ({status}); stderr tail:\n{}\nstdout tail:\n{}",
                self.name,
                tail(&self.stderr_log, 30),
                tail(&self.stdout_log, 30)
            ),
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
