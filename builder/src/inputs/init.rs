//! The init (PID 1), an input every image gets: built from `init/` by `builder/build.rs` and
//! embedded in the `uvmkit` binary, so building an image needs no separate step.

/// The static init binary.
pub static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/uvmkit-init"));
