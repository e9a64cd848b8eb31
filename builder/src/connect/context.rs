//! Docker contexts in the Docker CLI's own store, so `docker --context NAME` and
//! `docker context use NAME` work without any import step.
//!
//! The CLI's layout (docker/cli `cli/context/store`, which `docker context create` writes):
//! `CONFIG/contexts/meta/ID/meta.json` holds `{"Name", "Metadata", "Endpoints"}` and
//! `CONFIG/contexts/tls/ID/docker/{ca,cert,key}.pem` the endpoint's TLS files, where ID is the
//! hex sha256 of the context's name and CONFIG is `DOCKER_CONFIG` or `~/.docker`. The TLS
//! directories are 0700 and the files 0600, as the CLI makes them.
//!
//! A context is replaced whole or not at all: the new TLS directory is written beside the old
//! one and swapped in by renames, then `meta.json` is replaced by a rename; when a step fails,
//! the old directory is put back.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The TLS files of an endpoint, as the VM's client bundle holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA that signed the engine's server certificate (PEM).
    pub ca: Vec<u8>,
    /// The client certificate (PEM).
    pub cert: Vec<u8>,
    /// The client certificate's private key (PEM).
    pub key: Vec<u8>,
}

/// One context to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerContext {
    /// The context's name (`docker context ls`).
    pub name: String,
    /// Its description.
    pub description: String,
    /// The engine's address, `tcp://HOST:PORT`.
    pub host: String,
    /// The client's TLS files.
    pub tls: TlsMaterial,
}

/// Where a context lives on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextPaths {
    /// `contexts/meta/ID/meta.json`.
    pub meta_file: PathBuf,
    /// `contexts/tls/ID`: the context's TLS directory.
    pub tls_dir: PathBuf,
    /// `contexts/tls/ID/docker`: the endpoint's TLS files (what `DOCKER_CERT_PATH` names).
    pub cert_path: PathBuf,
}

/// A context read back from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredContext {
    /// Its name.
    pub name: String,
    /// The docker endpoint's `Host`.
    pub host: String,
    /// Its paths.
    pub paths: ContextPaths,
}

/// Why a context cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The name is not one the Docker CLI accepts.
    #[error(
        "context name {0:?} is not valid: the Docker CLI takes a letter or digit, then letters, \
         digits, '_', '.', '+' or '-' (at least two characters)"
    )]
    Name(String),
    /// A file or directory of the store cannot be written; the old context is left as it was.
    #[error("cannot write {}: {source}; the previous context is unchanged", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The context does not exist.
    #[error("there is no Docker context {name:?} in {}; run `uvmkit connect HOST --name {name}` first", config.display())]
    Missing {
        /// The name asked for.
        name: String,
        /// The Docker config directory looked in.
        config: PathBuf,
    },
    /// `meta.json` cannot be read or is not the CLI's format.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The context has no TCP endpoint with TLS files.
    #[error(
        "context {name:?} has no TLS files in {} (it is not one `uvmkit connect` made); \
         use `docker context use {name}` or run `uvmkit connect` for it",
        cert_path.display()
    )]
    NoTls {
        /// The name.
        name: String,
        /// Where the files should be.
        cert_path: PathBuf,
    },
}

/// `meta.json` as the Docker CLI writes it (field order and names as `docker context create`
/// writes them).
#[derive(Serialize, Deserialize)]
struct Meta {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Metadata")]
    metadata: Metadata,
    #[serde(rename = "Endpoints")]
    endpoints: Endpoints,
}

#[derive(Serialize, Deserialize, Default)]
struct Metadata {
    #[serde(rename = "Description", default, skip_serializing_if = "String::is_empty")]
    description: String,
}

#[derive(Serialize, Deserialize)]
struct Endpoints {
    #[serde(rename = "docker")]
    docker: Endpoint,
}

#[derive(Serialize, Deserialize)]
struct Endpoint {
    #[serde(rename = "Host")]
    host: String,
    #[serde(rename = "SkipTLSVerify", default)]
    skip_tls_verify: bool,
}

/// The Docker CLI's config directory: `DOCKER_CONFIG`, else `.docker` in the home directory
/// (`USERPROFILE` on Windows, `HOME` elsewhere).
pub fn docker_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    home_dir().map(|h| h.join(".docker"))
}

/// The user's home directory from the environment: `USERPROFILE` on Windows, `HOME` elsewhere.
pub fn home_dir() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var).filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// The directory name of a context in the store: the hex sha256 of its name.
pub fn context_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// Whether the Docker CLI accepts `name` (docker/cli's `^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$`).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
}

