//! Control groups for environments, on cgroup v1 (a hierarchy per controller, as on this
//! project's machines) and cgroup v2 (the unified hierarchy of most current hosts), detected at
//! start.
//!
//! Each environment gets `stratus/env-<id>` under every controller it uses: memory (its
//! MemorySize; `/tmp` is a tmpfs and counts too), pids (process count), cpu (a share
//! proportional to memory, 1,769 MB = one vCPU, capped at that many vCPUs but never below one)
//! and the freezer. Everything here is file writes under a root directory, so tests run it
//! against a directory tree that stands in for `/sys/fs/cgroup`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The cgroup hierarchy flavour of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Memory (MB) that buys one vCPU, as on Lambda.
pub const MB_PER_VCPU: u64 = 1769;
const CPU_PERIOD_US: u64 = 100_000;

/// Limits written to an environment's cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub max_processes: u64,
}

impl CgroupLimits {
    /// v1 `cpu.shares`: 1,024 per vCPU of memory-derived power.
    pub fn cpu_shares(&self) -> u64 {
        ((self.memory_bytes >> 20) * 1024 / MB_PER_VCPU).max(2)
    }

    /// v2 `cpu.weight` (1–10,000; 100 is the default, like 1,024 shares).
    pub fn cpu_weight(&self) -> u64 {
        (self.cpu_shares() * 100 / 1024).clamp(1, 10_000)
    }

    /// CPU time per 100 ms period: memory-proportional vCPUs, but at least one.
    pub fn cpu_quota_us(&self) -> u64 {
        let mb = self.memory_bytes >> 20;
        (CPU_PERIOD_US * mb / MB_PER_VCPU).max(CPU_PERIOD_US)
    }
}

/// Where a host's cgroups are and which flavour they are.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub version: Version,
    /// `/sys/fs/cgroup` (or a stand-in directory in tests).
    pub root: PathBuf,
    /// The directory under each hierarchy holding this server's environments:
    /// `stratus/s<server pid>`, so that several servers on one host never collide.
    pub prefix: PathBuf,
}

/// Why cgroups cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {0}")]
    NotFound(PathBuf),
    #[error("the {0} controller is not available")]
    MissingController(&'static str),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    // O_CREAT is harmless on cgroupfs (its files exist or cannot be created) and lets tests
    // stand a plain directory in for it.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write { path: path.to_path_buf(), source })
}

const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

