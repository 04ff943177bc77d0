//! Password files in Mosquitto's format, so a `password_file` written by
//! `mosquitto_passwd` works unchanged and one written by `fulmar passwd` works in Mosquitto.
//!
//! One `user:hash` line per user; blank lines and lines starting with `#` are ignored. The
//! two hash formats Mosquitto writes (checked against Debian's `mosquitto_passwd` 2.0):
//! - `$7$ROUNDS$SALT$HASH`: PBKDF2-HMAC-SHA512 with ROUNDS iterations over the password
//!   and the salt's bytes (what `mosquitto_passwd` writes since 2.0, with 101 rounds and a
//!   12-byte salt).
//! - `$6$SALT$HASH`: one SHA-512 over the password followed by the salt's bytes (1.x).
//!
//! SALT and HASH are standard Base64 with padding; HASH is 64 bytes. `fulmar passwd` writes
//! `$7$` with [`DEFAULT_ROUNDS`] rounds and a 16-byte salt from the operating system.
//! Comparisons take the same time whichever byte differs.

use std::collections::HashMap;
use std::fmt;

use base64ct::{Base64, Encoding};
use sha2::{Digest, Sha512};

/// PBKDF2-HMAC-SHA512 rounds `fulmar passwd` uses: OWASP's recommendation for this hash
/// (2023). Measured: 0.11 s per check on one core of the 2-core Xeon build machine (release
/// build); a Raspberry Pi 4 core is several times slower. [`super::Auth`] runs it off the
/// broker's task and remembers successes.
pub const DEFAULT_ROUNDS: u32 = 210_000;

/// Salt bytes in the hashes `fulmar passwd` writes: Mosquitto's length, which it insists on.
const SALT_LEN: usize = 12;

/// Bytes of a SHA-512 output, the hash in both formats.
const HASH_LEN: usize = 64;

/// A salted password hash as one line of a password file carries it.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Iterations.
        rounds: u32,
        /// The salt's bytes.
        salt: Vec<u8>,
        /// The derived key.
        hash: [u8; HASH_LEN],
    },
    /// `$6$`: SHA-512 over password and salt, once. Accepted so old files keep working;
    /// `fulmar passwd` never writes it.
    Sha512 {
        /// The salt's bytes.
        salt: Vec<u8>,
        /// The digest.
        hash: [u8; HASH_LEN],
    },
}

// Hashes are not secrets like passwords, but there is no reason to print them.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pbkdf2Sha512 { rounds, .. } => write!(f, "Pbkdf2Sha512 {{ rounds: {rounds} }}"),
            Self::Sha512 { .. } => f.write_str("Sha512"),
        }
    }
}

impl PasswordHash {
    /// Hashes `password` with PBKDF2-HMAC-SHA512, `rounds` iterations and a fresh salt.
    ///
    /// # Errors
    /// When the operating system gives no random bytes.
    pub fn new(password: &[u8], rounds: u32) -> Result<Self, getrandom::Error> {
        let mut salt = vec![0; SALT_LEN];
        getrandom::fill(&mut salt)?;
        let mut hash = [0; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, rounds, &mut hash);
        Ok(Self::Pbkdf2Sha512 { rounds, salt, hash })
    }

    /// Reads the hash part of a password file line (after `user:`).
    ///
    /// # Errors
    /// A message saying what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "7", rounds, salt, hash] => {
                let rounds = rounds
                    .parse::<u32>()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| format!("bad iteration count {rounds:?} in a $7$ hash"))?;
                Ok(Self::Pbkdf2Sha512 {
                    rounds,
                    salt: decode_salt(salt)?,
                    hash: decode_hash(hash)?,
                })
            }
            ["", "6", salt, hash] => Ok(Self::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            ["", kind, ..] => Err(format!(
                "unknown hash type ${kind}$ (only Mosquitto's $7$ PBKDF2-SHA512 and $6$ \
                 SHA-512 are accepted)"
            )),
            _ => Err(
                "not a hashed password: store a hash made by `fulmar passwd` or \
                      `mosquitto_passwd`, never the password itself"
                    .to_owned(),
            ),
        }
    }

    /// Iterations of SHA-512 work a verification costs (1 for `$6$`).
    fn rounds(&self) -> u32 {
        match self {
            Self::Pbkdf2Sha512 { rounds, .. } => *rounds,
            Self::Sha512 { .. } => 1,
        }
    }

    /// Whether `password` is the one hashed. Takes the hash's full time either way.
    pub fn verify(&self, password: &[u8]) -> bool {
        let mut computed = [0; HASH_LEN];
        match self {
            Self::Pbkdf2Sha512 { rounds, salt, hash } => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *rounds, &mut computed);
                constant_time_eq(&computed, hash)
            }
            Self::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                computed.copy_from_slice(&digest.finalize());
                constant_time_eq(&computed, hash)
            }
        }
    }
}

/// The file form, as `mosquitto_passwd` writes it.
impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pbkdf2Sha512 { rounds, salt, hash } => write!(
                f,
                "$7${rounds}${}${}",
                Base64::encode_string(salt),
                Base64::encode_string(hash)
            ),
            Self::Sha512 { salt, hash } => write!(
                f,
                "$6${}${}",
                Base64::encode_string(salt),
                Base64::encode_string(hash)
            ),
        }
    }
}

fn decode_salt(text: &str) -> Result<Vec<u8>, String> {
    match Base64::decode_vec(text) {
        Ok(salt) if !salt.is_empty() => Ok(salt),
        _ => Err(format!("bad salt {text:?} (expected Base64)")),
    }
}

