//! uvmkit: from an image definition to bootable utility VM images.
//!
//! The build is a straight line: [`config`] (the definition) → [`inputs`] (Debian packages and
//! the kernel, fetched and verified into the cache; the only stage that touches the network) →
//! [`assemble`] (the image's file tree, pure and deterministic) → [`pipeline`] (initrd, UKI,
//! disks and ISO through one crate per format) → [`artifacts`] with checksums and
//! [`manifest`].

pub mod artifacts;
pub mod assemble;
pub mod bundle;
pub mod closure;
pub mod config;
pub mod elf;
pub mod inputs;
pub mod inspect;
pub mod kernel;
pub mod kernelconfig;
pub mod lock;
pub mod manifest;
pub mod pipeline;
pub mod sbom;