impl Cgroups {
    /// Detects the hierarchy under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Result<Self, CgroupError> {
        let prefix = Path::new("stratus").join(format!("s{}", std::process::id()));
        if root.join("cgroup.controllers").is_file() {
            return Ok(Self { version: Version::V2, root: root.to_path_buf(), prefix });
        }
        if root.join("memory").is_dir() {
            for c in V1_CONTROLLERS {
                if !root.join(c).is_dir() {
                    return Err(CgroupError::MissingController(c));
                }
            }
            return Ok(Self { version: Version::V1, root: root.to_path_buf(), prefix });
        }
        Err(CgroupError::NotFound(root.to_path_buf()))
    }

    /// The hierarchies' directories holding this server's groups.
    fn bases(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V1 => V1_CONTROLLERS.iter().map(|c| self.root.join(c)).collect(),
            Version::V2 => vec![self.root.clone()],
        }
    }

    /// Creates this server's parent groups, enables the controllers it needs (v2), and removes
    /// groups left by servers that no longer run (killing whatever is still inside).
    pub fn prepare(&self) -> Result<(), CgroupError> {
        self.remove_stale();
        let mkdir = |dir: &Path| {
            fs::create_dir_all(dir).map_err(|source| CgroupError::Write { path: dir.to_path_buf(), source })
        };
        match self.version {
            Version::V1 => {
                for base in self.bases() {
                    mkdir(&base.join(&self.prefix))?;
                }
            }
            Version::V2 => {
                let enabled = fs::read_to_string(self.root.join("cgroup.subtree_control")).unwrap_or_default();
                let missing: Vec<String> = ["memory", "pids", "cpu"]
                    .iter()
                    .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                if !missing.is_empty() {
                    write_file(&self.root.join("cgroup.subtree_control"), &missing.join(" "))?;
                }
                let mut dir = self.root.clone();
                for part in self.prefix.components() {
                    dir = dir.join(part);
                    mkdir(&dir)?;
                    write_file(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                }
            }
        }
        Ok(())
    }

    /// Removes `stratus/s<pid>` groups whose server is gone, and everything still in them.
    fn remove_stale(&self) {
        let stale: Vec<PathBuf> = self
            .bases()
            .iter()
            .flat_map(|base| fs::read_dir(base.join("stratus")).into_iter().flatten().flatten())
            .filter(|server| {
                let name = server.file_name().to_string_lossy().to_string();
                name.strip_prefix('s')
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            })
            .map(|server| server.path())
            .collect();
        let envs = |server: &Path| -> Vec<PathBuf> {
            fs::read_dir(server).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
        };
        // A frozen process cannot even die, and a throttled one dies slowly: thaw and lift first.
        for server in &stale {
            for env in envs(server) {
                for (file, value) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
                    if env.join(file).exists() {
                        let _ = write_file(&env.join(file), value);
                    }
                }
                if env.join("cpu.cfs_quota_us").exists() || env.join("cpu.max").exists() {
                    lift_cpu_limit(self.version, &env);
                }
            }
        }
        for server in &stale {
            for env in envs(server) {
                for pid in read_pids(&env) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        for server in &stale {
            for env in envs(server) {
                for _ in 0..100 {
                    if fs::remove_dir(&env).is_ok() || !env.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            let _ = fs::remove_dir(server);
        }
    }

    /// Removes this server's parent groups (at shutdown, once every environment is gone).
    pub fn release(&self) {
        for base in self.bases() {
            let _ = fs::remove_dir(base.join(&self.prefix));
        }
    }

    /// Creates the groups of environment `id` with `limits`.
    pub fn create(&self, id: u64, limits: &CgroupLimits) -> Result<EnvCgroup, CgroupError> {
        let name = format!("env-{id}");
        let dirs: Vec<(&'static str, PathBuf)> = match self.version {
            Version::V1 => {
                V1_CONTROLLERS.iter().map(|c| (*c, self.root.join(c).join(&self.prefix).join(&name))).collect()
            }
            Version::V2 => vec![("unified", self.root.join(&self.prefix).join(&name))],
        };
        let group = EnvCgroup { version: self.version, dirs, peak: None, oom: None };
        for (_, d) in &group.dirs {
            if let Err(source) = fs::create_dir(d)
                && source.kind() != io::ErrorKind::AlreadyExists
            {
                group.remove();
                return Err(CgroupError::Write { path: d.clone(), source });
            }
        }
        if let Err(e) = group.apply(limits) {
            group.remove();
            return Err(e);
        }
        Ok(group.open_counters())
    }
}

/// One environment's groups.
#[derive(Debug)]
pub struct EnvCgroup {
    version: Version,
    /// Controller name (or `unified`) and directory.
    dirs: Vec<(&'static str, PathBuf)>,
    /// Kept open: the peak-memory counter is read after invocations.
    peak: Option<File>,
    oom: Option<File>,
}

impl EnvCgroup {
    fn dir(&self, controller: &str) -> &Path {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller || *c == "unified")
            .map(|(_, d)| d.as_path())
            .unwrap_or(Path::new("/"))
    }

    fn apply(&self, l: &CgroupLimits) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                let mem = self.dir("memory");
                write_file(&mem.join("memory.limit_in_bytes"), &l.memory_bytes.to_string())?;
                // Best effort: not every kernel has these.
                let _ = write_file(&mem.join("memory.swappiness"), "0");
                let _ = write_file(&mem.join("memory.memsw.limit_in_bytes"), &l.memory_bytes.to_string());
                write_file(&self.dir("pids").join("pids.max"), &l.max_processes.to_string())?;
                let cpu = self.dir("cpu");
                write_file(&cpu.join("cpu.shares"), &l.cpu_shares().to_string())?;
                write_file(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write_file(&cpu.join("cpu.cfs_quota_us"), &l.cpu_quota_us().to_string())?;
            }
            Version::V2 => {
                let d = self.dir("unified");
                write_file(&d.join("memory.max"), &l.memory_bytes.to_string())?;
                let _ = write_file(&d.join("memory.swap.max"), "0");
                write_file(&d.join("pids.max"), &l.max_processes.to_string())?;
                write_file(&d.join("cpu.weight"), &l.cpu_weight().to_string())?;
                write_file(&d.join("cpu.max"), &format!("{} {CPU_PERIOD_US}", l.cpu_quota_us()))?;
            }
        }
        Ok(())
    }

    fn open_counters(mut self) -> Self {
        let (peak, oom) = match self.version {
            Version::V1 => {
                (self.dir("memory").join("memory.max_usage_in_bytes"), self.dir("memory").join("memory.oom_control"))
            }
            Version::V2 => {
                let d = self.dir("unified");
                let peak =
                    if d.join("memory.peak").exists() { d.join("memory.peak") } else { d.join("memory.current") };
                (peak, d.join("memory.events"))
            }
        };
        self.peak = File::open(peak).ok();
        self.oom = File::open(oom).ok();
        self
    }

    /// The `cgroup.procs` files a new process writes `0` to, to join every group.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    fn read_counter(file: &Option<File>) -> Option<String> {
        let mut buf = [0u8; 1024];
        let n = file.as_ref()?.read_at(&mut buf, 0).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Highest memory use of the group so far, in bytes.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        Self::read_counter(&self.peak)?.trim().parse().ok()
    }

    /// How many processes the kernel killed for running out of memory.
    pub fn oom_kills(&self) -> u64 {
        let text = Self::read_counter(&self.oom).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// Pauses (true) or resumes (false) every process of the group.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                write_file(&self.dir("freezer").join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" })
            }
            Version::V2 => write_file(&self.dir("unified").join("cgroup.freeze"), if frozen { "1" } else { "0" }),
        }
    }

    /// Process ids in the group.
    pub fn pids(&self) -> Vec<i32> {
        read_pids(self.dir("pids"))
    }

    /// Kills every process in the group without waiting for them (v2: `cgroup.kill`; v1:
    /// signal each). The CPU limit is lifted first: a killed process must run to die, and a
    /// thousand processes sharing a small quota would take minutes to.
    pub fn kill_all(&self) {
        lift_cpu_limit(self.version, self.dir("cpu"));
        let _ = self.set_frozen(false);
        if self.version == Version::V2 && write_file(&self.dir("unified").join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Removes the groups (they must be empty; retried briefly while processes finish dying).
    pub fn remove(&self) {
        for (_, d) in &self.dirs {
            for attempt in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 49 => std::thread::sleep(std::time::Duration::from_millis(2)),
                    Err(e) => tracing_free_warn(d, &e),
                }
            }
        }
    }
}

