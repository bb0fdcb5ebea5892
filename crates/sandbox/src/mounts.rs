//! The filesystem an isolated environment sees, as a plan of mount operations.
//!
//! The plan is computed in the server (plain data, unit-tested without root) and carried out by
//! the new process inside its own mount namespace, before it drops privileges:
//!
//! ```text
//! /                  tmpfs, read-only once built
//! /usr /bin /lib …   the host's, read-only (symlinks where the host has symlinks)
//! /etc               only what programs need (ld.so cache, resolv.conf, TLS roots, …) and a
//!                    generated passwd/group/hosts; never shadow, ssh keys or the like
//! /var/task          the function's code, read-only
//! /var/runtime       the runtime bootstraps, read-only
//! /opt               the function's layers, merged in order (empty without layers)
//! /tmp               a private tmpfs of EphemeralStorage bytes
//! /proc              the environment's own (PID namespace)
//! /dev               null, zero, full, random, urandom, a private shm, fd links
//! ```
//!
//! Nothing else of the host is visible: not the data directory, not other functions' code, not
//! the platform's files.

use std::path::{Path, PathBuf};

/// One step of the plan. Paths are absolute inside the new root before `pivot_root` (they are
/// joined onto the staging directory by [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    /// Make a bind mount read-only (and nosuid, nodev).
    ReadOnly {
        target: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    /// Create an empty file to bind a host file onto.
    Touch {
        path: PathBuf,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    WriteFile {
        path: PathBuf,
        contents: String,
    },
}

/// What the plan shows.
#[derive(Debug, Clone)]
pub struct RootSpec<'a> {
    /// Empty host directory over which the new root's tmpfs is mounted (in the new mount
    /// namespace only, so one directory serves every environment).
    pub staging: &'a Path,
    pub task_root: &'a Path,
    pub runtime_dir: &'a Path,
    pub opt: Option<&'a Path>,
    /// Bytes of `/tmp`.
    pub tmp_bytes: u64,
    /// Host directories shown at the same path, read-only (interpreters outside `/usr`).
    pub extra_ro: &'a [PathBuf],
    /// The uid and gid the function runs as (for the generated passwd and group).
    pub uid: u32,
    pub gid: u32,
}

/// Host directories shown read-only (or recreated as the same symlink).
const HOST_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Files and directories of the host's `/etc` that programs need; everything else stays hidden.
const ETC_ALLOW: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "alternatives",
    "mime.types",
    "os-release",
    "localtime",
];

/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

const MS_RDONLY: u64 = 1;
const MS_NOSUID: u64 = 2;
const MS_NODEV: u64 = 4;
const MS_NOEXEC: u64 = 8;
const MS_BIND: u64 = 4096;
const MS_REC: u64 = 16384;
const MS_PRIVATE: u64 = 1 << 18;

