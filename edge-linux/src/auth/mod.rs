//! Authentication and authorization: who may connect (a password file, or a TLS client
//! certificate's identity), and what each client may publish and subscribe to (an ACL
//! file), both in Mosquitto's formats so an installation can move over unchanged.
//!
//! - [`password`]: the password file (`user:$7$…` PBKDF2-SHA512, `user:$6$…` SHA-512).
//! - [`acl`]: the ACL file (`user`, `topic`, `pattern` with `%c` / `%u`).
//! - [`passwd`]: `fulmar passwd FILE USER`, which writes password files.
//! - `admission`: checks a connection's credentials before its CONNECT reaches the broker.
//! - `hooks`: the core's [`Hooks`](fulmar_core::broker::Hooks), answering from all this.
//!
//! ## Slow hashes off the broker's task
//! A password hash is slow on purpose ([`password::DEFAULT_ROUNDS`] rounds of SHA-512,
//! 0.11 s on a server core, several times that on a Raspberry Pi 4), and the core asks
//! [`Hooks::authenticate`](fulmar_core::broker::Hooks::authenticate) from the
//! task that runs the whole broker: hashing there would stall every client for as long.
//! So the hook never hashes. Instead each connection's own task, which reads its bytes,
//! holds them back until its first packet is complete (an `Admission`), decodes it with
//! the core's codec, and when it is a CONNECT checks its user name and password on
//! tokio's blocking pool ([`tokio::task::spawn_blocking`]), at most one check per CPU at a
//! time, so a flood of guesses queues instead of starving the runtime. The verdict is put
//! in a table under the connection's [`ConnectionId`], and only then are the bytes passed
//! on; when the broker decodes the same CONNECT, the hook takes the verdict from the table
//! (the [`ConnectRequest`](fulmar_core::broker::ConnectRequest) names the connection). Only
//! the connection that sent the CONNECT waits for its hash.
//!
//! A verified password is remembered as a keyed SHA-512 digest (the key is random per
//! process) next to its user, so a client that reconnects with the same password, or a
//! fleet that reconnects after a network cut, is answered at once; a wrong password
//! always pays the full hash, and an unknown user costs as much as a known one.
//!
//! Should a verdict be missing anyway (a CONNECT the admission did not see), the hook
//! decides on the broker task itself and logs a warning: slower, never wrong.
//!
//! ## Who may connect
//! | Settings | No user name | User name and password |
//! |---|---|---|
//! | nothing (the default) | accepted (with a warning at startup) | accepted as given, unchecked |
//! | `password_file` | refused, 0x87 Not authorized (3.x: 5) | checked: 0x86 Bad user name or password (3.x: 4) when wrong |
//! | `password_file`, `allow_anonymous = true` | accepted | checked |
//! | `allow_anonymous = false`, no file | refused | refused (nothing to check against) |
//!
//! A client whose TLS listener takes the certificate's identity as its user name
//! (`Admission::new`'s `identity`, like Mosquitto's `use_identity_as_username`) is
//! accepted under that name: the certificate, verified by the TLS layer, is the
//! credential, and the CONNECT's user name and password are not used.
//!
//! ## Reloading
//! SIGHUP re-reads both files ([`Auth::reload`]); the rules are swapped whole behind a
//! lock that each check takes only to clone an `Arc`, and remembered passwords are
//! forgotten. A file with a bad line leaves the previous rules in place.
//!
//! ## What they may do
//! With no ACL file every client may publish and subscribe to everything, except that no
//! client may publish to `$SYS/…` (the broker's own topics). With an ACL file, what it
//! grants and nothing else; see [`acl`].

pub mod acl;
pub mod passwd;
pub mod password;

mod admission;
mod hooks;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use fulmar_core::broker::ConnectionId;
use fulmar_core::codec::ReasonCode;
use sha2::{Digest, Sha512};
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

pub(crate) use admission::Admission;
pub use hooks::{EdgeHooks, SessionBudget};

