//! The report signing key: an ed25519 key kept as `agent.state_dir/report.key`, made on the
//! first run and reloaded on later ones, or one per process without a state dir.
//!
//! The file is JSON (`gpulse.report-key/v1`: the 32-byte seed in hex and when it was made),
//! written with mode 0600 to `report.key.tmp`, synced and renamed into place, so it is never
//! half-written. The seed comes from the operating system (`getrandom`). Nothing here logs
//! the seed: [`ReportKey`]'s `Debug` shows the public key only.
//!
//! A key file that exists but is malformed, or that its group or others may read or write, is
//! refused (an error, not replaced: it may be the only copy of a key whose public half is
//! registered somewhere); reports are then off (`/v1/report` answers 503) until an operator
//! fixes it. A directory where no key can be written gives a per-process key with a warning,
//! as no state dir does: its reports cannot chain across restarts.
//!
//! Rotation: stop gpulse, move `report.key` aside, start it: a new key is made and a new chain
//! begins (see `reporter`); reports signed with the old key stay verifiable with the old
//! public key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::files::{DevNull, read_small_file};

/// The key file inside `agent.state_dir`.
pub const KEY_FILE: &str = "report.key";

/// Schema id of the key file.
pub const KEY_SCHEMA: &str = "gpulse.report-key/v1";

/// The signature algorithm, as reports name it.
pub const ALG: &str = "ed25519";

/// The key file as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    schema: String,
    alg: String,
    /// RFC 3339.
    created_at: String,
    /// The 32-byte ed25519 seed, hex.
    seed: String,
}

/// The signing key and what `/v1/identity` says about it.
pub struct ReportKey {
    signing: SigningKey,
    /// RFC 3339: when the key was made.
    created_at: String,
    /// Where the key is kept; `None` for a per-process key.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for ReportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportKey")
            .field("fingerprint", &self.fingerprint())
            .field("created_at", &self.created_at)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReportKey {
    /// A key from `seed`, made at `created_at` (RFC 3339).
    pub fn from_seed(seed: [u8; 32], created_at: String) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
            created_at,
            path: None,
        }
    }

    /// A fresh key from the operating system's random source, made at `now`.
    pub fn generate(now: SystemTime) -> Result<Self, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no random seed from the OS: {e}"))?;
        let key = Self::from_seed(seed, rfc3339(now));
        seed.fill(0);
        Ok(key)
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex(self.public().as_bytes())
    }

    /// The public key, standard base64.
    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public().as_bytes())
    }

    /// `SHA256:` and the hex SHA-256 of the public key's 32 bytes.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.public().as_bytes())
    }

    /// When the key was made, RFC 3339.
    pub fn created_at(&self) -> &str {
        &self.created_at
    }

    /// The key file, `None` for a per-process key.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }
}

/// `SHA256:` and the hex SHA-256 of a public key's bytes.
pub fn fingerprint(public: &[u8]) -> String {
    format!("SHA256:{}", hex(&Sha256::digest(public)))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Bytes from hex (either case); `None` for an odd length or another character.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    let t = if t < UNIX_EPOCH { UNIX_EPOCH } else { t };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What [`load_or_create`] found: the key, and a warning to log when it is a per-process one.
#[derive(Debug)]
pub struct Loaded {
    pub key: ReportKey,
    pub warning: Option<String>,
}

/// The key in `dir` (`agent.state_dir`), made there when missing; a per-process key with a
/// warning without a dir or when none can be written there; an error for a key file that is
/// malformed or readable by others (see the module doc). Blocking: file I/O.
pub fn load_or_create(dir: Option<&Path>, now: SystemTime) -> Result<Loaded, String> {
    let Some(dir) = dir else {
        return Ok(Loaded {
            key: ReportKey::generate(now)?,
            warning: Some(
                "agent.state_dir is not set: reports are signed with a key made for this process only; they cannot chain across restarts"
                    .to_owned(),
            ),
        });
    };
    let path = dir.join(KEY_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => load(&path).map(|key| Loaded { key, warning: None }),
        // NotADirectory: a file stands where the directory should be; creating fails below.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            let mut key = ReportKey::generate(now)?;
            match write(dir, &key) {
                Ok(()) => {
                    key.path = Some(path);
                    Ok(Loaded { key, warning: None })
                }
                Err(e) => Ok(Loaded {
                    key,
                    warning: Some(format!(
                        "cannot keep the report key in {}: {e}; reports are signed with a key made for this process only and cannot chain across restarts",
                        path.display()
                    )),
                }),
            }
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Reads the key file at `path`: a regular file of mode 0600 (or stricter), well formed.
pub fn load(path: &Path) -> Result<ReportKey, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let (bytes, meta) =
        read_small_file(path, DevNull::Refused).map_err(|e| format!("{shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: a signing key others can read is refused; run `chmod 600 {shown}` if no one else read it, else move it aside to make a new key"
        ));
    }
    let malformed = |why: &str| {
        format!("{shown} is not a gpulse report key ({why}); move it aside to make a new one")
    };
    let file: KeyFile = serde_json::from_slice(&bytes).map_err(|_| malformed("not its JSON"))?;
    if file.schema != KEY_SCHEMA || file.alg != ALG {
        return Err(malformed("another schema or algorithm"));
    }
    if humantime::parse_rfc3339(&file.created_at).is_err() {
        return Err(malformed("created_at is not RFC 3339"));
    }
    let seed: [u8; 32] = unhex(&file.seed)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| malformed("the seed is not 32 bytes of hex"))?;
    let mut key = ReportKey::from_seed(seed, file.created_at);
    key.path = Some(path.to_path_buf());
    Ok(key)
}

