//! uvmkit: from an image definition to bootable utility VM images.
//!
//! The build is a straight line, one folder per stage, each importing only from the stages
//! before it (a test checks this): [`definition`] (the TOML file, parsed and validated once) →
//! [`inputs`] (Debian packages, the kernel and the embedded init, fetched and verified into the
//! cache; the only stage that touches the network) → [`assemble`] (the image's file tree, pure
//! and deterministic) → [`encode`] (initrd, UKI, disks and ISO through one crate per format) →
//! [`publish`] (artifacts with checksums, manifest and SBOM). [`pipeline`] wires the stages;
//! [`inspect`] prints what went in. [`elf`] and [`atomic_file`] sit below every stage.
//! `ARCHITECTURE.md` at the repository root follows one image through them.
//!
//! Beside the build: [`instance`] (a VM's settings volume) and [`connect`] (the Docker CLI's
//! context for a running VM). Only these two are built for Windows hosts; the build needs
//! Linux or macOS.

#![deny(missing_docs)]

#[cfg(unix)]
pub mod atomic_file;
#[cfg(unix)]
pub mod elf;

#[cfg(unix)]
pub mod assemble;
#[cfg(unix)]
pub mod definition;
#[cfg(unix)]
pub mod encode;
#[cfg(unix)]
pub mod inputs;
#[cfg(unix)]
pub mod publish;

#[cfg(unix)]
pub mod inspect;
#[cfg(unix)]
pub mod pipeline;

pub mod connect;
pub mod instance;
