//! Debian's repository formats and rules, without network or cache.
//!
//! uvmkit installs Debian packages into an image without `dpkg` or `apt`. This crate holds the
//! parts of that which are pure Debian knowledge, each in a module of its own:
//!
//! - [`version`]: version numbers and their ordering (Debian Policy 5.6.12);
//! - [`control`]: deb822 paragraphs, the `Packages` index and dependency relations (Policy 7.1);
//! - [`copyright`]: the license a machine-readable `copyright` file declares, in SPDX terms;
//! - [`release`]: the `Release` file that lists the indices of a suite with their hashes;
//! - [`signature`]: checking an `InRelease` file's OpenPGP signature against a keyring;
//! - [`archives`]: one release drawn from several archives (`-updates`, `-security`,
//!   `-backports`), merged as apt chooses among them;
//! - [`resolve`]: closing a set of requested packages over `Depends` and `Pre-Depends`;
//! - [`deb`]: streaming the contents of a `.deb` with path-safety checks;
//! - [`compression`]: the `.gz`, `.xz` and `.zst` decoders indices and members use.
//!
//! Every function takes bytes or readers and gives back data; fetching and caching belong to
//! the caller.

#![deny(missing_docs)]

pub mod archives;
pub mod compression;
pub mod control;
pub mod copyright;
pub mod deb;
pub mod release;
pub mod resolve;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;
pub mod version;

pub use control::{Op, Package, PackageIndex, Paragraph, Relation};
pub use deb::{control_fields, unpack_data, DebEntry, DebEntryKind, DebError};
pub use release::{IndexFile, Release};
pub use resolve::{Request, Resolution, ResolvedPackage, Resolver};
pub use signature::{verify_inrelease, Keyring};
pub use version::DebVersion;
