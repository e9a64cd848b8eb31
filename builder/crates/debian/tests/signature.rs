//! `InRelease` signature checks, each verdict compared with `gpgv`'s on the same input (read
//! as apt reads it: one status per signature from `--status-fd`, and apt's rule that a file is
//! accepted when a signature is good and none is bad):
//!
//! - real `InRelease` files of bookworm, bookworm-updates, trixie and trixie-security,
//!   recorded in `tests/data/` (fetched from a Debian mirror and the security archive on
//!   2026-12-01), against the embedded Debian archive keyring;
//! - messages signed here by `gpg` with its own keys: RSA, EdDSA with a signing subkey,
//!   expired and revoked keys and subkeys, an expired signature, a SHA-1 signature, several
//!   signatures of which one is by an unknown key;
//! - messages of the seeded `TestSigner` that other tests build repositories with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use uvmkit_debian::signature::{check_inrelease, verify_inrelease, CheckedMessage, Keyring, SignatureError, Verdict};
use uvmkit_debian::testing::TestSigner;
use uvmkit_debian::Release;
use uvmkit_testkit::{tool_path, ScratchDir};

const RELEASE: &str =
    "Origin: uvmkit-test\nSuite: stable\nCodename: testing-suite\nDate: Sun, 13 Sep 2020 12:26:40 UTC\n\
Architectures: amd64\nComponents: main\nSHA256:\n \
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\n";

/// The embedded keyring, as a file gpgv can read.
const DEBIAN_KEYRING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/debian-archive-keyring.gpg");

/// When the recorded files were fetched: every key that signed them was valid then.
const RECORDED_AT: u64 = 1_796_162_000;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `tool`'s path; the comparisons are the point of these tests, so a missing tool fails them.
fn need(tool: &str) -> PathBuf {
    tool_path(tool).unwrap_or_else(|| panic!("{tool} is not installed; tests/install-deps.sh installs it"))
}

/// One signature's outcome, in gpgv's terms. Keys are uppercase hex: full fingerprints where
/// gpgv reports them (`VALIDSIG`), else 16-digit key ids.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Good(String),
    Weak(String),
    Bad(String),
    NoPubKey(String),
    Err,
    ExpiredSig(String),
    ExpiredKey(String),
    RevokedKey(String),
}

/// apt's acceptance rule over gpgv's statuses (`methods/gpgv.cc`).
fn apt_accepts(statuses: &[Status]) -> bool {
    statuses.iter().any(|s| matches!(s, Status::Good(_))) && !statuses.iter().any(|s| matches!(s, Status::Bad(_)))
}

fn key_id(hex: &str) -> String {
    hex[hex.len().saturating_sub(16)..].to_string()
}

fn ours(verdicts: &[Verdict]) -> Vec<Status> {
    verdicts
        .iter()
        .map(|v| match v {
            Verdict::Good(s) => Status::Good(s.key.clone()),
            Verdict::WeakDigest { signer, .. } => Status::Weak(signer.key.clone()),
            Verdict::Bad { signer, .. } => Status::Bad(key_id(&signer.key)),
            Verdict::UnknownKey { issuer } => Status::NoPubKey(key_id(issuer)),
            Verdict::Unusable { .. } => Status::Err,
            Verdict::ExpiredSignature { signer, .. } => Status::ExpiredSig(signer.key.clone()),
            Verdict::ExpiredKey { signer, .. } => Status::ExpiredKey(signer.key.clone()),
            Verdict::RevokedKey(s) => Status::RevokedKey(s.key.clone()),
        })
        .collect()
}

