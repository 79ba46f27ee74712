//! Test harness: the real binary, real loop devices with real filesystems,
//! each test in its own private mount namespace.
//!
//! A `Sandbox` is a sleeping process started with `unshare -m` (private
//! propagation); every command of the test runs inside its namespace
//! through `nsenter`. In there, tmpfs is mounted over /dev/disk (the test
//! plays udev: it makes the by-id/by-uuid links itself, or none at all) and
//! over /run (state and stamp; no trace of the host's systemd). Dropping the sandbox kills
//! its processes, which takes the namespace and every mount in it away, and
//! detaches its loop devices, also when the test failed.

#![allow(dead_code)]

pub mod nixstore;
pub mod peers;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wsl-storage-mount");

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    holder: Child,
    pub pid: u32,
    /// Loop devices attached by this sandbox, with their image files.
    loops: Vec<(String, PathBuf)>,
    children: Vec<Child>,
}

#[derive(Debug, Clone)]
pub struct LoopDev {
    /// e.g. /dev/loop7
    pub node: String,
    pub image: PathBuf,
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Say that this test (or a case of it) skipped and why: on stderr, and, when
/// scripts/test.sh set WSL_STORAGE_MOUNT_TEST_SKIPS, as a line in that file,
/// so the summary counts the skips instead of reporting them as passes.
pub fn record_skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    eprintln!("skipped: {reason}");
    if let Some(file) = std::env::var_os("WSL_STORAGE_MOUNT_TEST_SKIPS") {
        use std::io::Write;
        let line = format!("{test}\t{reason}\n");
        let appended = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&file)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            panic!(
                "cannot record the skip in {}: {e}",
                Path::new(&file).display()
            );
        }
    }
}

/// Skip (with a line saying why) where the test cannot run for real:
/// not root (the Nix build sandbox), or the tools are missing.
pub fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        record_skip("integration tests need root (loop devices, mounts, namespaces)");
        return false;
    }
    for tool in ["unshare", "nsenter", "losetup", "mkfs.ext4", "mount"] {
        if !have(tool) {
            record_skip(&format!(
                "{tool} is not installed (apt-get install util-linux e2fsprogs)"
            ));
            return false;
        }
    }
    true
}

/// A scratch directory for tests that need no root: `check` only.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wsm-check-")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
}