/// Builds the plan. `host_root` is `/` except in tests.
pub fn plan(spec: &RootSpec<'_>, host_root: &Path) -> Vec<MountOp> {
    let r = |p: &str| spec.staging.join(p.trim_start_matches('/'));
    let host = |p: &str| host_root.join(p.trim_start_matches('/'));
    let mut ops = vec![
        // Nothing done below may propagate back to the host.
        MountOp::Mount { source: None, target: "/".into(), fstype: None, flags: MS_REC | MS_PRIVATE, data: None },
        MountOp::Mount {
            source: Some("tmpfs".into()),
            target: spec.staging.to_path_buf(),
            fstype: Some("tmpfs".into()),
            flags: MS_NOSUID | MS_NODEV,
            data: Some("mode=0755,size=16m".into()),
        },
    ];
    let bind_ro = |ops: &mut Vec<MountOp>, source: PathBuf, target: PathBuf, is_dir: bool| {
        ops.push(if is_dir {
            MountOp::Mkdir { path: target.clone() }
        } else {
            MountOp::Touch { path: target.clone() }
        });
        ops.push(MountOp::Mount {
            source: Some(source),
            target: target.clone(),
            fstype: None,
            flags: MS_BIND | MS_REC,
            data: None,
        });
        ops.push(MountOp::ReadOnly { target });
    };
    for d in HOST_DIRS {
        let h = host(d);
        match std::fs::symlink_metadata(&h) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&h) {
                    ops.push(MountOp::Symlink { target: t, link: r(d) });
                }
            }
            Ok(m) if m.is_dir() => bind_ro(&mut ops, h, r(d), true),
            _ => {}
        }
    }
    ops.push(MountOp::Mkdir { path: r("/etc") });
    for name in ETC_ALLOW {
        let h = host("/etc").join(name);
        match std::fs::symlink_metadata(&h) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&h) {
                    ops.push(MountOp::Symlink { target: t, link: r("/etc").join(name) });
                }
            }
            Ok(m) => bind_ro(&mut ops, h, r("/etc").join(name), m.is_dir()),
            Err(_) => {}
        }
    }
    ops.push(MountOp::WriteFile {
        path: r("/etc/passwd"),
        contents: format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user1051:x:{}:{}::/tmp:/usr/sbin/nologin\n",
            spec.uid, spec.gid
        ),
    });
    ops.push(MountOp::WriteFile {
        path: r("/etc/group"),
        contents: format!("root:x:0:\nsbx_user1051:x:{}:\n", spec.gid),
    });
    ops.push(MountOp::WriteFile {
        path: r("/etc/hosts"),
        contents: "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
    });
    for extra in spec.extra_ro {
        let mut path = PathBuf::from("/");
        for comp in extra.components().skip(1) {
            path.push(comp);
            ops.push(MountOp::Mkdir { path: spec.staging.join(path.strip_prefix("/").unwrap_or(&path)) });
        }
        ops.pop();
        bind_ro(&mut ops, extra.clone(), spec.staging.join(extra.strip_prefix("/").unwrap_or(extra)), true);
    }
    ops.push(MountOp::Mkdir { path: r("/var") });
    bind_ro(&mut ops, spec.task_root.to_path_buf(), r("/var/task"), true);
    bind_ro(&mut ops, spec.runtime_dir.to_path_buf(), r("/var/runtime"), true);
    match spec.opt {
        Some(opt) => bind_ro(&mut ops, opt.to_path_buf(), r("/opt"), true),
        None => ops.push(MountOp::Mkdir { path: r("/opt") }),
    }
    ops.push(MountOp::Mkdir { path: r("/tmp") });
    ops.push(MountOp::Mount {
        source: Some("tmpfs".into()),
        target: r("/tmp"),
        fstype: Some("tmpfs".into()),
        flags: MS_NOSUID | MS_NODEV,
        data: Some(format!("mode=1777,size={}", spec.tmp_bytes)),
    });
    ops.push(MountOp::Mkdir { path: r("/dev") });
    ops.push(MountOp::Mount {
        source: Some("tmpfs".into()),
        target: r("/dev"),
        fstype: Some("tmpfs".into()),
        flags: MS_NOSUID | MS_NOEXEC,
        data: Some("mode=0755,size=64k".into()),
    });
    for dev in DEVICES {
        let target = r("/dev").join(dev);
        ops.push(MountOp::Touch { path: target.clone() });
        ops.push(MountOp::Mount {
            source: Some(host("/dev").join(dev)),
            target,
            fstype: None,
            flags: MS_BIND,
            data: None,
        });
    }
    ops.push(MountOp::Mkdir { path: r("/dev/shm") });
    ops.push(MountOp::Mount {
        source: Some("tmpfs".into()),
        target: r("/dev/shm"),
        fstype: Some("tmpfs".into()),
        flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
        data: Some("mode=1777,size=64m".into()),
    });
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink { target: target.into(), link: r("/dev").join(link) });
    }
    ops.push(MountOp::Mkdir { path: r("/proc") });
    ops.push(MountOp::Mount {
        source: Some("proc".into()),
        target: r("/proc"),
        fstype: Some("proc".into()),
        flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
        data: None,
    });
    ops.push(MountOp::Mkdir { path: r("/.oldroot") });
    ops
}

