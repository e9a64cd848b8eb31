//! PEM certificate files from a per-VM settings volume (`tls.client_ca`,
//! `tls.ca_certificates`), fed mutations of valid certificates and random bytes
//! (`uvmkit_testkit::fuzz`): the PEM and X.509 readers may not panic, run long or hold more
//! than their heap bound.

use std::time::{Duration, UNIX_EPOCH};

use rand_core::{CryptoRng, RngCore};
use uvmkit_identity::tls::{cert_sans, create_ca, read_certificates, validity_period};
use uvmkit_testkit::fuzz::{Fuzz, Rng};

uvmkit_testkit::count_allocations!();

/// The fuzzer's generator as a key source, so the seed certificates are the same every run.
/// Test keys only.
struct FixedRng(Rng);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.iter_mut().for_each(|b| *b = self.0.next() as u8);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}

#[test]
fn pem_certificate_files() {
    let mut rng = FixedRng(Rng::new(14));
    let at = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let one = create_ca(&mut rng, "corp root", at, 3650).unwrap().cert_pem;
    let two = create_ca(&mut rng, "other root", at, 30).unwrap().cert_pem;
    let chain = format!("text before\n{one}between\n{two}");
    assert_eq!(read_certificates(&chain, "seed").unwrap().len(), 2);
    Fuzz::new("pem-certificates")
        .dictionary(&[
            "-----BEGIN CERTIFICATE-----\n",
            "-----END CERTIFICATE-----\n",
            "\n",
            "=",
            "\r\n",
            "MII",
        ])
        .run(&[one.into_bytes(), chain.into_bytes()], |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(certs) = read_certificates(&text, "fuzz.pem") {
                for cert in certs {
                    let _ = validity_period(&cert.pem);
                    let _ = cert_sans(&cert.pem);
                }
            }
        });
}
