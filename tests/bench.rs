//! `bench` end to end on two loop-device filesystems, one mounted at
//! mountPoint (the disk), one standing in for the VHDX's root filesystem.
//! The figures are not asserted (they are the machine's); the table's
//! shape, the JSON keys, the cleanup and the refusals are.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{output_text, Sandbox};
use serde_json::json;

const ROWS: [&str; 10] = [
    "sequential write",
    "sequential read",
    "random 4K read",
    "random 4K read p50",
    "random 4K read p99",
    "random 4K write",
    "random 4K write p50",
    "random 4K write p99",
    "small files: write+fsync+rename",
    "small files: read back",
];

/// The disk mounted at mountPoint and a VHDX stand-in directory, each on
/// its own ext4 loop device of `disk_mb` and `vhdx_mb`.
fn setup(sb: &mut Sandbox, disk_mb: u64, vhdx_mb: u64) -> (String, String, std::path::PathBuf) {
    let disk = sb.loop_device(disk_mb, &["mkfs.ext4", "-q"]);
    let vhdx = sb.loop_device(vhdx_mb, &["mkfs.ext4", "-q"]);
    let mp = sb.path("storage").display().to_string();
    let vdir = sb.path("vhdx-root").display().to_string();
    sb.sh_ok(&format!(
        "mkdir -p {mp} {vdir} && mount {} {mp} && mount {} {vdir}",
        disk.node, vhdx.node
    ));
    let cfg = sb.config(
        "config.json",
        json!({"fsLabel": "unused", "mountPoint": mp}),
    );
    (mp, vdir, cfg)
}

/// Only what mkfs made is left on both sides.
fn assert_clean(sb: &Sandbox, mp: &str, vdir: &str) {
    assert_eq!(
        sb.sh_ok(&format!("ls -A {mp} {vdir}")),
        format!("{mp}:\nlost+found\n\n{vdir}:\nlost+found\n"),
        "the benchmark left files behind"
    );
}

#[test]
fn bench_prints_a_table_and_json_and_leaves_nothing_behind() {
    let Some(mut sb) = Sandbox::new() else { return };
    let (mp, vdir, cfg) = setup(&mut sb, 96, 96);
    let args = [
        "bench",
        "--size",
        "8M",
        "--files",
        "300",
        "--vhdx-dir",
        &vdir,
    ];

    let out = sb.helper(&cfg, &args);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("wsl-storage-mount bench: 8 MiB file, 300 small files"),
        "{text}"
    );
    assert!(text.contains(&format!("disk: {mp} (ext4")), "{text}");
    assert!(text.contains(&format!("VHDX: {vdir} (ext4")), "{text}");
    let header = lines
        .iter()
        .position(|l| l.starts_with("workload"))
        .unwrap_or_else(|| panic!("no header:\n{text}"));
    let cols: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(cols, ["workload", "unit", "disk", "VHDX", "ratio"]);
    for (i, name) in ROWS.iter().enumerate() {
        let line = lines[header + 1 + i];
        let rest = line
            .strip_prefix(name)
            .unwrap_or_else(|| panic!("row {i} is not {name:?}: {line:?}"));
        let fields: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "{line:?}");
        assert!(
            ["MiB/s", "IOPS", "us", "files/s"].contains(&fields[0]),
            "{line:?}"
        );
        for f in &fields[1..3] {
            let v: f64 = f.parse().unwrap_or_else(|_| panic!("{f:?} in {line:?}"));
            assert!(v > 0.0, "{line:?} in\n{text}");
        }
        let ratio = fields[3].strip_suffix('x').expect("ratio ends in x");
        assert!(
            ratio.parse::<f64>().is_ok_and(|r| r >= 0.0),
            "{line:?} in\n{text}"
        );
    }
    assert!(
        lines.last().is_some_and(|l| l.starts_with("verdict: ")),
        "{text}"
    );
    assert_clean(&sb, &mp, &vdir);

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = sb.helper(&cfg, &json_args);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", output_text(&out)));
    assert_eq!(report["sizeBytes"], 8 << 20);
    assert_eq!(report["files"], 300);
    assert!(report["verdict"].as_str().unwrap().starts_with("verdict: "));
    for (side, path) in [("disk", &mp), ("vhdx", &vdir)] {
        let s = &report[side];
        assert_eq!(s["path"], path.as_str());
        assert_eq!(s["fsType"], "ext4");
        assert!(s["directIo"].is_boolean());
        for key in [
            "seqWriteMibS",
            "seqReadMibS",
            "randReadIops",
            "randReadP50Us",
            "randReadP99Us",
            "randWriteIops",
            "randWriteP50Us",
            "randWriteP99Us",
            "nixWriteFilesS",
            "nixReadFilesS",
        ] {
            assert!(
                s[key].as_f64().is_some_and(|v| v > 0.0),
                "{side}.{key}: {s}"
            );
        }
    }
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ROWS);
    for r in rows {
        for key in ["unit", "disk", "vhdx", "ratio", "higherIsBetter"] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
    }
    assert_clean(&sb, &mp, &vdir);
}