/// gpgv's verdict on `file` with `keyring`: one status per signature, and the signed text it
/// writes out when any signature verifies.
fn gpgv(keyring: &Path, file: &Path) -> (Vec<Status>, Option<String>) {
    // gpgv's home directory must exist but holds nothing of ours: the keyring is explicit.
    let home = file.with_extension("gpgv-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = file.with_extension("gpgv-out");
    let _ = std::fs::remove_file(&out);
    let run = Command::new(need("gpgv"))
        .arg("--homedir")
        .arg(&home)
        .args(["--status-fd", "1", "--keyring"])
        .arg(keyring)
        .arg("--output")
        .arg(&out)
        .arg(file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(run.stdout).unwrap();
    let mut groups: Vec<Vec<Vec<&str>>> = Vec::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        match words.first() {
            Some(&"NEWSIG") => groups.push(Vec::new()),
            // Lines before the first signature (the plaintext's) concern no signature.
            Some(_) => {
                if let Some(group) = groups.last_mut() {
                    group.push(words)
                }
            }
            None => {}
        }
    }
    let statuses = groups
        .iter()
        .map(|g| {
            let find = |kw: &str| g.iter().find(|w| w[0] == kw);
            let valid = find("VALIDSIG").map(|w| (w[1].to_string(), w[8]));
            let fpr = || valid.as_ref().map(|v| v.0.clone()).unwrap_or_default();
            if let Some(w) = find("BADSIG") {
                Status::Bad(w[1].to_string())
            } else if let Some(w) = find("NO_PUBKEY") {
                Status::NoPubKey(w[1].to_string())
            } else if find("ERRSIG").is_some() {
                Status::Err
            } else if find("EXPSIG").is_some() {
                Status::ExpiredSig(fpr())
            } else if find("EXPKEYSIG").is_some() {
                Status::ExpiredKey(fpr())
            } else if find("REVKEYSIG").is_some() {
                Status::RevokedKey(fpr())
            } else if find("GOODSIG").is_some() {
                // VALIDSIG's eighth field is the digest algorithm (RFC 9580 section 9.5): apt
                // treats MD5 (1), SHA-1 (2) and RIPEMD-160 (3) as untrusted.
                match valid.as_ref().map(|v| v.1) {
                    Some("1" | "2" | "3") => Status::Weak(fpr()),
                    _ => Status::Good(fpr()),
                }
            } else {
                panic!("unexpected gpgv status group {g:?} in\n{stdout}")
            }
        })
        .collect();
    (statuses, std::fs::read_to_string(&out).ok())
}

/// Checks `message` with our verifier and with gpgv on the same bytes and keyring; asserts
/// they agree signature by signature, on acceptance and on the signed text, and that the
/// verdicts are `expected`. Returns our result.
fn compare(
    dir: &Path,
    name: &str,
    message: &[u8],
    keyring: &Path,
    expected: &[Status],
) -> (CheckedMessage, Result<String, SignatureError>) {
    let file = dir.join(name);
    std::fs::write(&file, message).unwrap();
    let ring = Keyring::from_bytes(&std::fs::read(keyring).unwrap()).unwrap();
    let checked = check_inrelease(message, &ring, now()).unwrap();
    let (theirs, their_text) = gpgv(keyring, &file);
    let mine = ours(&checked.verdicts);
    // gpgv stops at the first bad signature of a cleartext message; ours go on.
    let compared = match theirs.last() {
        Some(Status::Bad(_)) => &mine[..theirs.len().min(mine.len())],
        _ => &mine[..],
    };
    assert_eq!(
        compared, theirs,
        "{name}: our verdicts (left) differ from gpgv's (right): {:#?}",
        checked.verdicts
    );
    assert_eq!(mine, expected, "{name}: verdicts");
    let accepted = checked.clone().accepted();
    assert_eq!(
        accepted.is_ok(),
        apt_accepts(&theirs),
        "{name}: acceptance differs: {accepted:?}"
    );
    if let Some(text) = their_text {
        // gpgv ends every line it writes with a newline; our text, for Release::parse, adds
        // one only when the signed text does not already end with one (RFC 9580 section 7.1:
        // the line break before the signature armor is not part of the signed text).
        let text = text.strip_suffix("\n\n").map(|t| format!("{t}\n")).unwrap_or(text);
        assert_eq!(checked.text, text, "{name}: signed text");
    }
    (checked, accepted)
}

/// Changes one character of the signed body (after the armor header's blank line).
fn flip_body_byte(message: &[u8]) -> Vec<u8> {
    let body = message.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let pos = body + message[body..].iter().position(u8::is_ascii_alphanumeric).unwrap();
    let mut out = message.to_vec();
    out[pos] = if out[pos] == b'0' { b'1' } else { b'0' };
    out
}

#[test]
fn recorded_debian_inreleases_verify_like_gpgv() {
    let dir = ScratchDir::new("sig-recorded");
    let keyring = Path::new(DEBIAN_KEYRING);
    let ring = Keyring::debian_archive();
    let stranger = dir.path().join("stranger.gpg");
    std::fs::write(&stranger, TestSigner::generate(3).public_keyring_bytes()).unwrap();
    // Signing subkeys of the archive keys (bookworm, trixie), security archive keys
    // (bullseye, bookworm, trixie) and the EdDSA stable release keys.
    let (bookworm_archive, trixie_archive) = (
        "4CB50190207B4758A3F73A796ED0E7B82643E131",
        "B8E5F13176D2A7A75220028078DBA3BC47EF2265",
    );
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "bookworm",
            "bookworm",
            &[
                bookworm_archive,
                trixie_archive,
                "4D64FEC119C2029067D6E791F8D2585B8783D481",
            ],
        ),
        (
            "bookworm-updates",
            "bookworm-updates",
            &[bookworm_archive, trixie_archive],
        ),
        (
            "trixie",
            "trixie",
            &[
                bookworm_archive,
                trixie_archive,
                "41587F7DB8C774BCCF131416762F67A0B2C39DE4",
            ],
        ),
        (
            "trixie-security",
            "trixie-security",
            &[
                "B0CAB9266E8C3929798B3EEEBDE6D2B9216EC7A8",
                "89C87ACEA5DD6B8E6A7068808E9F831205B4BA95",
            ],
        ),
    ];
    for (file, codename, signers) in cases {
        let message = data(&format!("{file}.InRelease"));
        // At the time of recording, with the embedded keyring: every signature is good.
        let started = std::time::Instant::now();
        let text = check_inrelease(&message, &ring, RECORDED_AT)
            .unwrap()
            .accepted()
            .unwrap();
        let elapsed = started.elapsed();
        let release = Release::parse(&text).unwrap();
        assert_eq!(release.codename.as_deref(), Some(codename));
        println!("{file}: {} signatures verified in {elapsed:.2?}", signers.len());

        // Now, the same verdicts as gpgv's (both judge key expiry against the clock).
        let good: Vec<Status> = signers.iter().map(|s| Status::Good(s.to_string())).collect();
        let (checked, _) = compare(dir.path(), file, &message, keyring, &good);
        assert_eq!(checked.text, text);

        // One changed byte in the signed text: every signature is bad, the file refused.
        let bad: Vec<Status> = signers.iter().map(|s| Status::Bad(key_id(s))).collect();
        let (_, refused) = compare(
            dir.path(),
            &format!("{file}.tampered"),
            &flip_body_byte(&message),
            keyring,
            &bad,
        );
        assert!(
            matches!(refused, Err(SignatureError::BadSignature { .. })),
            "{refused:?}"
        );

        // A keyring without Debian's keys knows none of the signers.
        let unknown: Vec<Status> = signers.iter().map(|s| Status::NoPubKey(key_id(s))).collect();
        let (_, refused) = compare(dir.path(), &format!("{file}.stranger"), &message, &stranger, &unknown);
        let Err(SignatureError::UnknownKey { key_ids }) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(key_ids, signers.to_vec());
    }
}