/// `wsl-storage-mount --config FILE check`, run directly (no namespace, no
/// root): check touches no device and resolves no user names. The run dir
/// points into the config's directory, so nothing reaches the host's /run.
pub fn check_config(config: &Path) -> Output {
    let run_dir = config.parent().unwrap_or(Path::new(".")).join("run");
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn output_text(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Sandbox {
    pub fn new() -> Option<Sandbox> {
        if !can_run() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("wsm-test-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        // The mount point for the tmpfs over /dev/disk made inside the
        // namespace (a plain directory where udev never ran): made here
        // when missing, and removed again by the last sandbox.
        {
            let mut dev_disk = DEV_DISK.lock().unwrap_or_else(|e| e.into_inner());
            if !Path::new("/dev/disk").exists() {
                fs::create_dir("/dev/disk").unwrap();
                dev_disk.made = true;
            }
            dev_disk.sandboxes += 1;
        }
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = holder.id();
        wait_for_namespace_holder(pid, "/proc/self/ns/mnt", "unshare");
        let sb = Sandbox {
            dir,
            holder,
            pid,
            loops: Vec::new(),
            children: Vec::new(),
        };
        // A private /run: the helper's state and stamp, and no trace of the
        // host's systemd (the helper asks systemd whether it is booting).
        sb.sh_ok(
            "mount -t tmpfs -o mode=0755 sandbox-disk /dev/disk && mkdir -p /dev/disk/by-id /dev/disk/by-uuid /dev/disk/by-label \
             && mount -t tmpfs -o mode=0755 sandbox-run /run && mkdir -p /run/wsl-storage-mount",
        );
        Some(sb)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.pid.to_string()).arg("-m").arg("--");
        cmd
    }

    /// Run a shell script inside the namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.nsenter()
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed:\n{}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The helper command, inside the namespace, with this config.
    pub fn helper_cmd(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = self.nsenter();
        cmd.arg(BIN).arg("--config").arg(config).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn helper(&self, config: &Path, args: &[&str]) -> Output {
        self.helper_cmd(config, args).output().unwrap()
    }

    /// Start the helper in the background (killed when the sandbox drops).
    pub fn spawn_helper(&mut self, config: &Path, args: &[&str]) -> usize {
        let child = self
            .helper_cmd(config, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Wait for a background helper started with `spawn_helper`.
    pub fn wait_helper(&mut self, idx: usize) -> Output {
        let child = std::mem::replace(
            &mut self.children[idx],
            Command::new("true").spawn().unwrap(),
        );
        child.wait_with_output().unwrap()
    }

    /// Write a config file from a JSON value; logFile defaults into the sandbox.
    pub fn config(&self, name: &str, mut value: serde_json::Value) -> PathBuf {
        let obj = value.as_object_mut().expect("config must be an object");
        obj.entry("logFile")
            .or_insert_with(|| self.path("wsl-mount.log").display().to_string().into());
        let path = self.path(name);
        fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
        path
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("wsl-mount.log")).unwrap_or_default()
    }

    /// An image file attached to a free loop device; `mkfs` is the command
    /// that formats it (e.g. ["mkfs.ext4", "-q", "-L", "x"]), or empty.
    pub fn loop_device(&mut self, size_mb: u64, mkfs: &[&str]) -> LoopDev {
        let image = self.path(&format!("disk{}.img", self.loops.len()));
        let f = fs::File::create(&image).unwrap();
        f.set_len(size_mb << 20).unwrap();
        drop(f);
        if !mkfs.is_empty() {
            let out = Command::new(mkfs[0])
                .args(&mkfs[1..])
                .arg(&image)
                .output()
                .unwrap();
            assert!(out.status.success(), "{mkfs:?}: {}", output_text(&out));
        }
        self.attach(&image)
    }

    /// Attach an existing image to a loop device.
    pub fn attach(&mut self, image: &Path) -> LoopDev {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", output_text(&out));
        let node = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.loops.push((node.clone(), image.to_path_buf()));
        // Loop numbers are reused quickly between parallel tests; drop any
        // page cache a reader of the device's previous life left behind.
        let _ = Command::new("blockdev")
            .arg("--flushbufs")
            .arg(&node)
            .output();
        LoopDev {
            node,
            image: image.to_path_buf(),
        }
    }

    /// Detach a loop device of this sandbox now (and forget it: its number
    /// may go to another test at once, which Drop must not detach).
    pub fn detach(&mut self, node: &str) {
        let out = Command::new("losetup")
            .arg("-d")
            .arg(node)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup -d {node}: {}",
            output_text(&out)
        );
        self.loops.retain(|(n, _)| n != node);
    }

    /// Make a symlink inside the namespace (e.g. a by-id link in /dev/disk).
    pub fn link(&self, link: &str, target: &str) {
        self.sh_ok(&format!(
            "mkdir -p \"$(dirname '{link}')\" && ln -sfn '{target}' '{link}'"
        ));
    }

    /// /proc/self/mountinfo as seen inside the namespace.
    pub fn mountinfo(&self) -> String {
        self.sh_ok("cat /proc/self/mountinfo")
    }

    /// How many mounts are at `path` inside the namespace.
    pub fn mounts_at(&self, path: &str) -> usize {
        self.mountinfo()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(path))
            .count()
    }

    /// The mountinfo line of the top mount at `path`, if any.
    fn top_mount_line(&self, path: &str) -> Option<String> {
        self.mountinfo()
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(path))
            .map(String::from)
    }

    /// The filesystem type mounted at `path`, if any (the top mount).
    pub fn fstype_at(&self, path: &str) -> Option<String> {
        let line = self.top_mount_line(path)?;
        let rest = line.split(" - ").nth(1)?;
        rest.split(' ').next().map(String::from)
    }

    /// Options of the top mount at `path`.
    pub fn options_at(&self, path: &str) -> Option<String> {
        self.top_mount_line(path)?
            .split(' ')
            .nth(5)
            .map(String::from)
    }

    /// A fake Windows executable: a shell script at `path` (mode 0755).
    pub fn fake_exe(&self, path: &Path, script: &str) {
        write_exe(path, script);
    }

    /// Read the state file written by `mount` (inside the namespace).
    pub fn state(&self) -> serde_json::Value {
        let text = self.sh_ok("cat /run/wsl-storage-mount/state.json");
        serde_json::from_str(&text).unwrap()
    }

    pub fn stamp_exists(&self) -> bool {
        self.sh("test -e /run/wsl-storage-mount/bind-ok")
            .status
            .success()
    }
}

/// Sandboxes alive in this test binary, and whether /dev/disk was made
/// for them (then the last one removes it: a host without udev keeps no
/// trace of the tests).
struct DevDisk {
    sandboxes: usize,
    made: bool,
}

static DEV_DISK: std::sync::Mutex<DevDisk> = std::sync::Mutex::new(DevDisk {
    sandboxes: 0,
    made: false,
});

/// Wait until the holder `pid` (unshare, or nsenter and unshare) has exec'd
/// `sleep` in a mount namespace other than the one `from_ns` names.
pub fn wait_for_namespace_holder(pid: u32, from_ns: &str, what: &str) {
    let from = fs::read_link(from_ns).unwrap();
    let start = Instant::now();
    while fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_ref() == Some(&from)
        || fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            != "sleep"
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _forget_dev_disk = DevDiskRelease;
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // The namespace is gone with its last process, and its mounts with
        // it; a loop device still busy is detached by the kernel when freed.
        for (node, image) in &self.loops {
            // Only while the device still belongs to this sandbox's image:
            // a number, once free, may already serve another test.
            if still_backed_by(node, image) {
                let _ = Command::new("losetup").arg("-d").arg(node).output();
            }
        }
    }
}

