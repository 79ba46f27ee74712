//! `status`: what is, next to what is configured.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::boot::device;
use crate::boot::instances::{self, DirState};
use crate::boot::mount;
use crate::boot::probe::{self, FsInfo};
use crate::config::Config;
use crate::exit::Exit;
use crate::mountinfo;
use crate::state::{self, RunState};
use crate::store;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub ok: bool,
    /// Everything that is not as configured, one line each.
    pub problems: Vec<String>,
    pub identity: String,
    pub device: Option<DeviceStatus>,
    pub mount_point: String,
    pub mount: Option<MountStatus>,
    /// Nothing is mounted at mountPoint although `mount` mounted it (or
    /// bindTarget still binds from it): it was taken away after boot.
    pub mount_point_taken: bool,
    /// The propagation of mountPoint, bindTarget and bindTarget/store
    /// ("shared:N", "master:N", "private"), where mounted.
    pub propagation: BTreeMap<String, String>,
    pub instance_dirs: BTreeMap<String, DirStatus>,
    pub bind: Option<BindStatus>,
    /// Every instance dir on the disk with a project quota (this
    /// instance's and the others'): use and limits.
    pub quotas: BTreeMap<String, crate::boot::quota::Usage>,
    /// The shared dirs of `binds`, by path.
    pub binds: BTreeMap<String, crate::boot::binds::BindStatus>,
    pub stamp: bool,
    /// Whether bindTarget/store is mounted read-only (with the bind).
    pub store_read_only: Option<bool>,
    /// The VHDX's boot generation next to the disk's current system.
    pub boot: Option<store::sync::BootStatus>,
    pub last_run: Option<RunState>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub node: String,
    pub via: String,
    pub filesystem: Option<FsInfo>,
    /// When there is no single filesystem: what the device holds instead
    /// (a partition table with its partitions, two signatures, size 0 ...).
    pub filesystem_problem: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountStatus {
    pub source: String,
    pub fs_type: String,
    pub options: String,
    pub is_configured_device: bool,
    /// How many mounts are stacked at the mount point (1 is right).
    pub stacked: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirStatus {
    pub want_owner: String,
    pub want_group: String,
    pub want_mode: String,
    pub actual: Option<DirState>,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindStatus {
    pub target: String,
    pub store_dir: String,
    pub is_bind: bool,
    pub mounted_source: Option<String>,
    pub marker: bool,
}

pub fn gather(cfg: &Config, boot_root: &std::path::Path) -> Status {
    let mut problems = Vec::new();
    let mounts = mountinfo::read().unwrap_or_default();

    let found = match device::find(cfg) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let device = found.as_ref().map(|f| {
        let (filesystem, filesystem_problem) = match probe::probe_contents(&f.node) {
            Ok(probe::Contents::Filesystem(fs)) => (Some(fs), None),
            Ok(other) => (None, Some(crate::boot::unusable(cfg, &f.node, &other).0)),
            Err(e) => (None, Some(format!("cannot be probed: {e}"))),
        };
        DeviceStatus {
            node: f.node.display().to_string(),
            via: f.via.clone(),
            filesystem,
            filesystem_problem,
        }
    });
    if found.is_none() {
        // Name what is at a configured path that did not count (a regular
        // file, a loop device of size 0), as the boot step does.
        let there: Vec<String> = device::candidate_links(cfg)
            .into_iter()
            .filter_map(|(_, p)| match device::describe_candidate(&p) {
                what if what == "absent" => None,
                what => Some(format!("{}: {what}", p.display())),
            })
            .collect();
        let mut problem = format!("device not present ({})", cfg.identity());
        if !there.is_empty() {
            problem.push_str(&format!("; {}", there.join("; ")));
        }
        problems.push(problem);
    }

    let top = mountinfo::top_at(&mounts, &cfg.mount_point);
    let mount = top.map(|m| MountStatus {
        source: m.source_text(),
        fs_type: m.fs_type.clone(),
        options: m.options.clone(),
        is_configured_device: found.as_ref().is_some_and(|f| m.is_device(f.rdev)),
        stacked: mountinfo::count_at(&mounts, &cfg.mount_point),
    });
    let last_run = state::read();
    let outlived = found
        .as_ref()
        .is_some_and(|f| crate::boot::propagation::bind_outlived_storage(cfg, &mounts, f.rdev));
    let mount_point_taken =
        mount.is_none() && (outlived || last_run.as_ref().is_some_and(|r| r.outcome == "mounted"));
    let storage_mounted = match &mount {
        None if mount_point_taken => {
            problems.push(format!(
                "nothing is mounted at {}: it was taken away after `mount` mounted it (a peer distro's shutdown unmounts /mnt/wsl/* in every distro, microsoft/WSL#41084){}; `sudo systemctl restart wsl-storage-mount` mounts it again",
                cfg.mount_point,
                if outlived {
                    format!("; {} stays the bind of the disk store", cfg.bind_target)
                } else {
                    String::new()
                }
            ));
            false
        }
        None => {
            problems.push(format!("nothing is mounted at {}", cfg.mount_point));
            false
        }
        Some(m) if !m.is_configured_device => {
            problems.push(format!(
                "{} is mounted at {}, not the configured device",
                m.source, cfg.mount_point
            ));
            false
        }
        Some(m) => {
            if m.stacked > 1 {
                problems.push(format!(
                    "{} mounts are stacked at {}",
                    m.stacked, cfg.mount_point
                ));
            }
            for word in mount::expected_flag_words(cfg) {
                if !top.is_some_and(|t| t.has_option(word)) {
                    problems.push(format!("{} is mounted without \"{word}\"", cfg.mount_point));
                }
            }
            true
        }
    };

    let (binds, bind_problems) = crate::boot::binds::status(
        cfg,
        &mounts,
        found.as_ref().map(|f| f.rdev),
        storage_mounted,
    );
    problems.extend(bind_problems);

    let quotas = match (&found, storage_mounted) {
        (Some(f), true) => {
            let q = crate::boot::quota::usage(cfg, &f.node);
            for (name, spec) in &cfg.instance_dirs {
                if spec.quota.is_none() && spec.inode_quota.is_none() {
                    continue;
                }
                let have = q.get(name);
                if !crate::boot::quota::supported(&f.node) {
                    problems.push(format!(
                        "instanceDirs.{name} has a quota, but the filesystem keeps no project quotas; {}",
                        crate::boot::quota::enable_command(cfg, &f.node)
                    ));
                } else if have.map(|u| u.limit_bytes)
                    != Some(spec.quota.map(|b| b.div_ceil(1024) * 1024))
                    || have.map(|u| u.limit_inodes) != Some(spec.inode_quota)
                {
                    problems.push(format!(
                        "instanceDirs.{name}: the quota on the disk is not the configured one; `sudo systemctl restart wsl-storage-mount` sets it"
                    ));
                }
            }
            q
        }
        _ => BTreeMap::new(),
    };

    let mut instance_dirs = BTreeMap::new();
    for (name, spec) in &cfg.instance_dirs {
        let mut st = DirStatus {
            want_owner: spec.owner.to_string(),
            want_group: spec.group.to_string(),
            want_mode: format!("{:04o}", spec.mode),
            actual: None,
            problem: None,
        };
        if storage_mounted {
            match instances::inspect(cfg, name) {
                Ok(Some(actual)) => {
                    let uid = instances::resolve_user(&spec.owner);
                    let gid = instances::resolve_group(&spec.group);
                    let mut wrong = Vec::new();
                    if uid.as_ref().ok() != Some(&actual.uid) {
                        wrong.push(format!("owner {} (want {})", actual.uid, spec.owner));
                    }
                    if gid.as_ref().ok() != Some(&actual.gid) {
                        wrong.push(format!("group {} (want {})", actual.gid, spec.group));
                    }
                    if actual.mode != spec.mode {
                        wrong.push(format!("mode {:04o} (want {:04o})", actual.mode, spec.mode));
                    }
                    if !wrong.is_empty() {
                        st.problem = Some(wrong.join(", "));
                    }
                    st.actual = Some(actual);
                }
                Ok(None) => st.problem = Some("missing".into()),
                Err(why) => st.problem = Some(why),
            }
        } else {
            st.problem = Some("storage not mounted".into());
        }
        if let Some(p) = &st.problem {
            problems.push(format!("instance dir {}/{name}: {p}", cfg.mount_point));
        }
        instance_dirs.insert(name.clone(), st);
    }

    let bind = cfg.bind_mount_nix_store.then(|| {
        let mut b = store::bind_state(cfg, &mounts);
        // With the storage mount taken away there is nothing to compare
        // with; the device and the subdir say it still is the bind.
        b.is_bind |= outlived;
        let marker = store::marker_path(cfg).exists();
        if !b.is_bind {
            problems.push(format!(
                "{} is not the bind of {}",
                cfg.bind_target,
                cfg.store_dir().unwrap_or_default()
            ));
        } else if !marker {
            problems.push(format!(
                "marker {} is missing",
                store::marker_path(cfg).display()
            ));
        }
        BindStatus {
            target: cfg.bind_target.clone(),
            store_dir: cfg.store_dir().unwrap_or_default(),
            is_bind: b.is_bind,
            mounted_source: b
                .mounted
                .map(|m| format!("{} (root {})", m.source_text(), m.root.display())),
            marker,
        }
    });

    let is_bind = bind.as_ref().is_some_and(|b| b.is_bind);
    let store_read_only = is_bind.then(|| store::store_is_read_only(cfg, &mounts));
    if store_read_only == Some(false) {
        problems.push(format!(
            "{}/store is writable: `wsl-storage-mount mark` makes it read-only (as NixOS-WSL does)",
            cfg.bind_target
        ));
    }
    let mut propagation = BTreeMap::new();
    let store_mount = crate::boot::propagation::store_path(cfg);
    for (what, path) in [
        ("mountPoint", std::path::PathBuf::from(&cfg.mount_point)),
        ("bindTarget", std::path::PathBuf::from(&cfg.bind_target)),
        ("read-only store", store_mount),
    ] {
        let Some(m) = mountinfo::top_at(&mounts, &path) else {
            continue;
        };
        propagation.insert(path.display().to_string(), m.propagation());
        if is_bind && what != "mountPoint" {
            problems.extend(crate::boot::propagation::exposed(what, m));
        }
    }
    let boot = cfg.bind_mount_nix_store.then(|| {
        let b = store::sync::boot_status(cfg, boot_root);
        problems.extend(b.hazards.iter().cloned());
        if let Some(e) = &b.error {
            problems.push(format!("the VHDX store cannot be read: {e}"));
        } else if is_bind && !b.in_step {
            problems.push(format!(
                "the VHDX boots {} but the disk's current system is {}: the next start would undo the last deployment; run `sudo wsl-storage-mount sync-boot`",
                b.vhdx_system.as_deref().unwrap_or("(nothing)"),
                b.disk_system.as_deref().unwrap_or("(nothing)")
            ));
        }
        b
    });

    match &last_run {
        None => problems.push("no `mount` run recorded since boot".into()),
        Some(r) if r.outcome != "mounted" => problems.push(format!(
            "last `mount` run: {} (exit {}): {}",
            r.outcome, r.exit_code, r.message
        )),
        Some(_) => {}
    }

    Status {
        ok: problems.is_empty(),
        problems,
        identity: cfg.identity(),
        device,
        mount_point: cfg.mount_point.clone(),
        mount,
        mount_point_taken,
        propagation,
        instance_dirs,
        bind,
        quotas,
        binds,
        stamp: store::stamp_path().exists(),
        store_read_only,
        boot,
        last_run,
    }
}

pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "device:      {}", s.identity);
    match &s.device {
        Some(d) => {
            let _ = write!(out, "  node:      {} ({})", d.node, d.via);
            match &d.filesystem {
                Some(fs) => {
                    let _ = writeln!(
                        out,
                        "\n  fs:        {} UUID={} LABEL={}{}",
                        fs.fs_type,
                        fs.uuid.as_deref().unwrap_or("-"),
                        fs.label.as_deref().unwrap_or("-"),
                        if fs.has_errors {
                            " (errors recorded)"
                        } else {
                            ""
                        }
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "\n  fs:        none usable: {}",
                        d.filesystem_problem.as_deref().unwrap_or("none recognised")
                    );
                }
            }
        }
        None => out.push_str("  node:      not present\n"),
    }
    let _ = writeln!(out, "mount point: {}", s.mount_point);
    match &s.mount {
        Some(m) => {
            let _ = writeln!(
                out,
                "  mounted:   {} ({}) {}",
                m.source, m.fs_type, m.options
            );
        }
        None if s.mount_point_taken => {
            out.push_str("  mounted:   no (taken away after `mount` mounted it)\n")
        }
        None => out.push_str("  mounted:   no\n"),
    }
    if !s.propagation.is_empty() {
        out.push_str("propagation:\n");
        for (path, how) in &s.propagation {
            let _ = writeln!(out, "  {path}: {how}");
        }
    }
    if !s.instance_dirs.is_empty() {
        out.push_str("instance dirs:\n");
        for (name, d) in &s.instance_dirs {
            let actual = d.actual.as_ref().map_or("-".to_string(), |a| {
                format!("{}:{} {:04o}", a.uid, a.gid, a.mode)
            });
            let _ = writeln!(
                out,
                "  {name}: {actual} (want {}:{} {}){}",
                d.want_owner,
                d.want_group,
                d.want_mode,
                d.problem
                    .as_ref()
                    .map_or(String::new(), |p| format!("  <- {p}"))
            );
        }
    }
    if !s.quotas.is_empty() {
        out.push_str("quotas (every instance dir on the disk with a project):\n");
        for (name, q) in &s.quotas {
            let _ = writeln!(
                out,
                "  {name}: {} of {}, {} inodes of {} (project {})",
                crate::space::human_bytes(q.used_bytes),
                q.limit_bytes
                    .map_or("no limit".into(), crate::space::human_bytes),
                q.used_inodes,
                q.limit_inodes.map_or("no limit".into(), |n| n.to_string()),
                q.project
            );
        }
    }
    if !s.binds.is_empty() {
        out.push_str("binds:\n");
        for (path, b) in &s.binds {
            let _ = writeln!(
                out,
                "  {path}: {} {}{}",
                if b.is_bind {
                    "bind of"
                } else {
                    "NOT the bind of"
                },
                b.subdir,
                match b.read_only {
                    Some(true) => ", read-only",
                    Some(false) => ", writable",
                    None => "",
                }
            );
        }
    }
    if let Some(b) = &s.bind {
        let _ = writeln!(
            out,
            "bind:        {} {} {}{}",
            b.target,
            if b.is_bind {
                "is the bind of"
            } else {
                "is NOT the bind of"
            },
            b.store_dir,
            b.mounted_source
                .as_ref()
                .map_or(String::new(), |m| format!(" (mounted: {m})"))
        );
        let _ = writeln!(
            out,
            "marker:      {}",
            if b.marker { "present" } else { "absent" }
        );
    }
    if let Some(ro) = s.store_read_only {
        let _ = writeln!(
            out,
            "store:       {}",
            if ro { "read-only" } else { "WRITABLE" }
        );
    }
    if let Some(b) = &s.boot {
        let _ = writeln!(
            out,
            "boot:        VHDX boots {}\n             disk's current system {}\n             {}{}",
            b.vhdx_system.as_deref().unwrap_or("(unknown)"),
            b.disk_system.as_deref().unwrap_or("(unknown)"),
            if b.in_step { "in step" } else { "NOT in step" },
            match (b.vhdx_paths, b.vhdx_store_bytes) {
                (Some(n), Some(bytes)) => format!(
                    "; VHDX store: {n} paths, {}",
                    crate::space::human_bytes(bytes)
                ),
                _ => b
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; VHDX store unreadable: {e}")),
            }
        );
    }
    match &s.last_run {
        Some(r) => {
            let _ = writeln!(
                out,
                "last run:    {} (exit {}) at {}: {}",
                r.outcome, r.exit_code, r.finished_at, r.message
            );
        }
        None => out.push_str("last run:    none recorded\n"),
    }
    if s.ok {
        out.push_str("status:      ok\n");
    } else {
        out.push_str("status:      NOT as configured\n");
        for p in &s.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}

pub fn run(cfg: &Config, json: bool, boot_root: &std::path::Path) -> Result<Exit> {
    let s = gather(cfg, boot_root);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s));
    }
    Ok(if s.ok {
        Exit::Success
    } else {
        Exit::Unexpected
    })
}