/// The flags for remounting the finished root read-only.
pub const ROOT_READ_ONLY: u64 = MS_RDONLY | MS_NOSUID | MS_NODEV;

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(ops: &[MountOp]) -> Vec<(Option<PathBuf>, PathBuf)> {
        ops.iter()
            .filter_map(|op| match op {
                MountOp::Mount { source, target, .. } => Some((source.clone(), target.clone())),
                _ => None,
            })
            .collect()
    }

    fn read_only(ops: &[MountOp], target: &Path) -> bool {
        ops.iter().any(|op| matches!(op, MountOp::ReadOnly { target: t } if t == target))
    }

    #[test]
    fn shows_code_runtime_and_tmp_and_nothing_of_the_data_dir() {
        let host = tempfile::tempdir().unwrap();
        for d in ["usr", "etc/ssl", "dev"] {
            std::fs::create_dir_all(host.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", host.path().join("lib")).unwrap();
        for f in ["etc/shadow", "etc/resolv.conf", "etc/passwd"] {
            std::fs::write(host.path().join(f), "x").unwrap();
        }
        let staging = Path::new("/stage");
        let spec = RootSpec {
            staging,
            task_root: Path::new("/data/code/trees/abc"),
            runtime_dir: Path::new("/data/runtimes"),
            opt: None,
            tmp_bytes: 512 << 20,
            extra_ro: &[PathBuf::from("/root/.pyenv/versions/3.12.1")],
            uid: 300001,
            gid: 300001,
        };
        let ops = plan(&spec, host.path());
        let mounts = targets(&ops);
        assert!(mounts.contains(&(Some("/data/code/trees/abc".into()), "/stage/var/task".into())));
        assert!(read_only(&ops, Path::new("/stage/var/task")));
        assert!(read_only(&ops, Path::new("/stage/var/runtime")));
        assert!(read_only(&ops, Path::new("/stage/usr")));
        assert!(read_only(&ops, Path::new("/stage/root/.pyenv/versions/3.12.1")));
        assert!(ops.contains(&MountOp::Symlink { target: "usr/lib".into(), link: "/stage/lib".into() }));
        let tmp = ops.iter().find_map(|op| match op {
            MountOp::Mount { target, data, .. } if target == Path::new("/stage/tmp") => data.clone(),
            _ => None,
        });
        assert_eq!(tmp.as_deref(), Some("mode=1777,size=536870912"));
        // Only allowed host files are bound, and nothing of the data directory besides code and runtime.
        assert!(!mounts.iter().any(|(s, _)| s.as_deref() == Some(&host.path().join("etc/shadow"))));
        assert!(!mounts.iter().any(|(s, _)| s.as_deref() == Some(&host.path().join("etc/passwd"))));
        assert!(mounts.iter().any(|(s, _)| s.as_deref() == Some(&host.path().join("etc/resolv.conf"))));
        let from_data: Vec<_> =
            mounts.iter().filter_map(|(s, _)| s.as_ref()).filter(|s| s.starts_with("/data")).collect();
        assert_eq!(from_data.len(), 2);
        // The first step stops propagation to the host.
        assert_eq!(
            ops[0],
            MountOp::Mount { source: None, target: "/".into(), fstype: None, flags: MS_REC | MS_PRIVATE, data: None }
        );
        let passwd = ops.iter().find_map(|op| match op {
            MountOp::WriteFile { path, contents } if path == Path::new("/stage/etc/passwd") => Some(contents.clone()),
            _ => None,
        });
        assert!(passwd.unwrap().contains(":300001:300001:"));
    }
}
