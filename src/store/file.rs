//! A token set in a JSON file, shared by the processes of one host.
//!
//! Saving writes a temporary file beside the target, created with mode 0600, fsyncs it, renames
//! it over the target and fsyncs the directory: a reader sees the old file or the new one, never a
//! torn one, and a process killed at any point leaves the previous tokens intact (the lesson of
//! yup-oauth2's and libcloud's truncate-then-write). The refresh lock is an OS lock on a separate
//! `<file>.lock`, which the kernel frees when its holder dies.
//!
//! A save is fenced: under a second, short-lived OS lock on `<file>.save.lock` it re-reads the
//! file and renames the new one into place only if the file still holds the revision the set was
//! read at. (A second lock, because the refresh lock is held across a whole refresh, and an OS lock
//! taken twice by one process through two files waits for itself.)

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use super::codec::{self, Document};
use super::{Saved, StoreFuture, StoreLock, TokenSet, TokenStore};
use crate::error::Error;

/// Keeps the token set in a JSON file (mode 0600). Processes on one host that use the same path
/// refresh once between them.
///
/// ```
/// use std::sync::Arc;
/// use zoho_auth::store::{FileStore, TokenStore};
/// use zoho_auth::RefreshToken;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), zoho_auth::Error> {
/// let dir = std::env::temp_dir().join(format!("zoho-auth-doc-{}", std::process::id()));
/// let store: Arc<dyn TokenStore> = Arc::new(FileStore::new(dir.join("tokens.json")));
/// store
///     .update(None, |set| {
///         set.refresh_token = Some(RefreshToken::new("1000.r.t"));
///         Ok(())
///     })
///     .await?;
/// let loaded = store.load().await?.unwrap();
/// assert_eq!(loaded.refresh_token.unwrap().expose(), "1000.r.t");
/// assert_eq!(loaded.revision, 1);
/// # std::fs::remove_dir_all(dir).unwrap(); Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileStore {
    path: Arc<PathBuf>,
}