/// A gpg home directory with keys made for one test.
struct Gpg {
    home: ScratchDir,
}

impl Gpg {
    fn new(name: &str) -> Gpg {
        let home = ScratchDir::new(name);
        std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    /// Runs gpg in batch mode without passphrases, at `time` when given; returns its status
    /// lines.
    fn run(&self, time: Option<u64>, args: &[&str]) -> String {
        let mut cmd = Command::new(need("gpg"));
        cmd.arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--status-fd", "1"]);
        if let Some(t) = time {
            cmd.args(["--faked-system-time", &format!("{t}!")]);
        }
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Makes a key (`gpg --quick-gen-key`), at `time`; returns its fingerprint.
    fn key(&self, time: u64, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        let status = self.run(Some(time), &["--quick-gen-key", uid, algo, usage, expire]);
        created(&status)
    }

    /// Adds a subkey to `primary`; returns its fingerprint.
    fn subkey(&self, time: u64, primary: &str, algo: &str, usage: &str) -> String {
        let status = self.run(Some(time), &["--quick-add-key", primary, algo, usage, "never"]);
        created(&status)
    }

    /// Clearsigns `text` with each of `keys` (fingerprints; a subkey's signs with the subkey).
    fn clearsign(&self, time: Option<u64>, keys: &[&str], extra: &[&str], text: &str) -> Vec<u8> {
        let input = self.home.path().join("input");
        let output = self.home.path().join("output.asc");
        std::fs::write(&input, text).unwrap();
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for k in keys {
            args.extend(["--local-user".to_string(), format!("{k}!")]);
        }
        args.extend(["--clearsign", "--output"].map(String::from));
        args.push(output.display().to_string());
        args.push(input.display().to_string());
        self.run(time, &args.iter().map(String::as_str).collect::<Vec<_>>());
        std::fs::read(&output).unwrap()
    }

    /// Exports the public keys `keys` into a binary keyring file `name`.
    fn export(&self, name: &str, keys: &[&str]) -> PathBuf {
        let path = self.home.path().join(name);
        let mut args = vec!["--output", path.to_str().unwrap(), "--export"];
        args.extend(keys);
        self.run(None, &args);
        path
    }

    /// Revokes the whole certificate with the revocation gpg made when it created the key.
    fn revoke(&self, primary: &str) {
        let cert = self.home.path().join("openpgp-revocs.d").join(format!("{primary}.rev"));
        // gpg prefixes the armor line with ':' so the file is not imported by accident.
        let text = std::fs::read_to_string(&cert)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        let rev = self.home.path().join("revocation.asc");
        std::fs::write(&rev, text).unwrap();
        self.run(None, &["--import", rev.to_str().unwrap()]);
    }

    /// Revokes the first subkey of `primary` (`--edit-key`: `key 1`, `revkey`).
    fn revoke_first_subkey(&self, primary: &str) {
        let mut child = Command::new(need("gpg"))
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--command-fd",
                "0",
            ])
            .args(["--edit-key", primary])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        // Answers: select subkey 1, revoke it, confirm, reason 0 (none), empty description,
        // accept, save.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // The agent gpg started for this home directory.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// The fingerprint in gpg's `KEY_CREATED` status line.
fn created(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] KEY_CREATED "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no KEY_CREATED in {status}"))
        .to_string()
}

