//! Many connections' records as one token file each in a directory.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{decode, encode, ConnectionStore};
use crate::connections::ConnectionId;
use crate::error::Error;
use crate::store::file::blocking;
use crate::store::{FileStore, StoreFuture, TokenStore};

/// The longest file or directory name a connection's path has before `.json`: with the `.json`,
/// `.save.lock` and temporary-file suffixes it stays under the 255 bytes every common filesystem
/// allows.
const CHUNK: usize = 200;

/// Names Windows keeps for devices, whatever their extension.
const DEVICES: [&str; 4] = ["con", "prn", "aux", "nul"];

/// Keeps each connection's record in a token file of its own in one directory: a [`FileStore`]
/// each, with its own OS locks, 0600 files written by temp file and rename, and directories
/// created (0700) on the first save. Processes on one host that use the same directory share
/// each connection's record and refresh lock.
///
/// | file | holds |
/// |---|---|
/// | `DIR/{name}.json` | the connection's token set |
/// | `DIR/{name}.json.lock` | its refresh lock (an OS lock) |
/// | `DIR/{name}.json.save.lock` | its save lock |
///
/// `{name}` is the id encoded as the [`ConnectionStore`] docs say (`Alice` is `%41lice.json`,
/// beside `alice.json`), with two more rules: a name that is one of Windows' device names (`con`,
/// `prn`, `aux`, `nul`, `com0`–`com9`, `lpt0`–`lpt9`) has its first letter escaped (`%63on.json`),
/// and a name over 200 characters is cut into 200-character directories, the rest naming the
/// file (`DIR/{200}/{200}/{rest}.json`), since ids of 256 bytes may take 768 characters.
///
/// [`list`](ConnectionStore::list) reads the directory each time, sorts the ids and returns a
/// page; it ignores names it would not write (lock files, temporary files, other files), and
/// reads no token file, so a corrupt file breaks only its own connection's load (an
/// [`Error::is_store`] error naming it). [`remove`](ConnectionStore::remove) deletes the token
/// file under its save lock, and its two lock files if the refresh lock is free; directories stay.
#[derive(Clone)]
pub struct FileConnections {
    dir: Arc<PathBuf>,
}

impl FileConnections {
    /// Connections in `dir`. Nothing is touched until the first save creates it.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Arc::new(dir.into()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn store(&self, id: &ConnectionId) -> FileStore {
        FileStore::new(self.dir.join(relative_path(id)))
    }

    /// Every id with a token file, in order.
    fn scan(&self) -> Result<Vec<ConnectionId>, Error> {
        let mut found = Vec::new();
        match walk(&self.dir, &self.dir, &mut found) {
            Ok(()) => {}
            // Nothing was ever saved.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::store(format!(
                    "connections directory {}: cannot read it: {e}",
                    self.dir.display()
                )))
            }
        }
        found.sort_unstable();
        Ok(found)
    }
}

/// Where a connection's token file is, under the directory.
fn relative_path(id: &ConnectionId) -> PathBuf {
    let name = encode(id);
    // Only ASCII: the name cuts anywhere.
    let mut chunks: Vec<String> = name
        .as_bytes()
        .chunks(CHUNK)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    let last = chunks.last_mut().expect("an id is never empty");
    if is_device(last) {
        let first = last.remove(0);
        last.insert_str(0, &format!("%{:02x}", u32::from(first)));
    }
    last.push_str(".json");
    chunks.iter().collect()
}

fn is_device(name: &str) -> bool {
    DEVICES.contains(&name)
        || (name.len() == 4
            && (name.starts_with("com") || name.starts_with("lpt"))
            && name.as_bytes()[3].is_ascii_digit())
}

/// Collects the ids of the token files under `dir` (of the `root` directory) that are named as
/// [`relative_path`] names them.
fn walk(root: &Path, dir: &Path, found: &mut Vec<ConnectionId>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if entry.file_name().len() == CHUNK {
                match walk(root, &path, found) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let Some(encoded) = relative.to_str().and_then(|name| {
            let name = name.strip_suffix(".json")?;
            Some(name.split(std::path::MAIN_SEPARATOR).collect::<String>())
        }) else {
            continue;
        };
        if let Some(id) = decode(&encoded).filter(|id| relative_path(id) == relative) {
            found.push(id);
        }
    }
    Ok(())
}

impl fmt::Debug for FileConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FileConnections").field(&*self.dir).finish()
    }
}

impl ConnectionStore for FileConnections {
    fn connection(&self, id: &ConnectionId) -> Arc<dyn TokenStore> {
        Arc::new(self.store(id))
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ConnectionId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConnectionId>> {
        let this = self.clone();
        Box::pin(async move {
            let all = blocking(move || this.scan()).await?;
            let start = after.map_or(0, |after| all.partition_point(|id| id <= after));
            Ok(all.into_iter().skip(start).take(limit).collect())
        })
    }

    fn remove<'a>(&'a self, id: &'a ConnectionId) -> StoreFuture<'a, bool> {
        let store = self.store(id);
        Box::pin(blocking(move || store.remove(None)))
    }

    fn remove_if<'a>(&'a self, id: &'a ConnectionId, revision: u64) -> StoreFuture<'a, bool> {
        let store = self.store(id);
        Box::pin(blocking(move || store.remove(Some(revision))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(id: &str) -> String {
        let path = relative_path(&ConnectionId::new(id).unwrap());
        path.to_str()
            .unwrap()
            .replace(std::path::MAIN_SEPARATOR, "/")
    }

    #[test]
    fn device_names_are_escaped_and_long_names_split() {
        assert_eq!(path("con"), "%63on.json");
        assert_eq!(path("Con"), "%43on.json");
        assert_eq!(path("com1"), "%63om1.json");
        assert_eq!(path("console"), "console.json");
        let long = "é".repeat(128);
        let encoded = "%c3%a9".repeat(128);
        assert_eq!(
            path(&long),
            format!(
                "{}/{}/{}/{}.json",
                &encoded[..200],
                &encoded[200..400],
                &encoded[400..600],
                &encoded[600..]
            )
        );
    }
}
