//! Several WSL distros on one VM: a shared tmpfs standing in for /mnt/wsl
//! in the sandbox's namespace (the VM), and one mount namespace per distro
//! made from it, so that their copies of that tmpfs are peers of one
//! shared group, as WSL's init makes /mnt/wsl. Each distro has a /run of
//! its own. A distro's processes die with it (Drop), and its namespace
//! with them; the sandbox's Drop takes the rest.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use super::{output_text, Sandbox, BIN};

/// Mount a tmpfs at `wsl` (a path of the sandbox) and make it shared: the
/// VM's /mnt/wsl, before any distro starts.
pub fn shared_wsl_tmpfs(sb: &Sandbox, wsl: &str) {
    sb.sh_ok(&format!(
        "mkdir -p {wsl} && mount -t tmpfs -o mode=0755 wsl {wsl} && mount --make-shared {wsl}"
    ));
}

pub struct Distro {
    pub name: String,
    holder: Child,
    pub pid: u32,
}

impl Distro {
    /// A namespace copied from the sandbox's (propagation unchanged: the
    /// shared tmpfs stays shared with the VM and every other distro), with
    /// a private /run holding the helper's run dir.
    pub fn start(sb: &Sandbox, name: &str) -> Distro {
        let holder = Command::new("nsenter")
            .arg("-t")
            .arg(sb.pid.to_string())
            .args(["-m", "--", "unshare", "-m", "--propagation", "unchanged"])
            .args(["--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("nsenter unshare");
        let pid = holder.id();
        super::wait_for_namespace_holder(
            pid,
            &format!("/proc/{}/ns/mnt", sb.pid),
            &format!("distro {name}"),
        );
        let d = Distro {
            name: name.to_string(),
            holder,
            pid,
        };
        d.sh_ok("mount -t tmpfs -o mode=0755 distro-run /run && mkdir -p /run/wsl-storage-mount");
        d
    }

    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.pid.to_string()).arg("-m").arg("--");
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn sh(&self, script: &str) -> Output {
        self.nsenter().args(["sh", "-c", script]).output().unwrap()
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{}: `{script}` failed:\n{}",
            self.name,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn helper_cmd(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = self.nsenter();
        cmd.arg(BIN).arg("--config").arg(config).args(args);
        cmd
    }

    pub fn helper(&self, config: &Path, args: &[&str]) -> Output {
        self.helper_cmd(config, args).output().unwrap()
    }

    /// The mountinfo lines at `path` in this distro, bottom to top.
    pub fn mounts_at(&self, path: &str) -> Vec<String> {
        self.sh_ok("cat /proc/self/mountinfo")
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(path))
            .map(String::from)
            .collect()
    }

    /// `status --json` in this distro.
    pub fn status(&self, config: &Path, boot_root: &str) -> (Option<i32>, serde_json::Value) {
        let out = self.helper(config, &["--boot-root", boot_root, "status", "--json"]);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", output_text(&out)));
        (out.status.code(), v)
    }
}

impl Drop for Distro {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