/// Dropped last in `Sandbox::drop`, after the namespace is gone.
struct DevDiskRelease;

impl Drop for DevDiskRelease {
    fn drop(&mut self) {
        let mut dev_disk = DEV_DISK.lock().unwrap_or_else(|e| e.into_inner());
        dev_disk.sandboxes -= 1;
        if dev_disk.sandboxes == 0 && dev_disk.made {
            // Fails (and stays) while another namespace still mounts on it.
            if fs::remove_dir("/dev/disk").is_ok() {
                dev_disk.made = false;
            }
        }
    }
}

/// A shell script at `path` (mode 0755), for tests with or without a sandbox.
pub fn write_exe(path: &Path, script: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Is loop device `node` (e.g. /dev/loop3) attached to `image`?
fn still_backed_by(node: &str, image: &Path) -> bool {
    let name = node.trim_start_matches("/dev/");
    fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .is_ok_and(|backing| Path::new(backing.trim()) == image)
}

/// A fresh random UUID for a test's filesystem.
pub fn new_uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string()
}

pub fn have_tool(tool: &str) -> bool {
    have(tool)
}

/// Whether an optional tool for one case is there. Outside CI a missing tool
/// skips the case (saying so); under CI=true it fails the test, since CI
/// installs every tool (.ci/run) and a skip there would hide a lost case.
pub fn tool_for_case(tool: &str, apt_package: &str, case: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{case}: {tool} is missing under CI=true; .ci/run must install {apt_package}"
    );
    record_skip(&format!(
        "{case}: {tool} missing (apt-get install {apt_package})"
    ));
    false
}