/// Where context `name` lives under `config`.
pub fn paths(config: &Path, name: &str) -> ContextPaths {
    let id = context_id(name);
    let contexts = config.join("contexts");
    let tls_dir = contexts.join("tls").join(&id);
    ContextPaths {
        meta_file: contexts.join("meta").join(&id).join("meta.json"),
        cert_path: tls_dir.join("docker"),
        tls_dir,
    }
}

/// `meta.json`'s text for `context`.
pub fn meta_json(context: &DockerContext) -> String {
    let meta = Meta {
        name: context.name.clone(),
        metadata: Metadata {
            description: context.description.clone(),
        },
        endpoints: Endpoints {
            docker: Endpoint {
                host: context.host.clone(),
                skip_tls_verify: false,
            },
        },
    };
    serde_json::to_string(&meta).expect("context metadata serialises")
}

/// Writes (or replaces) `context` in the store under `config`.
pub fn write(config: &Path, context: &DockerContext) -> Result<ContextPaths, ContextError> {
    if !is_valid_name(&context.name) {
        return Err(ContextError::Name(context.name.clone()));
    }
    let p = paths(config, &context.name);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContextError::Write { path, source }
    };
    let tls_root = p.tls_dir.parent().expect("tls dir has a parent");
    let meta_dir = p.meta_file.parent().expect("meta file has a parent");
    let id = context_id(&context.name);
    let pid = std::process::id();
    let staged = tls_root.join(format!(".{id}.new-{pid}"));
    let old = tls_root.join(format!(".{id}.old-{pid}"));
    let meta_temp = meta_dir.join(format!(".meta.json.new-{pid}"));

    // 1. The new TLS directory and meta.json, beside the live ones.
    let _ = fs::remove_dir_all(&staged);
    private_dir(&staged.join("docker")).map_err(err(&staged))?;
    for (file, bytes) in [
        ("ca.pem", &context.tls.ca),
        ("cert.pem", &context.tls.cert),
        ("key.pem", &context.tls.key),
    ] {
        let path = staged.join("docker").join(file);
        write_private(&path, bytes).map_err(err(&path))?;
    }
    let meta_dir_existed = meta_dir.is_dir();
    let staged_meta = fs::create_dir_all(meta_dir)
        .and_then(|()| write_private(&meta_temp, meta_json(context).as_bytes()))
        .map_err(err(&meta_temp));
    if let Err(e) = staged_meta {
        let _ = fs::remove_dir_all(&staged);
        return Err(e);
    }
    let undo_staging = || {
        let _ = fs::remove_dir_all(&staged);
        let _ = fs::remove_file(&meta_temp);
        if !meta_dir_existed {
            let _ = fs::remove_dir(meta_dir);
        }
    };

    // 2. Swap the TLS directory: the old one aside, the new one in.
    let had_old = p.tls_dir.exists();
    if had_old {
        if let Err(e) = fs::rename(&p.tls_dir, &old) {
            undo_staging();
            return Err(ContextError::Write {
                path: p.tls_dir.clone(),
                source: e,
            });
        }
    }
    let restore_old = || {
        if had_old {
            let _ = fs::remove_dir_all(&p.tls_dir);
            let _ = fs::rename(&old, &p.tls_dir);
        }
    };
    if let Err(e) = fs::rename(&staged, &p.tls_dir) {
        restore_old();
        undo_staging();
        return Err(ContextError::Write {
            path: p.tls_dir.clone(),
            source: e,
        });
    }
    // 3. meta.json by one rename, which replaces the old file on every host.
    if let Err(e) = fs::rename(&meta_temp, &p.meta_file) {
        if had_old {
            restore_old();
        } else {
            let _ = fs::remove_dir_all(&p.tls_dir);
        }
        undo_staging();
        return Err(ContextError::Write {
            path: p.meta_file.clone(),
            source: e,
        });
    }
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(p)
}

/// Reads context `name` from the store under `config`; it must have TLS files, as the ones
/// `uvmkit connect` writes do.
pub fn read(config: &Path, name: &str) -> Result<StoredContext, ContextError> {
    let p = paths(config, name);
    let text = match fs::read_to_string(&p.meta_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ContextError::Missing {
                name: name.to_string(),
                config: config.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(ContextError::Read {
                path: p.meta_file.clone(),
                reason: e.to_string(),
            })
        }
    };
    let meta: Meta = serde_json::from_str(&text).map_err(|e| ContextError::Read {
        path: p.meta_file.clone(),
        reason: format!("not a Docker context's meta.json: {e}"),
    })?;
    if !["ca.pem", "cert.pem", "key.pem"]
        .iter()
        .all(|f| p.cert_path.join(f).is_file())
    {
        return Err(ContextError::NoTls {
            name: name.to_string(),
            cert_path: p.cert_path.clone(),
        });
    }
    Ok(StoredContext {
        name: meta.name,
        host: meta.endpoints.docker.host,
        paths: p,
    })
}

