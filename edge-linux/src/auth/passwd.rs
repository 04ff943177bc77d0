//! `fulmar passwd FILE USER`: adds a user to a password file, changes their password, or
//! deletes them, like `mosquitto_passwd` (whose `-b`, `-c` and `-D` it accepts), writing
//! PBKDF2-SHA512 hashes that Mosquitto reads too.
//!
//! The password comes from, in order: `-b FILE USER PASSWORD` or `--password PASSWORD`
//! (for scripts; other local users can see it in `ps`), standard input's first line when
//! that is not a terminal (`printf '%s\n' "$PW" | fulmar passwd FILE USER`), or a prompt on
//! the terminal, twice, without echo.
//!
//! The file is replaced atomically (a new file beside it, synced, then renamed over it),
//! keeps the old file's permissions, and is created readable by its owner only. Every other
//! line (users, comments) stays as it was; a file with a bad line is not touched.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::password::{DEFAULT_ROUNDS, PasswordFile, PasswordHash, check_username, line_user};

/// The `fulmar passwd` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// The password file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The user name (no `:`).
    #[arg(value_name = "USER")]
    pub user: String,

    /// With -b: the password.
    #[arg(value_name = "PASSWORD", requires = "batch")]
    pub batch_password: Option<String>,

    /// Take the password from the command line, after USER (as `mosquitto_passwd -b`).
    #[arg(short = 'b', long = "batch", requires = "batch_password")]
    pub batch: bool,

    /// The password.
    #[arg(long = "password", value_name = "PASSWORD", conflicts_with = "batch")]
    pub password: Option<String>,

    /// Delete USER instead.
    #[arg(
        short = 'D',
        long = "delete",
        conflicts_with_all = ["batch", "password", "create"]
    )]
    pub delete: bool,

    /// Start a new file, replacing FILE if it exists.
    #[arg(short = 'c', long = "create")]
    pub create: bool,

    /// PBKDF2 iterations: more is slower for attackers and for every CONNECT.
    #[arg(
        long = "iterations",
        value_name = "N",
        default_value_t = DEFAULT_ROUNDS,
        value_parser = clap::value_parser!(u32).range(1000..)
    )]
    pub iterations: u32,
}

/// Why `fulmar passwd` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file has a bad line; it is left alone.
    #[error("{}:{line}: {message} (fix or remove that line first)", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The new file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// `-D` for a user the file does not have.
    #[error("user {user:?} is not in {}", path.display())]
    NoSuchUser {
        /// The file.
        path: PathBuf,
        /// The user.
        user: String,
    },
    /// A bad user name or password, or the two entries differ.
    #[error("{0}")]
    Input(String),
    /// No password could be read.
    #[error("cannot read the password: {0}")]
    Prompt(#[source] io::Error),
    /// No salt could be drawn.
    #[error("no random bytes from the operating system: {0}")]
    Random(getrandom::Error),
}

/// Runs `fulmar passwd`; returns what was done, for the user.
///
/// # Errors
/// See [`PasswdError`]; the file is unchanged after any of them.
pub fn run(args: &PasswdArgs) -> Result<String, PasswdError> {
    check_username(&args.user).map_err(PasswdError::Input)?;
    let path = &args.file;
    let existing = if args.create {
        String::new()
    } else {
        match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound && !args.delete => String::new(),
            Err(source) => {
                return Err(PasswdError::Read {
                    path: path.clone(),
                    source,
                });
            }
        }
    };
    PasswordFile::parse(&existing).map_err(|(line, message)| PasswdError::Syntax {
        path: path.clone(),
        line,
        message,
    })?;
    let mut lines: Vec<&str> = existing.lines().collect();
    let position = lines.iter().position(|l| line_user(l) == Some(&args.user));
    let entry;
    let done = if args.delete {
        let Some(index) = position else {
            return Err(PasswdError::NoSuchUser {
                path: path.clone(),
                user: args.user.clone(),
            });
        };
        lines.remove(index);
        format!("deleted user {:?} from {}", args.user, path.display())
    } else {
        let password = password(args)?;
        let hash =
            PasswordHash::new(password.as_bytes(), args.iterations).map_err(PasswdError::Random)?;
        entry = format!("{}:{hash}", args.user);
        let verb = match position {
            Some(index) => {
                lines[index] = &entry;
                "changed the password of"
            }
            None => {
                lines.push(&entry);
                "added"
            }
        };
        format!("{verb} user {:?} in {}", args.user, path.display())
    };
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    replace(path, text.as_bytes()).map_err(|source| PasswdError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(done)
}

