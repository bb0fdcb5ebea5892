//! Content-addressed code packages.
//!
//! A deployment package (zip) is stored once under its SHA-256 (`blobs/<hex>.zip`) and
//! unpacked once into a read-only tree (`trees/<hex>/`) that environments use as their task
//! root. Uploaded archives are untrusted: every entry path is checked (no absolute paths, no
//! `..`, no symlink pointing outside the tree), the unpacked size and the entry count are
//! bounded by bytes actually written (not by what the archive claims), and nothing becomes
//! visible until the whole archive has unpacked cleanly (the tree is renamed into place).
//!
//! Layers are packages too. A function with two or more layers gets an `/opt` that merges
//! their trees in order (`layers/<key>/`, hard links into the trees, built once per distinct
//! list of layers); with one layer, its tree is `/opt` as it is.

use std::fs::{self, File};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Lambda's unzipped limit (`Unzipped size must be smaller than 262144000 bytes`).
pub const MAX_UNZIPPED_BYTES: u64 = 262_144_000;
/// Lambda's direct-upload limit (`Zipped size must be smaller than 52428800 bytes`).
pub const MAX_ZIPPED_BYTES: usize = 52_428_800;
/// The most entries a package may hold.
pub const MAX_ENTRIES: usize = 50_000;

/// Why a package was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("zipped size must be smaller than {MAX_ZIPPED_BYTES} bytes")]
    ZippedTooLarge,
    #[error("the archive is not a readable zip file")]
    Corrupt(#[source] zip::result::ZipError),
    #[error("unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes")]
    UnzippedTooLarge,
    #[error("the archive holds more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("entry {0:?} has a path outside the package root")]
    HostilePath(String),
    #[error("symlink {0:?} points outside the package root")]
    HostileSymlink(String),
    #[error("entry {0:?} conflicts with another entry")]
    Conflict(String),
    #[error("failed to write the code store")]
    Io(#[from] io::Error),
}

impl CodeError {
    /// True when the caller's archive is at fault (as opposed to the platform's disk).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, CodeError::Io(_))
    }
}

/// A stored package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Lower-case hex SHA-256 of the zip.
    pub sha256_hex: String,
    /// Size of the zip in bytes.
    pub size: u64,
}

