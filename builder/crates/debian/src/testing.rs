//! A deterministic OpenPGP signer for tests that need a signed repository (feature
//! `testing`). Keys come from a seed and a fixed creation time, so the same seed gives the
//! same public keyring bytes and the same signatures on every run.
//!
//! Never use these keys for anything but tests: anyone with the seed has the secret key.

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::packet::{KeyFlags, SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password, Tag, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Key and signature creation time: 2020-09-13T12:26:40Z, fixed so output is reproducible.
const TEST_TIME: u32 = 1_600_000_000;

/// An Ed25519 signing key derived from a seed, for tests.
pub struct TestSigner {
    secret: SignedSecretKey,
    public: SignedPublicKey,
}

impl TestSigner {
    /// Derives a key from `seed` (same seed, same key and signatures).
    pub fn generate(seed: u64) -> TestSigner {
        Self::try_generate(seed).expect("Ed25519 key generation from a seeded RNG cannot fail")
    }

    fn try_generate(seed: u64) -> Result<TestSigner, Box<dyn std::error::Error>> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let created = Timestamp::from_secs(TEST_TIME);
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .created_at(created)
            .primary_user_id(format!("uvmkit test signer {seed} <test-{seed}@uvmkit.invalid>"))
            .build()?;
        let mut secret = params.generate(&mut rng)?;
        // The library stamps self-signatures with the current time; redo the user id's
        // certification with the fixed time so the public key bytes are reproducible.
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(true);
        let mut config = SignatureConfig::from_key(&mut rng, &secret.primary_key, SignatureType::CertPositive)?;
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(created))?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(secret.primary_key.fingerprint()))?,
            Subpacket::regular(SubpacketData::KeyFlags(flags))?,
            Subpacket::regular(SubpacketData::IsPrimary(true))?,
        ];
        config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
            secret.primary_key.legacy_key_id(),
        ))?];
        let user_id = secret.details.users[0].id.clone();
        let sig = config.sign_certification(
            &secret.primary_key,
            secret.primary_key.public_key(),
            &Password::empty(),
            Tag::UserId,
            &user_id,
        )?;
        secret.details.users[0].signatures = vec![sig];
        let public = secret.to_public_key();
        Ok(TestSigner { secret, public })
    }

    /// The public key as a binary keyring (what `Keyring::from_bytes` and `gpgv --keyring`
    /// read).
    pub fn public_keyring_bytes(&self) -> Vec<u8> {
        self.public
            .to_bytes()
            .expect("serialising a public key to memory cannot fail")
    }

    /// The key's fingerprint, uppercase hex.
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.public.primary_key.fingerprint())
    }

    /// Clearsigns `text` as `InRelease` files are signed (`gpg --clearsign`, SHA-256).
    pub fn clearsign(&self, text: &str) -> String {
        self.try_clearsign(text)
            .expect("signing in memory with an unlocked Ed25519 key cannot fail")
    }

    fn try_clearsign(&self, text: &str) -> pgp::errors::Result<String> {
        let key = &self.secret.primary_key;
        let mut config = SignatureConfig::from_key(ChaCha20Rng::seed_from_u64(0), key, SignatureType::Text)?;
        config.hash_alg = pgp::crypto::hash::HashAlgorithm::Sha256;
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(TEST_TIME)))?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        ];
        config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id()))?];
        let message = CleartextSignedMessage::new(text, config, key, &Password::empty())?;
        message.to_armored_string(ArmorOptions::default())
    }
}
