//! The Unified Kernel Image: systemd-boot's EFI stub with the kernel, initrd, command line,
//! os-release and `uname -r` as PE sections (UAPI.5), the one file every bootable format
//! carries; and the kernel on its own, for direct kernel boot. With the user's key
//! (`--sign-key`, `--sign-cert`) it is Authenticode-signed here, once, so the `.efi` artifact,
//! the disks' ESP and the ISO's EFI image all carry the signed UKI that firmware with that
//! certificate in `db` boots under Secure Boot.

use super::{io_error, EncodeError};
use crate::assemble::os_release;
use crate::definition::ImageDefinition;
use crate::inputs::ResolvedInputs;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use uvmkit_authenticode::{Certificate, KeyError, SigningKey};
use uvmkit_filetree::FileData;
use uvmkit_uki::{SectionData, UkiLayout, UkiSections};

/// The key and certificate chain the UKI is signed with.
#[derive(Debug, Clone)]
pub struct UkiSigner {
    /// The RSA private key.
    key: SigningKey,
    /// The signer's certificate first, then its chain.
    chain: Vec<Certificate>,
}

/// Who signed the UKI, for the manifest and the build summary (never the key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UkiSignature {
    /// `authenticode`.
    pub format: &'static str,
    /// The signing certificate's subject (RFC 4514).
    pub subject: String,
    /// The signing certificate's issuer (RFC 4514).
    pub issuer: String,
    /// The SHA-256 fingerprint of the signing certificate's DER, in hex.
    pub certificate_sha256: String,
}

/// Why `--sign-key` or `--sign-cert` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The key or certificate file.
        path: PathBuf,
        /// What reading it reported.
        source: std::io::Error,
    },
    /// The key file holds no usable key.
    #[error("--sign-key {}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The certificate file holds no usable certificate.
    #[error("--sign-cert {}: {source}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The certificate is not the key's.
    #[error("--sign-cert {} ({subject}) does not certify the key in --sign-key {}: give the certificate made for that key", cert.display(), key.display())]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
}

impl UkiSigner {
    /// Reads the PEM private key at `key` (PKCS #8 or PKCS #1, unencrypted RSA) and the PEM
    /// certificates at `cert` (the signer's first), and checks that the first certifies the key.
    pub fn load(key: &Path, cert: &Path) -> Result<UkiSigner, SignerError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| SignerError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let signing_key = SigningKey::from_pem(&read(key)?).map_err(|source| SignerError::Key {
            path: key.to_path_buf(),
            source,
        })?;
        let chain = Certificate::chain_from_pem(&read(cert)?).map_err(|source| SignerError::Certificate {
            path: cert.to_path_buf(),
            source,
        })?;
        if !signing_key.matches(&chain[0]) {
            return Err(SignerError::Mismatch {
                key: key.to_path_buf(),
                cert: cert.to_path_buf(),
                subject: chain[0].subject(),
            });
        }
        Ok(UkiSigner {
            key: signing_key,
            chain,
        })
    }

    /// Who the signature names.
    pub fn signature(&self) -> UkiSignature {
        UkiSignature {
            format: "authenticode",
            subject: self.chain[0].subject(),
            issuer: self.chain[0].issuer(),
            certificate_sha256: hex::encode(self.chain[0].sha256_fingerprint()),
        }
    }
}

/// Writes the UKI of `def` to `path`, with the initrd at `initrd_path`, signed by `signer`
/// when given; returns where its sections lie (the ISO points into them; a signature is
/// appended after them and leaves them in place).
pub fn write_uki(
    def: &ImageDefinition,
    inputs: &ResolvedInputs,
    initrd_path: &Path,
    path: &Path,
    signer: Option<&UkiSigner>,
) -> Result<UkiLayout, EncodeError> {
    let stub = inputs.uki_stub.read_all().map_err(EncodeError::Stub)?;
    let osrel = os_release(def);
    let uname = inputs.kernel.release.clone();
    let linux = match &inputs.kernel.image {
        FileData::HostFile { path, .. } => SectionData::File(path),
        FileData::Inline(bytes) => SectionData::Bytes(bytes),
    };
    let sections = UkiSections {
        osrel: osrel.as_bytes(),
        cmdline: def.cmdline.as_bytes(),
        uname: Some(uname.as_bytes()),
        initrd: Some(SectionData::File(initrd_path)),
        linux,
    };
    let mut w = BufWriter::new(File::create(path).map_err(io_error("UKI"))?);
    let layout = match signer {
        None => uvmkit_uki::write_uki(&stub, &sections, &mut w)?,
        Some(signer) => {
            // The signature covers the whole image, so it is made in memory and written once.
            let mut unsigned = Vec::new();
            let layout = uvmkit_uki::write_uki(&stub, &sections, &mut unsigned)?;
            let signed = uvmkit_authenticode::sign(&unsigned, &signer.key, &signer.chain)?;
            drop(unsigned);
            w.write_all(&signed).map_err(io_error("UKI"))?;
            layout
        }
    };
    w.flush().map_err(io_error("UKI"))?;
    Ok(layout)
}

/// Copies the kernel image to `path`.
pub fn write_kernel(inputs: &ResolvedInputs, path: &Path) -> Result<(), EncodeError> {
    let mut kernel = inputs.kernel.image.open().map_err(io_error("kernel"))?;
    let mut f = File::create(path).map_err(io_error("kernel"))?;
    std::io::copy(&mut kernel, &mut f).map_err(io_error("kernel"))?;
    Ok(())
}