/// Makes `dir` and its parents; the context's own directories are 0700 on Unix (Windows
/// keeps the user profile's ACLs, which already shut other users out).
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        if let Some(parent) = dir.parent() {
            fs::set_permissions(parent, fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to a new file readable by its owner only (0600 on Unix), synced.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(host: &str, key: &str) -> DockerContext {
        DockerContext {
            name: "uvmkit-vm1".into(),
            description: "uvmkit VM".into(),
            host: host.into(),
            tls: TlsMaterial {
                ca: b"CA\n".to_vec(),
                cert: b"CERT\n".to_vec(),
                key: key.as_bytes().to_vec(),
            },
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-context-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Every path under `dir` with its contents (directories as empty), sorted.
    fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                if path.is_dir() {
                    out.push((rel + "/", Vec::new()));
                    stack.push(path);
                } else {
                    out.push((rel, fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_layout_is_the_docker_clis() {
        // sha256("uvmkit-vm1"), as `docker context create uvmkit-vm1` names its directories.
        let id = context_id("uvmkit-vm1");
        assert_eq!(id, hex::encode(Sha256::digest(b"uvmkit-vm1")));
        assert_eq!(id.len(), 64);
        assert_eq!(
            meta_json(&context("tcp://127.0.0.1:2376", "K")),
            r#"{"Name":"uvmkit-vm1","Metadata":{"Description":"uvmkit VM"},"Endpoints":{"docker":{"Host":"tcp://127.0.0.1:2376","SkipTLSVerify":false}}}"#
        );
        let dir = scratch("layout");
        let p = write(&dir, &context("tcp://127.0.0.1:2376", "KEY\n")).unwrap();
        assert_eq!(p.meta_file, dir.join(format!("contexts/meta/{id}/meta.json")));
        assert_eq!(p.cert_path, dir.join(format!("contexts/tls/{id}/docker")));
        let files: Vec<String> = tree(&dir).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            files,
            [
                "contexts/".to_string(),
                "contexts/meta/".into(),
                format!("contexts/meta/{id}/"),
                format!("contexts/meta/{id}/meta.json"),
                "contexts/tls/".into(),
                format!("contexts/tls/{id}/"),
                format!("contexts/tls/{id}/docker/"),
                format!("contexts/tls/{id}/docker/ca.pem"),
                format!("contexts/tls/{id}/docker/cert.pem"),
                format!("contexts/tls/{id}/docker/key.pem"),
            ]
        );
        assert_eq!(fs::read(p.cert_path.join("key.pem")).unwrap(), b"KEY\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&p.cert_path.join("key.pem")), 0o600);
            assert_eq!(mode(&p.cert_path), 0o700);
            assert_eq!(mode(&p.tls_dir), 0o700);
        }
        let stored = read(&dir, "uvmkit-vm1").unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.host.as_str()),
            ("uvmkit-vm1", "tcp://127.0.0.1:2376")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_again_replaces_the_context_whole() {
        let dir = scratch("replace");
        write(&dir, &context("tcp://10.0.0.1:2376", "OLD\n")).unwrap();
        let p = write(&dir, &context("tcp://10.0.0.2:2376", "NEW\n")).unwrap();
        assert_eq!(fs::read(p.cert_path.join("key.pem")).unwrap(), b"NEW\n");
        assert_eq!(read(&dir, "uvmkit-vm1").unwrap().host, "tcp://10.0.0.2:2376");
        // No staging or backup directories are left behind.
        let tls: Vec<_> = fs::read_dir(dir.join("contexts/tls")).unwrap().collect();
        assert_eq!(tls.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_context() {
        let dir = scratch("fail");
        let p = write(&dir, &context("tcp://10.0.0.1:2376", "OLD\n")).unwrap();
        // A directory where meta.json goes: the last rename fails (even for root), after the
        // TLS directory was swapped, which must then be undone.
        fs::remove_file(&p.meta_file).unwrap();
        fs::create_dir_all(p.meta_file.join("keep")).unwrap();
        let before = tree(&dir);
        let err = write(&dir, &context("tcp://10.0.0.2:2376", "NEW\n")).unwrap_err();
        assert!(err.to_string().contains("the previous context is unchanged"), "{err}");
        assert_eq!(tree(&dir), before);
        // A name the CLI refuses is refused before anything is written.
        let mut bad = context("tcp://10.0.0.3:2376", "X");
        bad.name = "-bad".into();
        assert!(matches!(write(&dir, &bad), Err(ContextError::Name(_))));
        assert_eq!(tree(&dir), before);
        assert!(matches!(read(&dir, "other"), Err(ContextError::Missing { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