impl StoredCode {
    /// The base64 SHA-256 Lambda reports as `CodeSha256`.
    pub fn sha256_base64(hex_digest: &str) -> String {
        use base64::Engine;
        let raw = hex::decode(hex_digest).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// The code store rooted in the data directory.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("trees"))?;
        fs::create_dir_all(root.join("layers"))?;
        // Leftovers of an ingest interrupted by a crash.
        for dir in ["blobs", "trees", "layers"] {
            for entry in fs::read_dir(root.join(dir))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = remove_any(&entry.path());
                }
            }
        }
        Ok(Self { root })
    }

    /// The unpacked tree of a stored package.
    pub fn tree(&self, sha256_hex: &str) -> PathBuf {
        self.root.join("trees").join(sha256_hex)
    }

    /// The zip of a stored package.
    pub fn blob(&self, sha256_hex: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{sha256_hex}.zip"))
    }

    /// Validates, unpacks and stores a package. Storing the same bytes twice is a no-op.
    pub fn ingest(&self, zip_bytes: &[u8]) -> Result<StoredCode, CodeError> {
        if zip_bytes.len() > MAX_ZIPPED_BYTES {
            return Err(CodeError::ZippedTooLarge);
        }
        let sha256_hex = hex::encode(Sha256::digest(zip_bytes));
        let stored = StoredCode { sha256_hex: sha256_hex.clone(), size: zip_bytes.len() as u64 };
        let tree = self.tree(&sha256_hex);
        let blob = self.blob(&sha256_hex);
        if tree.is_dir() && blob.is_file() {
            return Ok(stored);
        }
        let tmp_tree = self.root.join("trees").join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&tmp_tree)?;
        if let Err(e) = unpack(zip_bytes, &tmp_tree) {
            let _ = remove_any(&tmp_tree);
            return Err(e);
        }
        let tmp_blob = self.root.join("blobs").join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let write_blob = || -> io::Result<()> {
            let mut f = File::create(&tmp_blob)?;
            f.write_all(zip_bytes)?;
            f.sync_all()?;
            fs::rename(&tmp_blob, &blob)
        };
        if let Err(e) = write_blob() {
            let _ = remove_any(&tmp_blob);
            let _ = remove_any(&tmp_tree);
            return Err(e.into());
        }
        if tree.is_dir() {
            // Another ingest of the same bytes won the race; its tree is identical.
            let _ = remove_any(&tmp_tree);
        } else if let Err(e) = fs::rename(&tmp_tree, &tree) {
            let _ = remove_any(&tmp_tree);
            return Err(e.into());
        }
        Ok(stored)
    }

    /// The `/opt` of a function with these layers (by package SHA-256, in order): `None`
    /// without layers, the package's own tree for one, and for more a tree merging them in
    /// order, later layers' files replacing earlier ones' (built on first use).
    pub fn opt_tree(&self, layer_shas: &[String]) -> io::Result<Option<PathBuf>> {
        match layer_shas {
            [] => Ok(None),
            [one] => Ok(Some(self.tree(one))),
            many => {
                let dir = self.root.join("layers").join(merged_key(many));
                if dir.is_dir() {
                    return Ok(Some(dir));
                }
                let tmp = self.root.join("layers").join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
                let built = (|| {
                    fs::create_dir(&tmp)?;
                    for sha in many {
                        merge_into(&self.tree(sha), &tmp)?;
                    }
                    fs::rename(&tmp, &dir)
                })();
                match built {
                    Ok(()) => Ok(Some(dir)),
                    // Another start built the same tree first.
                    Err(_) if dir.is_dir() => {
                        let _ = remove_any(&tmp);
                        Ok(Some(dir))
                    }
                    Err(e) => {
                        let _ = remove_any(&tmp);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Removes packages nothing refers to any more, and merged layer trees no version uses.
    pub fn collect_garbage(
        &self,
        referenced: &std::collections::HashSet<String>,
        layer_sets: &[Vec<String>],
    ) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("trees"))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !referenced.contains(&name) {
                remove_any(&entry.path())?;
                let _ = fs::remove_file(self.blob(&name));
                removed += 1;
            }
        }
        let used: std::collections::HashSet<String> =
            layer_sets.iter().filter(|s| s.len() > 1).map(|s| merged_key(s)).collect();
        for entry in fs::read_dir(self.root.join("layers"))?.flatten() {
            if !used.contains(entry.file_name().to_string_lossy().as_ref()) {
                remove_any(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The name of the merged tree of a list of layers.
fn merged_key(shas: &[String]) -> String {
    hex::encode(Sha256::digest(shas.join(",").as_bytes()))
}

/// Adds the tree `src` to `dst`: directories merge, files and symlinks replace what is there
/// (files as hard links: trees are never modified).
fn merge_into(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if fs::symlink_metadata(&to).is_ok_and(|m| !m.is_dir()) {
                remove_any(&to)?;
            }
            if !to.exists() {
                fs::create_dir(&to)?;
                fs::set_permissions(&to, fs::metadata(&from)?.permissions())?;
            }
            merge_into(&from, &to)?;
        } else {
            remove_any(&to)?;
            if kind.is_symlink() {
                symlink(fs::read_link(&from)?, &to)?;
            } else if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to)?;
            }
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Turns an entry name into a relative path inside the root, or refuses it.
fn safe_relative(name: &str) -> Result<PathBuf, CodeError> {
    let hostile = || CodeError::HostilePath(name.to_string());
    if name.contains('\0') || name.contains('\\') || name.starts_with('/') {
        return Err(hostile());
    }
    let mut out = PathBuf::new();
    for comp in Path::new(name).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(hostile()),
        }
    }
    Ok(out)
}

/// True if `target`, read relative to the directory holding `link`, stays inside the root.
fn symlink_stays_inside(link: &Path, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for comp in Path::new(target).components() {
        match comp {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn unpack(zip_bytes: &[u8], dest: &Path) -> Result<(), CodeError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).map_err(CodeError::Corrupt)?;
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::TooManyEntries);
    }
    let mut written: u64 = 0;
    let mut symlinks: Vec<(PathBuf, String)> = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(CodeError::Corrupt)?;
        let name = match entry.name() {
            Ok(n) => n.to_string(),
            Err(_) => return Err(CodeError::HostilePath(String::from_utf8_lossy(entry.name_raw()).to_string())),
        };
        let rel = safe_relative(&name)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&path)?;
            continue;
        }
        if entry.is_symlink() {
            let mut target = String::new();
            entry
                .by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|_| CodeError::HostileSymlink(name.clone()))?;
            if !symlink_stays_inside(&rel, &target) {
                return Err(CodeError::HostileSymlink(name));
            }
            symlinks.push((rel, target));
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if path.exists() {
            return Err(CodeError::Conflict(name));
        }
        let mut file = File::create(&path)?;
        let budget = MAX_UNZIPPED_BYTES - written;
        let n = io::copy(&mut entry.by_ref().take(budget + 1), &mut file).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                CodeError::Corrupt(zip::result::ZipError::Io(e))
            } else {
                CodeError::Io(e)
            }
        })?;
        written += n;
        if written > MAX_UNZIPPED_BYTES {
            return Err(CodeError::UnzippedTooLarge);
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        fs::set_permissions(&path, fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))?;
    }
    // Links last, so that no file above was written through one.
    for (rel, target) in symlinks {
        let path = dest.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink(&target, &path).map_err(|_| CodeError::Conflict(rel.display().to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode)).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn store() -> (tempfile::TempDir, CodeStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = CodeStore::open(dir.path().join("code")).unwrap();
        (dir, s)
    }

    fn tree_count(s: &CodeStore) -> usize {
        fs::read_dir(s.root.join("trees")).unwrap().count()
    }

    #[test]
    fn merges_layers_in_order_and_collects_unused_merges() {
        let (_d, s) = store();
        let a = s.ingest(&zip_of(&[("python/shared.py", b"a", 0o644), ("python/only_a.py", b"a", 0o644)])).unwrap();
        let b = s.ingest(&zip_of(&[("python/shared.py", b"b", 0o644), ("bin/tool", b"b", 0o755)])).unwrap();
        assert_eq!(s.opt_tree(&[]).unwrap(), None);
        assert_eq!(s.opt_tree(std::slice::from_ref(&a.sha256_hex)).unwrap(), Some(s.tree(&a.sha256_hex)));
        let ab = vec![a.sha256_hex.clone(), b.sha256_hex.clone()];
        let merged = s.opt_tree(&ab).unwrap().unwrap();
        assert_eq!(fs::read(merged.join("python/shared.py")).unwrap(), b"b", "the later layer wins");
        assert_eq!(fs::read(merged.join("python/only_a.py")).unwrap(), b"a");
        assert_eq!(fs::metadata(merged.join("bin/tool")).unwrap().permissions().mode() & 0o777, 0o755);
        let ba = vec![b.sha256_hex.clone(), a.sha256_hex.clone()];
        assert_eq!(fs::read(s.opt_tree(&ba).unwrap().unwrap().join("python/shared.py")).unwrap(), b"a");
        assert_eq!(s.opt_tree(&ab).unwrap().unwrap(), merged, "built once");
        let all: std::collections::HashSet<String> = ab.iter().cloned().collect();
        s.collect_garbage(&all, std::slice::from_ref(&ab)).unwrap();
        assert!(merged.is_dir(), "a used merge stays");
        assert!(!s.root.join("layers").join(merged_key(&ba)).exists(), "an unused merge goes");
        assert!(s.tree(&a.sha256_hex).is_dir());
    }

    #[test]
    fn unpacks_and_keeps_executable_bits() {
        let (_d, s) = store();
        let z = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o755), ("lib/a.py", b"x=1", 0o644)]);
        let code = s.ingest(&z).unwrap();
        let tree = s.tree(&code.sha256_hex);
        let mode = fs::metadata(tree.join("bootstrap")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read(tree.join("lib/a.py")).unwrap(), b"x=1");
        assert_eq!(code.size, z.len() as u64);
        // The same bytes again are a no-op.
        assert_eq!(s.ingest(&z).unwrap(), code);
    }

    #[test]
    fn refuses_parent_and_absolute_paths_and_writes_nothing() {
        let (_d, s) = store();
        for name in ["../evil", "a/../../evil", "/etc/evil"] {
            let z = zip_of(&[("ok.py", b"1", 0o644), (name, b"x", 0o644)]);
            let err = s.ingest(&z).unwrap_err();
            assert!(matches!(err, CodeError::HostilePath(_)), "{name}: {err:?}");
            assert_eq!(tree_count(&s), 0);
        }
    }

    #[test]
    fn refuses_symlinks_pointing_outside() {
        let (_d, s) = store();
        for target in ["/etc/shadow", "../../x", "a/../../.."] {
            let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
            w.add_symlink("link", target, SimpleFileOptions::default()).unwrap();
            let z = w.finish().unwrap().into_inner();
            assert!(matches!(s.ingest(&z).unwrap_err(), CodeError::HostileSymlink(_)), "{target}");
        }
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("dir/real.txt", SimpleFileOptions::default()).unwrap();
        w.write_all(b"hi").unwrap();
        w.add_symlink("dir/link", "real.txt", SimpleFileOptions::default()).unwrap();
        let z = w.finish().unwrap().into_inner();
        let code = s.ingest(&z).unwrap();
        assert_eq!(fs::read(s.tree(&code.sha256_hex).join("dir/link")).unwrap(), b"hi");
    }

    #[test]
    fn refuses_corrupt_archives() {
        let (_d, s) = store();
        assert!(matches!(s.ingest(b"definitely not a zip").unwrap_err(), CodeError::Corrupt(_)));
        let mut z = zip_of(&[("a.py", &[7u8; 10_000], 0o644)]);
        let mid = z.len() / 2;
        z.truncate(mid);
        assert!(s.ingest(&z).unwrap_err().is_client_error());
        assert_eq!(tree_count(&s), 0);
    }

    #[test]
    fn bounds_the_unzipped_size_by_bytes_written() {
        let (_d, s) = store();
        // 300 MB of zeros compresses to well under a megabyte: a zip bomb.
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
        w.start_file("zeros", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            w.write_all(&chunk).unwrap();
        }
        let z = w.finish().unwrap().into_inner();
        assert!(z.len() < 2 << 20);
        assert!(matches!(s.ingest(&z).unwrap_err(), CodeError::UnzippedTooLarge));
        assert_eq!(tree_count(&s), 0);
    }

    #[test]
    fn bounds_the_entry_count() {
        let (_d, s) = store();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..=MAX_ENTRIES {
            w.start_file(
                format!("f{i}"),
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
            )
            .unwrap();
        }
        let z = w.finish().unwrap().into_inner();
        assert!(matches!(s.ingest(&z).unwrap_err(), CodeError::TooManyEntries));
    }
}