/// The text signed below: dash-escaping, trailing blanks (not signed, RFC 9580 section 7.2)
/// and a last line without a newline.
const TEXT: &str = "Origin: uvmkit-test\n- a line with a dash\nDescription: trailing blanks   \n\nSHA256:\n \
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\nlast";

#[test]
fn gpg_made_messages_get_gpgv_verdicts() {
    let gpg = Gpg::new("sig-gpg");
    let dir = ScratchDir::new("sig-gpg-files");
    // Keys are made ten days ago so that some can have expired since; an hour later, the
    // old signatures are made.
    let made = now() - 10 * 86_400;
    let old = Some(made + 3600);

    let rsa = gpg.key(made, "RSA signer <rsa@uvmkit.invalid>", "rsa3072", "sign", "never");
    let ed = gpg.key(
        made,
        "EdDSA with subkey <ed@uvmkit.invalid>",
        "ed25519",
        "cert",
        "never",
    );
    let ed_sub = gpg.subkey(made, &ed, "ed25519", "sign");
    let expired = gpg.key(made, "Expired <expired@uvmkit.invalid>", "ed25519", "sign", "1d");
    let revoked = gpg.key(made, "Revoked <revoked@uvmkit.invalid>", "ed25519", "cert", "never");
    let revoked_sub = gpg.subkey(made, &revoked, "ed25519", "sign");
    let sub_revoked = gpg.key(
        made,
        "Subkey revoked <subrev@uvmkit.invalid>",
        "ed25519",
        "cert",
        "never",
    );
    let sub_revoked_sub = gpg.subkey(made, &sub_revoked, "ed25519", "sign");
    let nist = gpg.key(made, "ECDSA <ecdsa@uvmkit.invalid>", "nistp256", "sign", "never");
    let stranger = gpg.key(
        made,
        "Not in the keyring <stranger@uvmkit.invalid>",
        "ed25519",
        "sign",
        "never",
    );

    // Signed before the revocations (gpg signs with no revoked key).
    let by_rsa = gpg.clearsign(None, &[&rsa], &[], TEXT);
    let by_sub = gpg.clearsign(None, &[&ed_sub], &[], TEXT);
    let by_revoked = gpg.clearsign(None, &[&revoked_sub], &[], TEXT);
    let by_sub_revoked = gpg.clearsign(None, &[&sub_revoked_sub], &[], TEXT);
    let by_nist = gpg.clearsign(None, &[&nist], &[], TEXT);
    let by_expired = gpg.clearsign(old, &[&expired], &[], TEXT);
    let expired_and_good = gpg.clearsign(old, &[&expired, &rsa], &[], TEXT);
    let sig_expired = gpg.clearsign(old, &[&rsa], &["--default-sig-expire", "1d"], TEXT);
    let sig_valid = gpg.clearsign(None, &[&rsa], &["--default-sig-expire", "1d"], TEXT);
    let sha1 = gpg.clearsign(None, &[&rsa], &["--digest-algo", "SHA1"], TEXT);
    let sha1_rsa_and_eddsa = gpg.clearsign(None, &[&rsa, &ed_sub], &["--digest-algo", "SHA1"], TEXT);
    let with_stranger = gpg.clearsign(None, &[&stranger, &rsa, &ed_sub], &[], TEXT);
    let only_stranger = gpg.clearsign(None, &[&stranger], &[], TEXT);
    gpg.revoke(&revoked);
    gpg.revoke_first_subkey(&sub_revoked);

    let ring = gpg.export("keyring.gpg", &[&rsa, &ed, &expired, &revoked, &sub_revoked, &nist]);
    let good = |k: &str| Status::Good(k.to_string());
    let d = dir.path();

    let (checked, accepted) = compare(d, "rsa", &by_rsa, &ring, &[good(&rsa)]);
    assert_eq!(accepted.unwrap(), checked.text);
    assert!(checked
        .text
        .starts_with("Origin: uvmkit-test\n- a line with a dash\nDescription: trailing blanks\n"));
    compare(d, "eddsa-subkey", &by_sub, &ring, &[good(&ed_sub)]).1.unwrap();
    compare(d, "ecdsa", &by_nist, &ring, &[good(&nist)]).1.unwrap();
    compare(d, "signature-expires-later", &sig_valid, &ring, &[good(&rsa)])
        .1
        .unwrap();

    // Signatures that verify but do not count.
    let (_, e) = compare(
        d,
        "expired-key",
        &by_expired,
        &ring,
        &[Status::ExpiredKey(expired.clone())],
    );
    assert!(matches!(e, Err(SignatureError::NoValidSignature { .. })), "{e:?}");
    assert!(e.unwrap_err().to_string().contains("expired"));
    compare(
        d,
        "revoked-certificate",
        &by_revoked,
        &ring,
        &[Status::RevokedKey(revoked_sub.clone())],
    )
    .1
    .unwrap_err();
    compare(
        d,
        "revoked-subkey",
        &by_sub_revoked,
        &ring,
        &[Status::RevokedKey(sub_revoked_sub.clone())],
    )
    .1
    .unwrap_err();
    compare(
        d,
        "expired-signature",
        &sig_expired,
        &ring,
        &[Status::ExpiredSig(rsa.clone())],
    )
    .1
    .unwrap_err();
    compare(d, "sha1", &sha1, &ring, &[Status::Weak(rsa.clone())])
        .1
        .unwrap_err();
    let (_, e) = compare(
        d,
        "sha1-rsa-and-eddsa",
        &sha1_rsa_and_eddsa,
        &ring,
        &[Status::Weak(rsa.clone()), Status::Weak(ed_sub.clone())],
    );
    assert!(e.unwrap_err().to_string().contains("untrusted digest Sha1"));

    // Several signatures: one good one suffices, whatever the others are worth.
    compare(
        d,
        "expired-and-good",
        &expired_and_good,
        &ring,
        &[Status::ExpiredKey(expired.clone()), good(&rsa)],
    )
    .1
    .unwrap();
    let stranger_id = key_id(&stranger);
    compare(
        d,
        "with-unknown-key",
        &with_stranger,
        &ring,
        &[Status::NoPubKey(stranger_id.clone()), good(&rsa), good(&ed_sub)],
    )
    .1
    .unwrap();
    let (_, e) = compare(
        d,
        "only-unknown-key",
        &only_stranger,
        &ring,
        &[Status::NoPubKey(stranger_id)],
    );
    assert!(matches!(e, Err(SignatureError::UnknownKey { .. })), "{e:?}");

    // A changed byte: every signature by a known key is bad and the file refused, even when
    // a good signature could otherwise have carried it.
    let tampered = flip_body_byte(&with_stranger);
    let (_, e) = compare(
        d,
        "with-unknown-key.tampered",
        &tampered,
        &ring,
        &[
            Status::NoPubKey(key_id(&stranger)),
            Status::Bad(key_id(&rsa)),
            Status::Bad(key_id(&ed_sub)),
        ],
    );
    assert!(matches!(e, Err(SignatureError::BadSignature { .. })), "{e:?}");
    compare(
        d,
        "expired-key.tampered",
        &flip_body_byte(&by_expired),
        &ring,
        &[Status::Bad(key_id(&expired))],
    )
    .1
    .unwrap_err();
}