fn lift_cpu_limit(version: Version, dir: &Path) {
    let _ = match version {
        Version::V1 => write_file(&dir.join("cpu.cfs_quota_us"), "-1"),
        Version::V2 => write_file(&dir.join("cpu.max"), &format!("max {CPU_PERIOD_US}")),
    };
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The sandbox crate does not log; leftovers are reported on stderr once.
fn tracing_free_warn(dir: &Path, e: &io::Error) {
    eprintln!("stratus sandbox: cannot remove cgroup {}: {e}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for c in V1_CONTROLLERS {
            fs::create_dir_all(d.path().join(c)).unwrap();
        }
        d
    }

    /// The kernel creates these files in a new group; the fake creates them as mkdir would.
    fn populate(dir: &Path, files: &[&str]) {
        for f in files {
            fs::write(dir.join(f), "").unwrap();
        }
    }

    #[test]
    fn cpu_follows_memory_like_lambda() {
        let l = |mb: u64| CgroupLimits { memory_bytes: mb << 20, max_processes: 1024 };
        assert_eq!(l(1769).cpu_shares(), 1024);
        assert_eq!(l(128).cpu_shares(), 74);
        assert_eq!(l(128).cpu_quota_us(), 100_000, "never below one vCPU");
        assert_eq!(l(10_240).cpu_quota_us(), 578_858, "5.8 vCPUs at 10 GB");
        assert_eq!(l(1769).cpu_weight(), 100);
    }

    #[test]
    fn groups_of_dead_servers_are_removed() {
        let root = fake_v1();
        let stale = root.path().join("memory/stratus/s999999999/env-1");
        fs::create_dir_all(&stale).unwrap();
        let cg = Cgroups::detect(root.path()).unwrap();
        cg.prepare().unwrap();
        assert!(!root.path().join("memory/stratus/s999999999").exists());
        assert!(root.path().join("memory").join(&cg.prefix).is_dir());
    }

    #[test]
    fn detects_v1_and_v2() {
        let v1 = fake_v1();
        assert_eq!(Cgroups::detect(v1.path()).unwrap().version, Version::V1);
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(Cgroups::detect(v2.path()).unwrap().version, Version::V2);
        let none = tempfile::tempdir().unwrap();
        assert!(Cgroups::detect(none.path()).is_err());
    }

    #[test]
    fn v1_groups_get_their_limits() {
        let root = fake_v1();
        let cg = Cgroups::detect(root.path()).unwrap();
        cg.prepare().unwrap();
        for (c, files) in [
            ("memory", &["memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.oom_control"][..]),
            ("pids", &["pids.max"][..]),
            ("cpu", &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"][..]),
            ("freezer", &["freezer.state"][..]),
        ] {
            let d = root.path().join(c).join(&cg.prefix).join("env-7");
            fs::create_dir_all(&d).unwrap();
            populate(&d, files);
        }
        let env_dir = |c: &str| root.path().join(c).join(&cg.prefix).join("env-7");
        fs::write(env_dir("memory").join("memory.max_usage_in_bytes"), "1234\n").unwrap();
        fs::write(env_dir("memory").join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
            .unwrap();
        let env = cg.create(7, &CgroupLimits { memory_bytes: 256 << 20, max_processes: 1024 }).unwrap();
        let read = |c: &str, f: &str| fs::read_to_string(env_dir(c).join(f)).unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), (256u64 << 20).to_string());
        assert_eq!(read("pids", "pids.max"), "1024");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "100000");
        assert_eq!(env.peak_memory_bytes(), Some(1234));
        assert_eq!(env.oom_kills(), 2);
        env.set_frozen(true).unwrap();
        assert_eq!(read("freezer", "freezer.state"), "FROZEN");
        assert_eq!(env.procs_files().len(), 4);
    }

    #[test]
    fn v2_groups_enable_controllers_and_get_their_limits() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "memory").unwrap();
        let cg = Cgroups::detect(root.path()).unwrap();
        cg.prepare().unwrap();
        assert_eq!(fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(), "+pids +cpu");
        assert_eq!(
            fs::read_to_string(root.path().join(&cg.prefix).join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        let d = root.path().join(&cg.prefix).join("env-3");
        fs::create_dir_all(&d).unwrap();
        populate(&d, &["memory.max", "pids.max", "cpu.weight", "cpu.max", "cgroup.freeze", "memory.peak"]);
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").unwrap();
        let env = cg.create(3, &CgroupLimits { memory_bytes: 3538 << 20, max_processes: 64 }).unwrap();
        assert_eq!(fs::read_to_string(d.join("memory.max")).unwrap(), (3538u64 << 20).to_string());
        assert_eq!(fs::read_to_string(d.join("cpu.max")).unwrap(), "200000 100000");
        assert_eq!(fs::read_to_string(d.join("pids.max")).unwrap(), "64");
        assert_eq!(env.oom_kills(), 1);
        env.set_frozen(true).unwrap();
        assert_eq!(fs::read_to_string(d.join("cgroup.freeze")).unwrap(), "1");
        assert_eq!(env.procs_files(), vec![d.join("cgroup.procs")]);
    }
}