use acl::Acl;
use password::PasswordFile;

/// The settings: the `auth` section of the configuration (`password_file`, `acl_file`,
/// `allow_anonymous`).
pub use crate::config::Auth as Settings;

/// Why the authentication files could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        /// "password file" or "ACL file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A line of a file is wrong.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// How long an unclaimed verdict is kept: the broker claims it within milliseconds, unless
/// it refused the CONNECT before asking (a bad client identifier, say).
const VERDICT_TTL: Duration = Duration::from_secs(60);
/// Verdicts held before old ones are swept.
const VERDICT_SWEEP: usize = 64;

/// What was decided about one CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// `Success`, or the CONNACK refusal.
    pub(crate) code: ReasonCode,
    /// The user name the session runs under.
    pub(crate) username: Option<String>,
}

impl Decision {
    fn accept(username: Option<&str>) -> Self {
        Self {
            code: ReasonCode::Success,
            username: username.map(str::to_owned),
        }
    }

    fn refuse(code: ReasonCode) -> Self {
        Self {
            code,
            username: None,
        }
    }
}

/// What a client offers to be let in.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Credentials<'a> {
    /// Its TLS client certificate's identity, when its listener takes it as user name.
    pub(crate) identity: Option<&'a str>,
    /// The CONNECT's user name.
    pub(crate) username: Option<&'a str>,
    /// The CONNECT's password.
    pub(crate) password: Option<&'a [u8]>,
}

/// A decision the admission made, waiting for the hook.
#[derive(Debug)]
struct Verdict {
    /// The CONNECT's user name, to check the hook is asked about the same CONNECT.
    connect_username: Option<String>,
    decision: Decision,
    at: Instant,
}

/// What the files say, replaced whole when they are read again ([`Auth::reload`]).
#[derive(Debug, Default)]
struct Files {
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
    /// Counts reloads: a password checked against an older generation is not remembered.
    generation: u64,
}

/// Everything authentication and authorization know, shared by the hooks (on the broker
/// task) and the admissions (on the connection tasks).
#[derive(Debug)]
pub struct Auth {
    files: RwLock<Arc<Files>>,
    /// The generation of `files`, read without the lock by the hooks, which keep the
    /// rules between checks ([`Auth::refresh`]).
    generation: AtomicU64,
    allow_anonymous: bool,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    /// Largest packet the broker accepts: a first packet announcing more is not waited for.
    max_packet_size: usize,
    /// Verdicts of the admissions, for the hook.
    /// By shard and connection (connection ids are per shard's core).
    verdicts: Mutex<HashMap<(usize, ConnectionId), Verdict>>,
    /// User name to the keyed digest of the last password verified for it.
    verified: Mutex<HashMap<String, [u8; 64]>>,
    /// The key of those digests, random per process (`None`: no cache).
    cache_key: Option<[u8; 32]>,
    /// Password hashes running at once.
    hashing: Semaphore,
}

impl Auth {
    /// Reads the files `settings` names.
    ///
    /// # Errors
    /// When a file cannot be read, or has a bad line (its number is in the error).
    pub fn load(settings: &Settings, max_packet_size: u32) -> Result<Self, Error> {
        let (passwords, acl) = read_files(
            settings.password_file.as_deref(),
            settings.acl_file.as_deref(),
        )?;
        Ok(Self::with(settings, passwords, acl, max_packet_size))
    }