/// The new password, from wherever the command line says.
fn password(args: &PasswdArgs) -> Result<String, PasswdError> {
    let password = match (&args.batch_password, &args.password) {
        (Some(password), _) | (None, Some(password)) => password.clone(),
        (None, None) if !io::stdin().is_terminal() => {
            let mut line = String::new();
            io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(PasswdError::Prompt)?;
            line.truncate(line.trim_end_matches(['\r', '\n']).len());
            line
        }
        (None, None) => {
            let first = rpassword::prompt_password("Password: ").map_err(PasswdError::Prompt)?;
            let again =
                rpassword::prompt_password("Reenter password: ").map_err(PasswdError::Prompt)?;
            if first != again {
                return Err(PasswdError::Input("the passwords do not match".to_owned()));
            }
            first
        }
    };
    if password.is_empty() {
        return Err(PasswdError::Input("the password is empty".to_owned()));
    }
    if password.len() > usize::from(u16::MAX) {
        return Err(PasswdError::Input(
            "the password is longer than MQTT allows (65535 bytes)".to_owned(),
        ));
    }
    Ok(password)
}

/// Replaces `path` with `contents` atomically, keeping its permissions (new files: 0600).
fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.fulmar-{}.tmp", std::process::id()));
    let mode = fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // `mode` is filtered by the umask on creation: set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // Make the rename itself durable; not every filesystem can sync a directory.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `fulmar passwd` as a command of its own.
    #[derive(Debug, Parser)]
    struct Passwd {
        #[command(flatten)]
        args: PasswdArgs,
    }

    fn parse(args: &[&str]) -> Result<PasswdArgs, clap::Error> {
        let argv = std::iter::once("passwd").chain(args.iter().copied());
        Passwd::try_parse_from(argv).map(|p| p.args)
    }

    #[test]
    fn command_line_forms() {
        let batch = parse(&["-b", "f", "u", "pw"]).unwrap();
        assert!(batch.batch);
        assert_eq!(batch.batch_password.as_deref(), Some("pw"));
        assert_eq!(batch.iterations, DEFAULT_ROUNDS);
        let flag = parse(&["--password", "pw", "f", "u"]).unwrap();
        assert_eq!(flag.password.as_deref(), Some("pw"));
        assert!(parse(&["-D", "f", "u"]).unwrap().delete);
        // A third positional needs -b; -b needs it; -D takes no password.
        assert!(parse(&["f", "u", "pw"]).is_err());
        assert!(parse(&["-b", "f", "u"]).is_err());
        assert!(parse(&["-D", "--password", "x", "f", "u"]).is_err());
        assert!(parse(&["--iterations", "10", "f", "u"]).is_err());
        use clap::CommandFactory;
        Passwd::command().debug_assert();
    }

    #[test]
    fn adds_changes_and_deletes_keeping_other_lines() {
        let dir = std::env::temp_dir().join(format!("fulmar-passwd-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("passwords");
        let path = file.to_str().unwrap();
        let pw = |user: &str, password: &str| {
            parse(&["--iterations", "1000", "-b", path, user, password]).unwrap()
        };
        run(&pw("alice", "one")).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut text = fs::read_to_string(&file).unwrap();
        text.insert_str(0, "# the users\n");
        fs::write(&file, &text).unwrap();
        run(&pw("bob", "two")).unwrap();
        let done = run(&pw("alice", "three")).unwrap();
        assert!(done.starts_with("changed"), "{done}");
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("# the users\nalice:$7$1000$"), "{text}");
        let users = PasswordFile::parse(&text).unwrap();
        assert!(users.verify("alice", b"three"));
        assert!(users.verify("bob", b"two"));

        run(&parse(&["-D", path, "alice"]).unwrap()).unwrap();
        let users = PasswordFile::parse(&fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(users.len(), 1);
        assert!(matches!(
            run(&parse(&["-D", path, "alice"]).unwrap()),
            Err(PasswdError::NoSuchUser { .. })
        ));
        assert!(matches!(run(&pw("a:b", "x")), Err(PasswdError::Input(_))));
        // A broken file is left alone.
        fs::write(&file, "alice:plaintext\n").unwrap();
        let error = run(&pw("bob", "x")).unwrap_err().to_string();
        assert!(error.contains(":1: not a hashed password"), "{error}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "alice:plaintext\n");
        let _ = fs::remove_dir_all(&dir);
    }
}