/// Writes `key` to `dir/report.key` (mode 0600) through a synced temporary file and a rename.
fn write(dir: &Path, key: &ReportKey) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = KeyFile {
        schema: KEY_SCHEMA.to_owned(),
        alg: ALG.to_owned(),
        created_at: key.created_at.clone(),
        seed: hex(key.signing.as_bytes()),
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    text.push(b'\n');
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    // A leftover `.tmp` is a write cut short: never a key that was used.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&text)?;
            f.sync_all()
        });
    text.fill(0);
    written.map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(KEY_FILE))
        .map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A public key given to `gpulse verify --pubkey`: 64 hex digits, standard base64 of 32
/// bytes, or a `gpulse.identity/v1` document (`/v1/identity`), whose `public_key.hex` is read.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    let bytes = if text.starts_with('{') {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let hex_key = doc
            .pointer("/public_key/hex")
            .and_then(|v| v.as_str())
            .ok_or("a JSON public key must be a gpulse.identity/v1 document with public_key.hex")?;
        unhex(hex_key).ok_or("public_key.hex is not hex")?
    } else if text.len() == 64 {
        unhex(text).ok_or("64 characters but not hex")?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "neither 64 hex digits nor base64 of 32 bytes")?
    };
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 public key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_key_is_made_0600_once_and_reloaded_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(Some(dir.path()), SystemTime::now()).unwrap();
        assert!(first.warning.is_none());
        let path = dir.path().join(KEY_FILE);
        assert_eq!(mode(&path), 0o600);
        assert!(!dir.path().join("report.key.tmp").exists());
        let again = load_or_create(Some(dir.path()), SystemTime::now()).unwrap();
        assert_eq!(first.key.fingerprint(), again.key.fingerprint());
        assert_eq!(first.key.created_at(), again.key.created_at());
        assert_eq!(again.key.path(), Some(path.as_path()));
        // The seed is never in the Debug output.
        let text = std::fs::read_to_string(&path).unwrap();
        let seed = text.split("\"seed\": \"").nth(1).unwrap()[..64].to_owned();
        assert!(!format!("{:?}", again.key).contains(&seed));
        assert!(format!("{:?}", again.key).contains(&again.key.fingerprint()));
    }

    #[test]
    fn a_key_others_can_read_or_a_malformed_one_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create(Some(dir.path()), SystemTime::now()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(Some(dir.path()), SystemTime::now()).unwrap_err();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let back = load_or_create(Some(dir.path()), SystemTime::now()).unwrap();
        assert_eq!(back.key.fingerprint(), made.key.fingerprint());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        for bad in [
            "not json",
            r#"{"schema":"gpulse.report-key/v1","alg":"ed25519","created_at":"2026-01-01T00:00:00Z","seed":"abcd"}"#,
            r#"{"schema":"x","alg":"ed25519","created_at":"2026-01-01T00:00:00Z","seed":"00"}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load_or_create(Some(dir.path()), SystemTime::now()).unwrap_err();
            assert!(e.contains("not a gpulse report key"), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad, "replaced");
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(load_or_create(Some(dir.path()), SystemTime::now()).is_err());
    }

    #[test]
    fn without_a_dir_or_a_writable_one_the_key_is_per_process_with_a_warning() {
        let none = load_or_create(None, SystemTime::now()).unwrap();
        assert!(none.warning.unwrap().contains("agent.state_dir is not set"));
        assert!(none.key.path().is_none());
        let other = load_or_create(None, SystemTime::now()).unwrap();
        assert_ne!(none.key.fingerprint(), other.key.fingerprint());
        let file = tempfile::NamedTempFile::new().unwrap();
        // A regular file where the directory should be.
        let blocked = load_or_create(Some(&file.path().join("sub")), SystemTime::now()).unwrap();
        assert!(
            blocked
                .warning
                .unwrap()
                .contains("cannot keep the report key")
        );
    }

    #[test]
    fn public_keys_parse_from_hex_base64_and_an_identity_document() {
        let key = ReportKey::from_seed([7; 32], "2026-01-01T00:00:00Z".to_owned());
        let public = key.public();
        assert_eq!(parse_public_key(&key.public_hex()).unwrap(), public);
        assert_eq!(
            parse_public_key(&format!(" {}\n", key.public_hex().to_uppercase())).unwrap(),
            public
        );
        assert_eq!(parse_public_key(&key.public_base64()).unwrap(), public);
        let doc = format!(
            r#"{{"schema":"gpulse.identity/v1","public_key":{{"hex":"{}"}}}}"#,
            key.public_hex()
        );
        assert_eq!(parse_public_key(&doc).unwrap(), public);
        for bad in [
            "",
            "zz",
            "{}",
            &key.public_hex()[..62],
            "{\"public_key\":{\"hex\":\"00\"}}",
        ] {
            assert!(parse_public_key(bad).is_err(), "{bad}");
        }
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert_eq!(key.fingerprint().len(), 7 + 64);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("0A"), Some(vec![10]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("éé"), None);
    }
}