    /// Reads the files again and puts their rules in place at once for every later
    /// CONNECT, PUBLISH and SUBSCRIBE (what is already subscribed stays); remembered
    /// passwords are forgotten. On error the previous rules stay.
    ///
    /// # Errors
    /// When a file cannot be read, or has a bad line.
    pub fn reload(&self) -> Result<(), Error> {
        let (passwords, acl) = read_files(self.password_file.as_deref(), self.acl_file.as_deref())?;
        {
            let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
            let generation = files.generation + 1;
            *files = Arc::new(Files {
                passwords,
                acl,
                generation,
            });
            self.generation.store(generation, Ordering::Release);
        }
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    /// Reloads the files on every SIGHUP, as Mosquitto does, logging the outcome; runs
    /// until the runtime stops.
    pub async fn reload_on_hangup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP: the auth files cannot be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            if self.password_file.is_none() && self.acl_file.is_none() {
                info!("SIGHUP: no password or ACL file to reload");
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    let users = self.files().passwords.as_ref().map_or(0, PasswordFile::len);
                    info!(users, "SIGHUP: password and ACL files reloaded");
                }
                Err(error) => error!(%error, "SIGHUP: reload failed; the previous rules stay"),
            }
        }
    }

    /// Allows everything, as a broker with no settings does.
    pub fn open() -> Self {
        Self::with(&Settings::default(), None, None, u32::MAX)
    }

    fn with(
        settings: &Settings,
        passwords: Option<PasswordFile>,
        acl: Option<Acl>,
        max_packet_size: u32,
    ) -> Self {
        let mut key = [0; 32];
        // Without OS randomness the cache stays off: a known key would make its digests
        // as cheap to attack as unsalted hashes.
        let cache_key = getrandom::fill(&mut key).is_ok().then_some(key);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            allow_anonymous: settings.anonymous_allowed(),
            files: RwLock::new(Arc::new(Files {
                passwords,
                acl,
                generation: 0,
            })),
            generation: AtomicU64::new(0),
            password_file: settings.password_file.clone(),
            acl_file: settings.acl_file.clone(),
            max_packet_size: max_packet_size as usize,
            verdicts: Mutex::default(),
            verified: Mutex::default(),
            cache_key,
            hashing: Semaphore::new(cpus),
        }
    }

    /// Logs what the settings mean, with a warning for every open door.
    pub fn log_startup(&self) {
        let files = self.files();
        match (&self.password_file, &files.passwords) {
            (Some(path), Some(file)) => info!(
                users = file.len(),
                "clients authenticate with the password file {}",
                path.display()
            ),
            _ if self.allow_anonymous => warn!(
                "anonymous access is allowed: any client may connect, publish and subscribe. \
                 To require passwords, create a password file (`fulmar passwd FILE USER`) and \
                 set auth.password_file = \"FILE\" in the --config file (or \
                 FULMAR_AUTH__PASSWORD_FILE=FILE); auth.acl_file limits who uses which topics"
            ),
            _ => warn!(
                "anonymous access is off (auth.allow_anonymous = false) and no \
                 auth.password_file is set: no client can connect (except with a TLS client \
                 certificate taken as user name)"
            ),
        }
        if files.passwords.is_some() && self.allow_anonymous {
            warn!(
                "anonymous access is allowed alongside the password file (allow_anonymous = \
                 true): clients without a user name connect unchecked"
            );
        }
        match (&self.acl_file, &files.acl) {
            (Some(path), Some(_)) => {
                info!("topic access follows the ACL file {}", path.display());
                if files.passwords.is_none() {
                    warn!(
                        "the ACL file's user rules trust unchecked user names: without a \
                         password file any client can claim any user name"
                    );
                }
            }
            _ => info!("no ACL file: every client may publish and subscribe to every topic"),
        }
    }

    /// Whether CONNECTs need a password hash checked, so admissions must hold them.
    fn checks_passwords(&self) -> bool {
        self.password_file.is_some()
    }

    /// What the files say now.
    fn files(&self) -> Arc<Files> {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The decision for `credentials` if it needs no password hash, else `None`.
    fn quick(&self, credentials: Credentials<'_>) -> Option<Decision> {
        if let Some(identity) = credentials.identity {
            return Some(Decision::accept(Some(identity)));
        }
        let Some(username) = credentials.username else {
            return Some(if self.allow_anonymous {
                Decision::accept(None)
            } else {
                Decision::refuse(ReasonCode::NotAuthorized)
            });
        };
        if !self.checks_passwords() {
            return Some(if self.allow_anonymous {
                Decision::accept(Some(username))
            } else {
                Decision::refuse(ReasonCode::NotAuthorized)
            });
        }
        let Some(password) = credentials.password else {
            return Some(Decision::refuse(ReasonCode::BadUserNameOrPassword));
        };
        let digest = self.cache_digest(username, password)?;
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified
            .get(username)
            .filter(|known| password::constant_time_eq(*known, &digest))
            .map(|_| Decision::accept(Some(username)))
    }

    /// Decides about `credentials`, hashing the password if it must: slow, so never on
    /// the broker's task except as a fallback.
    pub(crate) fn decide(&self, credentials: Credentials<'_>) -> Decision {
        if let Some(decision) = self.quick(credentials) {
            return decision;
        }
        let files = self.files();
        let (Some(file), Some(username), Some(password)) =
            (&files.passwords, credentials.username, credentials.password)
        else {
            return Decision::refuse(ReasonCode::NotAuthorized);
        };
        if !file.verify(username, password) {
            return Decision::refuse(ReasonCode::BadUserNameOrPassword);
        }
        if let Some(digest) = self.cache_digest(username, password) {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked under the cache's lock, which a reload takes to clear the cache
            // after it replaced the files: a password of a file replaced meanwhile is not
            // remembered.
            if self.files().generation == files.generation {
                verified.insert(username.to_owned(), digest);
            }
        }
        Decision::accept(Some(username))
    }

    /// [`Auth::decide`] without blocking the caller's task: a hash runs on the blocking
    /// pool, one per CPU at a time.
    pub(crate) async fn decide_off_task(
        self: &Arc<Self>,
        identity: Option<String>,
        username: Option<String>,
        password: Option<Vec<u8>>,
    ) -> Decision {
        let credentials = Credentials {
            identity: identity.as_deref(),
            username: username.as_deref(),
            password: password.as_deref(),
        };
        if let Some(decision) = self.quick(credentials) {
            return decision;
        }
        let Ok(_permit) = self.hashing.acquire().await else {
            return Decision::refuse(ReasonCode::ServerUnavailable);
        };
        let auth = self.clone();
        tokio::task::spawn_blocking(move || {
            auth.decide(Credentials {
                identity: identity.as_deref(),
                username: username.as_deref(),
                password: password.as_deref(),
            })
        })
        .await
        .unwrap_or_else(|_| Decision::refuse(ReasonCode::ServerUnavailable))
    }

    /// A digest of `username` and `password` under the process's random key.
    fn cache_digest(&self, username: &str, password: &[u8]) -> Option<[u8; 64]> {
        let mut digest = Sha512::new();
        digest.update(self.cache_key?);
        digest.update((username.len() as u64).to_be_bytes());
        digest.update(username.as_bytes());
        digest.update(password);
        Some(digest.finalize().into())
    }

    /// Leaves the admission's decision about connection `id`'s CONNECT for the hook.
    fn record(
        &self,
        id: (usize, ConnectionId),
        connect_username: Option<String>,
        decision: Decision,
    ) {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if verdicts.len() >= VERDICT_SWEEP {
            verdicts.retain(|_, v| now.duration_since(v.at) < VERDICT_TTL);
        }
        verdicts.insert(
            id,
            Verdict {
                connect_username,
                decision,
                at: now,
            },
        );
    }

    /// Takes the admission's decision about connection `id`'s CONNECT, if it made one
    /// for a CONNECT with this user name.
    fn claim(&self, id: (usize, ConnectionId), username: Option<&str>) -> Option<Decision> {
        let verdict = self
            .verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)?;
        (verdict.connect_username.as_deref() == username).then_some(verdict.decision)
    }

    /// The rules in place, through `held`, a copy its owner keeps between checks: taken
    /// again only after a reload. Checking a PUBLISH then costs one atomic load rather
    /// than the lock and two reference-count updates, which showed in profiles (and
    /// bounce a cache line between shards).
    fn refresh<'a>(&self, held: &'a mut Arc<Files>) -> &'a Files {
        if self.generation.load(Ordering::Acquire) != held.generation {
            *held = self.files();
        }
        held
    }
}

