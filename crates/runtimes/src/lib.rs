//! The catalogue of managed runtimes this host can provide, and their bootstraps.
//!
//! A managed runtime is a host interpreter (found at start) plus our bootstrap: a small
//! program in the runtime's language, kept as a file in this crate (`python/bootstrap.py` with `python/stratus_bootstrap.py`,
//! `node/bootstrap.js`), that speaks the Runtime API and implements Lambda's handler,
//! context, logging and error conventions. OS-only runtimes (`provided.al2023`,
//! `provided.al2`) run the package's own `bootstrap`.
//!
//! This crate decides *what* to run; the `sandbox` decides *how confined*.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use model::LambdaError;
use model::runtime::{self, Family};

/// Bootstrap sources, written to the runtime directory at start.
const BOOTSTRAPS: &[(&str, &str)] = &[
    ("python/bootstrap.py", include_str!("../python/bootstrap.py")),
    ("python/stratus_bootstrap.py", include_str!("../python/stratus_bootstrap.py")),
    ("node/bootstrap.js", include_str!("../node/bootstrap.js")),
];

/// A runtime this host can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub id: String,
    pub family: Family,
    /// The interpreter on the host; `None` for OS-only runtimes.
    pub interpreter: Option<PathBuf>,
}

impl Available {
    /// Host directories an isolated environment must show for this runtime: the
    /// interpreter's installation prefix when it is not under `/usr` (a pyenv Python, say).
    pub fn host_dirs(&self) -> Vec<PathBuf> {
        let Some(interp) = &self.interpreter else { return Vec::new() };
        let real = fs::canonicalize(interp).unwrap_or_else(|_| interp.clone());
        if real.starts_with("/usr") || real.starts_with("/bin") || real.starts_with("/lib") {
            return Vec::new();
        }
        // <prefix>/bin/<interpreter>
        real.parent().and_then(Path::parent).map(|p| vec![p.to_path_buf()]).unwrap_or_default()
    }
}

/// What to execute for a function, in the paths the environment sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Run this program with these arguments.
    Program { program: PathBuf, args: Vec<String> },
    /// Run the package's own `bootstrap`: `<task root>/bootstrap`, else `<opt>/bootstrap`;
    /// if neither exists and is executable, the invocation fails with `Runtime.InvalidEntrypoint`.
    Bootstrap,
}

/// The runtimes this host provides.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    available: Vec<Available>,
}

/// Paths the environment sees, needed to build a launch command.
#[derive(Debug, Clone)]
pub struct Paths<'a> {
    pub task_root: &'a Path,
    pub runtime_dir: &'a Path,
    pub opt: &'a Path,
}

fn is_native_executable(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = fs::File::open(path) else { return false };
    let mut magic = [0u8; 4];
    // pyenv shims are shell scripts costing ~80 ms per start; only take real binaries.
    f.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF"
}

fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/local/bin".into(), "/usr/bin".into(), "/bin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path).filter(|p| !p.to_string_lossy().contains("shims")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let versions = Path::new(&home).join(".pyenv/versions");
        if let Ok(rd) = fs::read_dir(versions) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
            v.sort();
            dirs.extend(v);
        }
    }
    dirs
}

fn find(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| is_native_executable(&fs::canonicalize(p).unwrap_or_default()))
}

fn node_major(node: &Path) -> Option<u32> {
    let out = std::process::Command::new(node).arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}

impl Catalogue {
    /// Finds the interpreters on this host.
    pub fn detect() -> Self {
        let dirs = search_dirs();
        let mut available = Vec::new();
        for id in runtime::SUPPORTED {
            match runtime::family(id) {
                Some(Family::Python) => {
                    if let Some(p) = find(&dirs, id) {
                        available.push(Available { id: id.to_string(), family: Family::Python, interpreter: Some(p) });
                    }
                }
                Some(Family::Provided) => {
                    available.push(Available { id: id.to_string(), family: Family::Provided, interpreter: None });
                }
                _ => {}
            }
        }
        if let Some(node) = find(&dirs, "node")
            && let Some(major) = node_major(&node)
        {
            let id = format!("nodejs{major}.x");
            if runtime::SUPPORTED.contains(&id.as_str()) {
                available.push(Available { id, family: Family::Node, interpreter: Some(node) });
            }
        }
        available.sort_by(|a, b| a.id.cmp(&b.id));
        Self { available }
    }

    /// A catalogue with exactly these entries (for tests).
    pub fn with(available: Vec<Available>) -> Self {
        Self { available }
    }

    pub fn available(&self) -> &[Available] {
        &self.available
    }

    /// The entry for `id`, or the error naming what this host offers instead.
    pub fn get(&self, id: &str) -> Result<&Available, LambdaError> {
        self.available.iter().find(|a| a.id == id).ok_or_else(|| {
            let names: Vec<&str> = self.available.iter().map(|a| a.id.as_str()).collect();
            LambdaError::invalid_parameter(format!(
                "The runtime {id} is not available on this Stratus host. Available runtimes: {}.",
                names.join(", ")
            ))
        })
    }