fn decode_hash(text: &str) -> Result<[u8; HASH_LEN], String> {
    Base64::decode_vec(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| format!("bad hash {text:?} (expected {HASH_LEN} bytes in Base64)"))
}

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a user name cannot go into a password file, if it cannot.
pub fn check_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        Err("the user name is empty".to_owned())
    } else if user.contains(':') {
        Err(format!(
            "user name {user:?} contains ':', which separates name and hash"
        ))
    } else if user.chars().any(char::is_control) {
        Err(format!("user name {user:?} contains a control character"))
    } else if user.len() > usize::from(u16::MAX) {
        Err("the user name is longer than MQTT allows (65535 bytes)".to_owned())
    } else {
        Ok(())
    }
}

/// The user name of a password file line, or `None` for a blank or comment line.
pub(crate) fn line_user(line: &str) -> Option<&str> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split_once(':').map_or(line, |(user, _)| user))
}

/// A parsed password file: user name to hash.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    /// Verified against for unknown users, so a refusal takes as long whether or not the
    /// user exists.
    decoy: Option<PasswordHash>,
}

impl PasswordFile {
    /// Parses a password file's text.
    ///
    /// # Errors
    /// The first bad line: its number (from 1) and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        let mut parsed = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let Some(user) = line_user(raw) else { continue };
            let Some((_, hash)) = raw.trim_end().split_once(':') else {
                return Err((number, format!("expected user:hash, found {user:?}")));
            };
            check_username(user).map_err(|e| (number, e))?;
            if let Some(first) = lines_of.insert(user.to_owned(), number) {
                return Err((
                    number,
                    format!("user {user:?} appears again (first on line {first})"),
                ));
            }
            let hash = PasswordHash::parse(hash).map_err(|e| (number, e))?;
            parsed.push((user.to_owned(), hash));
        }
        // The decoy costs what the file's slowest hash costs: an unknown user must not be
        // answered faster than a known one.
        let decoy = parsed
            .iter()
            .max_by_key(|(_, hash)| hash.rounds())
            .map(|(_, hash)| hash.clone());
        users.extend(parsed);
        Ok(Self { users, decoy })
    }

    /// Whether `user` exists and `password` is theirs. Slow by design (the hash's rounds):
    /// never call it on the broker's task.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = decoy.verify(password);
                }
                false
            }
        }
    }

    /// How many users the file has.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Debian's `mosquitto_passwd` 2.0.11: `-b pw alice secret1`,
    /// `-b pw bob 'p@ss:w'`, `-H sha512 -b pw carol hello`.
    const MOSQUITTO_FILE: &str = "\
alice:$7$101$Po7Y3IXsW7AykkZe$/STOcMO6wVPMYJ6pZS2Y82V2i4Ckd8DJfJfxLvTVZmk8Q0VrjJK1YN4z0IT8swLOdEyPtrap3zN9jewXudey/w==
bob:$7$101$Ama90RreflJ4oF08$X/q4w611owuhELZoAA8zyHmfVk3x2IR3m6Uo1t/DHuxG8omyjF58Eo9NZTBMvXiuPzk9aovyqbbUxunEaNBOlg==
carol:$6$3V+mqQ9qzGpJQUGi$jL4AHwZhltPwoldr5AU0YhFjshyEUjsL0I4mGMMQ8QmtUyy+xCus/pg8TrcUkipO9dVzvx0BdElZa22PEE2zSg==
";

    #[test]
    fn reads_what_mosquitto_passwd_writes() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(file.len(), 3);
        assert!(file.verify("alice", b"secret1"));
        assert!(file.verify("bob", b"p@ss:w"));
        assert!(file.verify("carol", b"hello"));
        assert!(!file.verify("alice", b"secret2"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("carol", b"hello "));
        assert!(!file.verify("dave", b"secret1"));
    }

    #[test]
    fn writes_mosquitto_format_that_reads_back() {
        let hash = PasswordHash::new(b"s3cret", 1000).unwrap();
        let text = hash.to_string();
        let fields: Vec<&str> = text.split('$').collect();
        assert_eq!(fields[..3], ["", "7", "1000"]);
        assert_eq!(Base64::decode_vec(fields[3]).unwrap().len(), SALT_LEN);
        assert_eq!(Base64::decode_vec(fields[4]).unwrap().len(), HASH_LEN);
        let back = PasswordHash::parse(&text).unwrap();
        assert_eq!(back, hash);
        assert!(back.verify(b"s3cret"));
        assert!(!back.verify(b"s3cret!"));
        // Fresh salt every time.
        assert_ne!(PasswordHash::new(b"s3cret", 1000).unwrap(), hash);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = format!("# users\n\n{MOSQUITTO_FILE}\n   \n");
        assert_eq!(PasswordFile::parse(&text).unwrap().len(), 3);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let cases = [
            ("alice:secret\n", 1, "not a hashed password"),
            ("# c\nalice\n", 2, "expected user:hash"),
            ("a:$5$x$y\n", 1, "unknown hash type $5$"),
            ("a:$7$0$AAAA$AAAA\n", 1, "bad iteration count"),
            ("a:$7$10$!!$AAAA\n", 1, "bad salt"),
            ("a:$6$AAAA$AAAA\n", 1, "bad hash"),
            (":$6$AAAA$AAAA\n", 1, "empty"),
        ];
        for (text, line, message) in cases {
            let (got_line, got) = PasswordFile::parse(text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}: {got}");
            assert!(got.contains(message), "{text:?}: {got}");
        }
        let twice = format!(
            "{MOSQUITTO_FILE}alice:{}\n",
            PasswordHash::new(b"x", 1).unwrap()
        );
        let (line, message) = PasswordFile::parse(&twice).unwrap_err();
        assert_eq!(line, 4);
        assert!(message.contains("first on line 1"), "{message}");
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("a b").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a:b").is_err());
        assert!(check_username("a\nb").is_err());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