impl Files {
    /// Whether the ACL (if any) lets `client` publish to `topic`.
    fn may_publish(&self, client: acl::Client<'_>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.may_publish(client, topic))
    }

    /// Whether the ACL (if any) lets `client` subscribe to `filter`.
    fn may_subscribe(&self, client: acl::Client<'_>, filter: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.may_subscribe(client, filter))
    }
}

/// Reads both files (each if named).
fn read_files(
    password_file: Option<&Path>,
    acl_file: Option<&Path>,
) -> Result<(Option<PasswordFile>, Option<Acl>), Error> {
    let passwords = password_file
        .map(|path| load_file(path, "password file", PasswordFile::parse))
        .transpose()?;
    let acl = acl_file
        .map(|path| load_file(path, "ACL file", Acl::parse))
        .transpose()?;
    Ok((passwords, acl))
}

/// Reads and parses one file, turning a bad line into an error that names file and line.
fn load_file<T>(
    path: &Path,
    what: &'static str,
    parse: impl FnOnce(&str) -> Result<T, (usize, String)>,
) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, message)| Error::Syntax {
        path: path.to_owned(),
        line,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Auth` with a password file of this text.
    pub(super) fn auth_with(passwords: &str, allow_anonymous: Option<bool>) -> Auth {
        let settings = Settings {
            password_file: Some("passwords".into()),
            acl_file: None,
            allow_anonymous,
        };
        let file = PasswordFile::parse(passwords).unwrap();
        Auth::with(&settings, Some(file), None, 1024)
    }

    /// A password file line for `user` (with a quick hash).
    pub(super) fn user_line(user: &str, password: &str) -> String {
        let hash = password::PasswordHash::new(password.as_bytes(), 1000).unwrap();
        format!("{user}:{hash}\n")
    }

    fn creds<'a>(username: Option<&'a str>, password: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            identity: None,
            username,
            password: password.map(str::as_bytes),
        }
    }

    #[test]
    fn no_settings_allow_anyone() {
        let auth = Auth::open();
        assert_eq!(auth.decide(creds(None, None)), Decision::accept(None));
        assert_eq!(
            auth.decide(creds(Some("u"), Some("x"))),
            Decision::accept(Some("u"))
        );
    }

    #[test]
    fn a_password_file_closes_anonymous_access_unless_allowed() {
        let auth = auth_with(&user_line("alice", "pw"), None);
        let cases = [
            (creds(None, None), ReasonCode::NotAuthorized),
            (creds(Some("alice"), Some("pw")), ReasonCode::Success),
            (
                creds(Some("alice"), Some("wrong")),
                ReasonCode::BadUserNameOrPassword,
            ),
            (
                creds(Some("alice"), None),
                ReasonCode::BadUserNameOrPassword,
            ),
            (
                creds(Some("bob"), Some("pw")),
                ReasonCode::BadUserNameOrPassword,
            ),
        ];
        for (credentials, code) in cases {
            assert_eq!(auth.decide(credentials).code, code, "{credentials:?}");
        }
        let open = auth_with(&user_line("alice", "pw"), Some(true));
        assert_eq!(open.decide(creds(None, None)).code, ReasonCode::Success);
        assert_eq!(
            open.decide(creds(Some("alice"), Some("wrong"))).code,
            ReasonCode::BadUserNameOrPassword
        );
    }

    #[test]
    fn a_verified_password_is_remembered_a_wrong_one_is_not() {
        let auth = auth_with(&user_line("alice", "pw"), None);
        assert_eq!(auth.quick(creds(Some("alice"), Some("pw"))), None);
        assert_eq!(
            auth.decide(creds(Some("alice"), Some("pw"))).code,
            ReasonCode::Success
        );
        assert_eq!(
            auth.quick(creds(Some("alice"), Some("pw"))),
            Some(Decision::accept(Some("alice")))
        );
        assert_eq!(auth.quick(creds(Some("alice"), Some("pw2"))), None);
        assert_eq!(
            auth.decide(creds(Some("alice"), Some("pw2"))).code,
            ReasonCode::BadUserNameOrPassword
        );
    }

    #[test]
    fn a_certificate_identity_is_the_user_name() {
        let auth = auth_with(&user_line("alice", "pw"), None);
        let credentials = Credentials {
            identity: Some("device-7"),
            username: Some("alice"),
            password: Some(b"wrong"),
        };
        assert_eq!(auth.decide(credentials), Decision::accept(Some("device-7")));
    }

    #[test]
    fn verdicts_are_claimed_once_for_the_same_user() {
        let auth = Auth::open();
        let mut broker = fulmar_core::broker::Broker::<fulmar_core::broker::Growable>::new(
            fulmar_core::broker::Config::default(),
            1,
        );
        let now = fulmar_core::time::Instant::ZERO;
        let a = broker.handle_connect(now).unwrap();
        let b = broker.handle_connect(now).unwrap();
        auth.record(
            (0, a),
            Some("alice".into()),
            Decision::accept(Some("alice")),
        );
        auth.record((0, b), None, Decision::refuse(ReasonCode::NotAuthorized));
        assert_eq!(auth.claim((0, b), Some("mallory")), None);
        assert_eq!(
            auth.claim((0, a), Some("alice")),
            Some(Decision::accept(Some("alice")))
        );
        assert_eq!(auth.claim((0, a), Some("alice")), None);
    }

    #[test]
    fn a_reload_replaces_the_rules_and_forgets_remembered_passwords() {
        let dir = std::env::temp_dir().join(format!("fulmar-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (passwords, acl) = (dir.join("passwords"), dir.join("acl"));
        std::fs::write(&passwords, user_line("alice", "one")).unwrap();
        std::fs::write(&acl, "user alice\ntopic a\n").unwrap();
        let settings = Settings {
            password_file: Some(passwords.clone()),
            acl_file: Some(acl.clone()),
            allow_anonymous: None,
        };
        let auth = Auth::load(&settings, 1024).unwrap();
        let alice = acl::Client {
            client_id: "c",
            username: Some("alice"),
        };
        assert_eq!(
            auth.decide(creds(Some("alice"), Some("one"))).code,
            ReasonCode::Success
        );
        assert!(auth.files().may_publish(alice, "a") && !auth.files().may_publish(alice, "b"));

        std::fs::write(&passwords, user_line("alice", "two")).unwrap();
        std::fs::write(&acl, "user alice\ntopic b\n").unwrap();
        auth.reload().unwrap();
        assert_eq!(
            auth.decide(creds(Some("alice"), Some("one"))).code,
            ReasonCode::BadUserNameOrPassword
        );
        assert_eq!(
            auth.decide(creds(Some("alice"), Some("two"))).code,
            ReasonCode::Success
        );
        assert!(!auth.files().may_publish(alice, "a") && auth.files().may_publish(alice, "b"));

        // A broken file: an error, and the rules stay.
        std::fs::write(&acl, "topics b\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.files().may_publish(alice, "b"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_and_bad_files_are_errors() {
        let missing = Settings {
            password_file: Some("/nonexistent/fulmar-passwords".into()),
            ..Settings::default()
        };
        let error = Auth::load(&missing, 1024).unwrap_err();
        assert!(error.to_string().contains("password file"), "{error}");
        let dir = std::env::temp_dir().join(format!("fulmar-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = dir.join("acl");
        std::fs::write(&acl, "user a\ntopic read a/#/b\n").unwrap();
        let bad = Settings {
            acl_file: Some(acl.clone()),
            ..Settings::default()
        };
        let error = Auth::load(&bad, 1024).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            error.starts_with(&format!("{}:2: ", acl.display())),
            "{error}"
        );
    }
}