#[test]
fn test_signer_round_trip() {
    let signer = TestSigner::generate(7);
    let keyring = Keyring::from_bytes(&signer.public_keyring_bytes()).unwrap();
    let signed = signer.clearsign(RELEASE);
    assert!(
        signed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n"),
        "{signed}"
    );
    let text = verify_inrelease(signed.as_bytes(), &keyring).unwrap();
    assert_eq!(text, RELEASE);
    let release = Release::parse(&text).unwrap();
    assert_eq!(release.codename.as_deref(), Some("testing-suite"));

    // Lines starting with '-' are dash-escaped in the message and restored when verified.
    let dashed = "first\n- a line starting with a dash\n-----BEGIN fake\nlast\n";
    let signed = signer.clearsign(dashed);
    assert!(signed.contains("\n- - a line starting"), "dash-escaped:\n{signed}");
    assert_eq!(verify_inrelease(signed.as_bytes(), &keyring).unwrap(), dashed);
}

#[test]
fn test_signer_is_deterministic() {
    let (a, b) = (TestSigner::generate(42), TestSigner::generate(42));
    assert_eq!(a.public_keyring_bytes(), b.public_keyring_bytes());
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.clearsign(RELEASE), b.clearsign(RELEASE));
    assert_ne!(a.fingerprint(), TestSigner::generate(43).fingerprint());
}