#[test]
fn bench_refuses_without_room_naming_the_side_and_the_figures() {
    let Some(mut sb) = Sandbox::new() else { return };
    let (mp, vdir, cfg) = setup(&mut sb, 96, 32);
    let out = sb.helper(
        &cfg,
        &[
            "bench",
            "--size",
            "48M",
            "--files",
            "100",
            "--vhdx-dir",
            &vdir,
        ],
    );
    assert_eq!(out.status.code(), Some(8), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("not enough room on {vdir}"))
            && err.contains("needs 66 MiB")
            && err.contains("are free")
            && err.contains("--size"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert_clean(&sb, &mp, &vdir);

    // The same filesystem on both sides compares nothing.
    let out = sb.helper(&cfg, &["bench", "--size", "8M", "--vhdx-dir", &mp]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another filesystem than mountPoint"),
        "{}",
        output_text(&out)
    );
    // Memory is not the VHDX.
    let tmp = sb.path("tmpfs").display().to_string();
    sb.sh_ok(&format!("mkdir -p {tmp} && mount -t tmpfs bench-tmp {tmp}"));
    let out = sb.helper(&cfg, &["bench", "--size", "8M", "--vhdx-dir", &tmp]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("--vhdx-dir {tmp} is on tmpfs")),
        "{}",
        output_text(&out)
    );
    // Nothing mounted at mountPoint: no disk to measure.
    sb.sh_ok(&format!("umount {mp}"));
    let out = sb.helper(&cfg, &["bench", "--size", "8M", "--vhdx-dir", &vdir]);
    assert_eq!(out.status.code(), Some(5), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("mountPoint {mp} is not mounted")),
        "{}",
        output_text(&out)
    );
}

#[test]
fn bench_interrupted_by_ctrl_c_removes_its_files() {
    let Some(mut sb) = Sandbox::new() else { return };
    // Sparse images: room for enough small files to still be running when
    // the signal comes.
    let (mp, vdir, cfg) = setup(&mut sb, 512, 512);
    let mut child = sb
        .helper_cmd(
            &cfg,
            &[
                "bench",
                "--size",
                "8M",
                "--files",
                "30000",
                "--vhdx-dir",
                &vdir,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Wait until the small files are being written on the disk side.
    while !sb
        .sh(&format!("ls {mp}/.wsl-storage-mount-bench-*/store/00"))
        .status
        .success()
    {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the benchmark never reached the small files: {}\n{}",
                output_text(&out),
                sb.sh_ok(&format!("ls -laR {mp} | head -20"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // nsenter exec'd the helper: this pid is the helper's.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
        "{}",
        output_text(&out)
    );
    assert_clean(&sb, &mp, &vdir);
}
