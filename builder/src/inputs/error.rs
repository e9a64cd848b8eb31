//! Why the inputs could not be resolved. Each variant says what failed and names the file,
//! URL or package; [`InputError::is_fetch_failure`] tells a bad input from a failed fetch or
//! verification (the command's exit codes 2 and 3).

use super::archive::ArchiveError;
use super::boot_files::BootFilesError;
use super::choose::ResolveError;
use super::kernel::KernelError;
use super::lock::LockError;
use super::unpack::PackageError;
use uvmkit_fetch::FetchError;

/// Why the inputs could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Network, cache or checksum failure.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The archive's signature or index is bad.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A fetched package is unusable (cannot be unpacked, lacks a file it must have).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Dependency resolution failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The kernel is unusable or lacks options the image needs.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The boot loaders cannot boot the kernel (the signed chain and an unsigned kernel).
    #[error(transparent)]
    BootFiles(#[from] BootFilesError),
    /// A local file the definition names could not be read.
    #[error("{what}: {source}")]
    Read {
        /// What was read, with its path (`keyring keys.gpg`, `[kernel] path vmlinuz`).
        what: String,
        /// What reading it reported.
        source: std::io::Error,
    },
    /// The lock file is unreadable, missing or stale (`--locked`).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// An offline build lacks these inputs (one line each).
    #[error(
        "offline build: {} input(s) are not in the cache:\n  {}\nrun once without --offline, or build from a bundle (--bundle)",
        .0.len(),
        .0.join("\n  ")
    )]
    Offline(Vec<String>),
    /// Something has to be fetched (`needed`), and no usable Debian mirror is configured.
    #[error("{needed} must be fetched, but {error}")]
    Mirror {
        /// What has to be fetched, for people.
        needed: String,
        /// Why no mirror could be used (it says where one can be configured).
        error: FetchError,
    },
}

impl InputError {
    /// True when fetching or verifying failed (the network, the mirror, a signature, a
    /// checksum, a damaged package); false when the definition, a local file or the lock is
    /// at fault.
    pub fn is_fetch_failure(&self) -> bool {
        // A lock that leaves out a package the build needs is the lock's fault, not a fetch's.
        if matches!(self, InputError::Package(PackageError::NotPinned { .. })) {
            return false;
        }
        matches!(
            self,
            InputError::Fetch(_)
                | InputError::Archive(_)
                | InputError::Package(_)
                | InputError::Offline(_)
                | InputError::Mirror { .. }
        )
    }

    /// True when the lock file could not be written or read (a local I/O failure, not a
    /// problem of the definition).
    pub fn is_lock_io(&self) -> bool {
        matches!(self, InputError::Lock(LockError::Io { .. }))
    }
}