#[test]
fn rejects_tampering_unknown_keys_and_missing_signatures() {
    let signer = TestSigner::generate(1);
    let keyring = Keyring::from_bytes(&signer.public_keyring_bytes()).unwrap();
    let signed = signer.clearsign(RELEASE);

    let tampered = signed.replace("Codename: testing-suite", "Codename: evil-suite");
    assert_ne!(tampered, signed);
    let e = verify_inrelease(tampered.as_bytes(), &keyring).unwrap_err();
    assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");

    let other = Keyring::from_bytes(&TestSigner::generate(2).public_keyring_bytes()).unwrap();
    let e = verify_inrelease(signed.as_bytes(), &other).unwrap_err();
    assert!(matches!(e, SignatureError::UnknownKey { .. }), "{e}");
    assert!(e.to_string().contains(&signer.fingerprint()), "{e}");
    let e = verify_inrelease(signed.as_bytes(), &Keyring::debian_archive()).unwrap_err();
    assert!(matches!(e, SignatureError::UnknownKey { .. }), "{e}");

    // The bare Release text, and a signed header with the signature block removed.
    assert!(matches!(
        verify_inrelease(RELEASE.as_bytes(), &keyring),
        Err(SignatureError::NotSigned(_))
    ));
    let cut = &signed[..signed.find("-----BEGIN PGP SIGNATURE-----").unwrap()];
    assert!(verify_inrelease(cut.as_bytes(), &keyring).is_err());
    // Text appended after the signature is refused rather than ignored.
    let trailing = format!("{signed}\nCodename: evil\n");
    assert!(verify_inrelease(trailing.as_bytes(), &keyring).is_err());
}

#[test]
fn armored_keyrings_load() {
    let signer = TestSigner::generate(9);
    let dir = ScratchDir::new("sig-armor");
    let bin = dir.path().join("k.gpg");
    std::fs::write(&bin, signer.public_keyring_bytes()).unwrap();
    let out = Command::new(need("gpg"))
        .args(["--batch", "--no-default-keyring", "--homedir"])
        .arg(dir.path())
        .arg("--keyring")
        .arg(&bin)
        .args(["--armor", "--export"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let armored = String::from_utf8(out.stdout).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let keyring = Keyring::from_bytes(armored.as_bytes()).unwrap();
    verify_inrelease(signer.clearsign(RELEASE).as_bytes(), &keyring).unwrap();
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(dir.path())
        .args(["--kill", "all"])
        .output();
}

/// gpgv, the verifier apt runs, gives the seeded test signer's messages the same verdicts.
#[test]
fn test_signer_messages_get_gpgv_verdicts() {
    let signer = TestSigner::generate(5);
    let dir = ScratchDir::new("sig-test-signer");
    let keyring = dir.path().join("keyring.gpg");
    std::fs::write(&keyring, signer.public_keyring_bytes()).unwrap();
    let signed = signer.clearsign(RELEASE);
    let fpr = signer.fingerprint();
    let (_, text) = compare(
        dir.path(),
        "InRelease",
        signed.as_bytes(),
        &keyring,
        &[Status::Good(fpr.clone())],
    );
    assert_eq!(text.unwrap(), RELEASE);
    let tampered = signed.replace("main/binary", "evil/binary");
    compare(
        dir.path(),
        "Tampered",
        tampered.as_bytes(),
        &keyring,
        &[Status::Bad(key_id(&fpr))],
    )
    .1
    .unwrap_err();
}
