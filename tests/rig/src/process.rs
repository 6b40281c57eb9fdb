//! Child processes of the rig: each component runs in its own process group
//! with its output in a log file, and dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), so a killed test run leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// A running component.
#[derive(Debug)]
pub struct Component {
    /// Its name (etcd, kube-apiserver, ...).
    pub name: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Child,
}

impl Component {
    /// Starts `binary args...` with its output in `dir/<name>.log`.
    pub fn start(name: &str, binary: &Path, args: &[String], dir: &Path) -> Result<Component> {
        Component::start_with_env(name, binary, args, &[], dir)
    }

    /// Like [`Component::start`], with `env` set on top of the rig's environment.
    pub fn start_with_env(
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
    ) -> Result<Component> {
        let log = dir.join(format!("{name}.log"));
        let child = spawn(name, binary, args, env, dir, &log)?;
        Ok(Component {
            name: name.to_string(),
            log,
            binary: binary.to_path_buf(),
            args: args.to_vec(),
            env: env.to_vec(),
            dir: dir.to_path_buf(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the component and starts it again with the same arguments; its
    /// log goes on in the same file.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.child = spawn(
            &self.name,
            &self.binary,
            &self.args,
            &self.env,
            &self.dir,
            &self.log,
        )?;
        Ok(())
    }

    /// Fails with the log tail when the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the component's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Stops the component (SIGTERM to its group, then SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts one process in its own process group, its output appended to
/// `log`, killed when the thread that started it ends.
fn spawn(
    name: &str,
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
    log: &Path,
) -> Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| {
        format!(
            "starting {name} ({}): run `make rig-bins` to build the rig's binaries",
            binary.display()
        )
    })
}

/// The last `lines` lines of a file (at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