    /// How to start a function of runtime `id` with handler `handler`.
    pub fn launch(&self, id: &str, paths: &Paths<'_>) -> Result<Launch, LambdaError> {
        let entry = self.get(id)?;
        let interpreter = entry.interpreter.clone().unwrap_or_default();
        Ok(match entry.family {
            Family::Python => Launch::Program {
                program: interpreter,
                // -u: unbuffered output, so log lines reach the platform as they are printed.
                args: vec!["-u".into(), paths.runtime_dir.join("python/bootstrap.py").display().to_string()],
            },
            Family::Node => Launch::Program {
                program: interpreter,
                args: vec![paths.runtime_dir.join("node/bootstrap.js").display().to_string()],
            },
            _ => Launch::Bootstrap,
        })
    }
}

/// Writes the bootstraps into `dir` (the runtime directory environments see).
pub fn install_bootstraps(dir: &Path) -> io::Result<()> {
    for (rel, source) in BOOTSTRAPS {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if fs::read_to_string(&path).ok().as_deref() != Some(*source) {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, source)?;
            fs::rename(&tmp, &path)?;
        }
    }
    Ok(())
}

/// Compiles the Python runtime module with every Python interpreter this host offers, so that
/// no cold start compiles it (a few milliseconds each). Failures only cost speed, so they are
/// logged, not returned.
pub fn precompile(catalogue: &Catalogue, dir: &Path) {
    let module = dir.join("python/stratus_bootstrap.py");
    let handles: Vec<_> = catalogue
        .available()
        .iter()
        .filter(|a| a.family == Family::Python)
        .filter_map(|a| a.interpreter.clone())
        .map(|python| {
            let module = module.clone();
            std::thread::spawn(move || {
                let status = std::process::Command::new(&python)
                    .args(["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True)"])
                    .arg(&module)
                    .stdout(std::process::Stdio::null())
                    .status();
                if !matches!(status, Ok(s) if s.success()) {
                    tracing::warn!(python = %python.display(), "cannot precompile the Python runtime; cold starts will compile it");
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

/// `AWS_EXECUTION_ENV` for a runtime (`None` for OS-only runtimes, as on Lambda).
pub fn execution_env(id: &str) -> Option<String> {
    match runtime::family(id) {
        Some(Family::Provided) | None => None,
        Some(_) => Some(format!("AWS_Lambda_{id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::ErrorCode;

    #[test]
    fn unavailable_runtime_names_the_available_ones() {
        let cat = Catalogue::with(vec![Available {
            id: "provided.al2023".into(),
            family: Family::Provided,
            interpreter: None,
        }]);
        let err = cat.get("python3.12").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        assert!(err.message.contains("provided.al2023"), "{}", err.message);
    }

    #[test]
    fn provided_runtimes_run_the_package_bootstrap() {
        let cat =
            Catalogue::with(vec![Available { id: "provided.al2".into(), family: Family::Provided, interpreter: None }]);
        let paths =
            Paths { task_root: Path::new("/var/task"), runtime_dir: Path::new("/var/runtime"), opt: Path::new("/opt") };
        assert_eq!(cat.launch("provided.al2", &paths).unwrap(), Launch::Bootstrap);
    }

    #[test]
    fn detects_this_hosts_python_without_shims() {
        let cat = Catalogue::detect();
        for a in cat.available() {
            if let Some(p) = &a.interpreter {
                assert!(!p.to_string_lossy().contains("shims"), "{p:?}");
            }
        }
        assert!(cat.get("provided.al2023").is_ok());
        assert_eq!(execution_env("python3.11").as_deref(), Some("AWS_Lambda_python3.11"));
        assert_eq!(execution_env("provided.al2023"), None);
    }

    #[test]
    fn interpreters_outside_usr_bring_their_prefix() {
        let usr = Available {
            id: "python3.11".into(),
            family: Family::Python,
            interpreter: Some("/usr/bin/python3.11".into()),
        };
        assert!(usr.host_dirs().is_empty());
        let pyenv = Available {
            id: "python3.12".into(),
            family: Family::Python,
            interpreter: Some("/nonexistent/.pyenv/versions/3.12.1/bin/python3.12".into()),
        };
        assert_eq!(pyenv.host_dirs(), vec![PathBuf::from("/nonexistent/.pyenv/versions/3.12.1")]);
    }

    #[test]
    fn bootstraps_install_idempotently() {
        let dir = std::env::temp_dir().join(format!("stratus-rt-{}", std::process::id()));
        install_bootstraps(&dir).unwrap();
        install_bootstraps(&dir).unwrap();
        assert!(dir.join("python/bootstrap.py").is_file());
        assert!(dir.join("node/bootstrap.js").is_file());
        let _ = fs::remove_dir_all(dir);
    }
}
