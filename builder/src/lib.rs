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

#![deny(missing_docs)]

pub mod atomic_file;
pub mod elf;

pub mod assemble;
pub mod definition;
pub mod encode;
pub mod inputs;
pub mod publish;

pub mod inspect;
pub mod pipeline;

pub mod connect;
pub mod instance;