impl FileStore {
    /// A store at `path`. Nothing is touched until the first load or save; missing parent
    /// directories are created (mode 0700) on the first save.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::new(path.into()),
        }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<file><suffix>`, beside the token file.
    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    fn error(&self, what: &str, e: impl fmt::Display) -> Error {
        Error::store(format!("token file {}: {what}: {e}", self.path.display()))
    }

    fn read(&self) -> Result<Option<TokenSet>, Error> {
        let bytes = match fs::read(&*self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("cannot read it", e)),
        };
        let document: Document = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                "not a zoho-auth token file (left untouched)",
                codec::describe(&e),
            )
        })?;
        document
            .into_set()
            .map(Some)
            .map_err(|e| self.error("unsupported (left untouched)", e))
    }

    /// The directory of the token file, created (mode 0700) if missing.
    fn dir(&self) -> Result<PathBuf, Error> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_private_dir(&dir).map_err(|e| self.error("cannot create its directory", e))?;
        Ok(dir)
    }

    /// Opens (creating) the lock file `<file><suffix>`.
    fn lock_file(&self, suffix: &str) -> Result<File, Error> {
        self.dir()?;
        private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.sibling(suffix))
            .map_err(|e| self.error("cannot open its lock file", e))
    }

    /// Locks `<file><suffix>`, waiting for it when `wait`, else `None` when another holder has
    /// it. A lock taken on a lock file that [`remove`](Self::remove) deleted meanwhile excludes no
    /// one (a new holder locks the new file at that path), so it is dropped and taken again.
    fn lock(&self, suffix: &str, wait: bool) -> Result<Option<File>, Error> {
        loop {
            let file = self.lock_file(suffix)?;
            if wait {
                file.lock()
            } else {
                match file.try_lock() {
                    Ok(()) => Ok(()),
                    Err(TryLockError::WouldBlock) => return Ok(None),
                    Err(TryLockError::Error(e)) => Err(e),
                }
            }
            .map_err(|e| self.error("cannot lock it", e))?;
            if still_linked(&file, &self.sibling(suffix))
                .map_err(|e| self.error("cannot check its lock file", e))?
            {
                return Ok(Some(file));
            }
        }
    }

    /// Deletes the token file under the save lock, so that a save in progress lands first and is
    /// deleted with it, and a save made from a set read before is refused as a conflict (the file
    /// no longer holds its revision). Then, if the refresh lock is free, deletes the two lock files
    /// (holding both); a refresh lock held by a refresh stays, and that refresh's save is refused.
    /// `true` if there was a token file, at `revision` when one is given (else it stays).
    pub(super) fn remove(&self, revision: Option<u64>) -> Result<bool, Error> {
        // A missing file needs no lock: a save landing after this check comes after the removal.
        // (And nothing is created for an id that never had a record.)
        match fs::symlink_metadata(&*self.path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.error("cannot read it", e)),
            Ok(_) => {}
        }
        let _save = self.lock(".save.lock", true)?;
        if let Some(revision) = revision {
            if self.read()?.is_none_or(|set| set.revision != revision) {
                return Ok(false);
            }
        }
        let existed = match fs::remove_file(&*self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(self.error("cannot delete it", e)),
        };
        sync_dir(&self.dir()?);
        // Only where `lock` can tell a deleted lock file from the one at the path.
        #[cfg(unix)]
        if let Some(_refresh) = self.lock(".lock", false)? {
            for suffix in [".lock", ".save.lock"] {
                match fs::remove_file(self.sibling(suffix)) {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(self.error("cannot delete its lock file", e));
                    }
                    _ => {}
                }
            }
        }
        Ok(existed)
    }

    /// The fenced save: compare the revision and rename, under the save lock.
    fn save_fenced(&self, set: &TokenSet) -> Result<Saved, Error> {
        let _guard = self.lock(".save.lock", true)?;
        let current = self.read()?.map_or(0, |stored| stored.revision);
        if current != set.revision {
            return Ok(Saved::Conflict);
        }
        let mut next = set.clone();
        next.revision += 1;
        self.write(&next)?;
        // Closing `_guard` frees the save lock.
        Ok(Saved::Stored)
    }

    fn write(&self, set: &TokenSet) -> Result<(), Error> {
        let dir = self.dir()?;
        let json = serde_json::to_vec_pretty(&codec::document(set))
            .map_err(|e| self.error("cannot encode the tokens", e))?;
        let temp = dir.join(format!(
            ".{}.{}.{:x}.tmp",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            fastrand::u64(..)
        ));
        let written = (|| {
            let mut file = private_options().write(true).create_new(true).open(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&temp, &*self.path)?;
            sync_dir(&dir);
            Ok::<(), std::io::Error>(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(|e| self.error("cannot save", e))
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FileStore").field(&*self.path).finish()
    }
}

/// The OS lock on `<file>.lock`; closing the file frees it.
#[derive(Debug)]
struct FileLock(File);

impl StoreLock for FileLock {
    fn release(self: Box<Self>) -> StoreFuture<'static, ()> {
        let result = self
            .0
            .unlock()
            .map_err(|e| Error::store(format!("cannot unlock the token file: {e}")));
        Box::pin(async move { result })
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>> {
        let store = self.clone();
        Box::pin(blocking(move || store.read()))
    }

    fn save<'a>(
        &'a self,
        set: &'a TokenSet,
        // An OS lock is held until its file is closed: it cannot be lost.
        _lock: Option<&'a dyn StoreLock>,
    ) -> StoreFuture<'a, Saved> {
        let (store, set) = (self.clone(), set.clone());
        Box::pin(blocking(move || store.save_fenced(&set)))
    }

    fn try_lock(&self, _ttl: Duration) -> StoreFuture<'_, Option<Box<dyn StoreLock>>> {
        let store = self.clone();
        Box::pin(async move {
            let file = blocking(move || store.lock(".lock", false)).await?;
            Ok(file.map(|file| Box::new(FileLock(file)) as Box<dyn StoreLock>))
        })
    }
}

/// Makes a rename or a delete in `dir` durable. Some filesystems cannot sync a directory, and the
/// change is made either way.
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Whether `file` is still the file at `path` (not deleted, nor replaced).
#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(current) => Ok(held.dev() == current.dev() && held.ino() == current.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lock files are deleted only on Unix (see [`FileStore::remove`]), so the file is the one.
#[cfg(not(unix))]
fn still_linked(_file: &File, _path: &Path) -> std::io::Result<bool> {
    Ok(true)
}

/// Runs file I/O off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::store(format!("token file task failed: {e}")))?
}

/// Options that create files only their owner can read.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
