//! Runs operator scripts (SCRIPT checks, notify hooks, vrrp_scripts) the way
//! keepalived does, minus its shell: the argument vector is executed
//! directly, as `global.script_user`, with a timeout. A script that does not
//! finish in time is killed (its whole process group) and counts as failed.

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use tokio::process::Command;

use crate::config::Script;

/// Who a script runs as: resolved once from `global.script_user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl ScriptUser {
    /// Looks the user up in the system's user database.
    pub fn lookup(name: &str) -> anyhow::Result<Self> {
        let user = User::from_name(name)
            .map_err(|e| anyhow::anyhow!("script_user {name}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("script_user {name}: no such user"))?;
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// The user lbd itself runs as (tests that are not root, or an
    /// operator who wrote `script_user: root`).
    pub fn current() -> Self {
        let uid = nix::unistd::getuid();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        Self {
            name,
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }
}

/// How a script run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it (not ours).
    Signalled(i32),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// It could not be started (missing program, not executable, …).
    SpawnFailed,
}

impl ScriptOutcome {
    pub fn success(self) -> bool {
        self == ScriptOutcome::Exited(0)
    }
}

impl std::fmt::Display for ScriptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptOutcome::Exited(code) => write!(f, "exit code {code}"),
            ScriptOutcome::Signalled(sig) => write!(f, "killed by signal {sig}"),
            ScriptOutcome::TimedOut => f.write_str("timed out (killed)"),
            ScriptOutcome::SpawnFailed => f.write_str("could not be started"),
        }
    }
}

/// Runs `script` with `extra_args` appended, as `user`, and waits at most
/// `timeout`. Output is discarded (a chatty script must not block on a
/// full pipe); stdin is /dev/null.
pub async fn run_script(
    script: &Script,
    extra_args: &[String],
    user: &ScriptUser,
    timeout: Duration,
) -> ScriptOutcome {
    let Some((program, args)) = script.argv.split_first() else {
        return ScriptOutcome::SpawnFailed;
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    let me = nix::unistd::getuid().as_raw();
    if user.uid != me {
        // std sets the group before the user and, as root, drops the
        // supplementary groups (setgroups(0)).
        cmd.as_std_mut().gid(user.gid).uid(user.uid);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(script = %script, "script could not be started: {e}");
            return ScriptOutcome::SpawnFailed;
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt as _;
            match (status.code(), status.signal()) {
                (Some(code), _) => ScriptOutcome::Exited(code),
                (None, Some(sig)) => ScriptOutcome::Signalled(sig),
                (None, None) => ScriptOutcome::SpawnFailed,
            }
        }
        Ok(Err(_)) => ScriptOutcome::SpawnFailed,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            ScriptOutcome::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(argv: &[&str]) -> Script {
        Script {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn exit_codes_come_back() {
        let me = ScriptUser::current();
        let ok = run_script(&script(&["/bin/true"]), &[], &me, SECOND).await;
        assert_eq!(ok, ScriptOutcome::Exited(0));
        assert!(ok.success());
        let code = run_script(&script(&["/bin/sh", "-c", "exit 7"]), &[], &me, SECOND).await;
        assert_eq!(code, ScriptOutcome::Exited(7));
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let me = ScriptUser::current();
        // `$1` is the appended argument; a shell-built command line would
        // have expanded `$(false)`.
        let s = script(&["/bin/sh", "-c", "test \"$1\" = '$(false)'", "sh"]);
        let out = run_script(&s, &["$(false)".into()], &me, SECOND).await;
        assert_eq!(out, ScriptOutcome::Exited(0));
    }

    #[tokio::test]
    async fn a_hanging_script_is_killed_with_its_children() {
        let me = ScriptUser::current();
        let dir = std::env::temp_dir().join(format!("lbd-runner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("child-alive");
        // The child outlives the shell unless the whole group is killed.
        let cmd = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let start = std::time::Instant::now();
        let out = run_script(
            &script(&["/bin/sh", "-c", &cmd]),
            &[],
            &me,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(out, ScriptOutcome::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the script's child survived the timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_fails_to_start() {
        let me = ScriptUser::current();
        let out = run_script(&script(&["/nonexistent/lbd-script"]), &[], &me, SECOND).await;
        assert_eq!(out, ScriptOutcome::SpawnFailed);
        assert!(!out.success());
    }

    #[tokio::test]
    async fn runs_as_the_script_user() {
        if !nix::unistd::getuid().is_root() {
            return; // switching users needs root
        }
        let nobody = ScriptUser::lookup("nobody").unwrap();
        let s = script(&["/bin/sh", "-c", "test \"$(id -u)\" = \"$1\"", "sh"]);
        let out = run_script(&s, &[nobody.uid.to_string()], &nobody, SECOND).await;
        assert_eq!(out, ScriptOutcome::Exited(0));
    }

    #[test]
    fn unknown_user_is_an_error() {
        let err = ScriptUser::lookup("no-such-user-lbd").unwrap_err();
        assert!(err.to_string().contains("no-such-user-lbd"), "{err}");
    }
}
