//! The open-file limit (`RLIMIT_NOFILE`): every connection is a file descriptor, and the
//! usual soft limit (1024) is far below what a broker or the load tool holds. Both raise
//! their soft limit to the hard limit at start, as the Go runtime and many servers do;
//! the hard limit is the administrator's (systemd `LimitNOFILE`, `ulimit -Hn`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-file limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit the process started with (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit now (`None`: unlimited).
    pub now: Option<u64>,
}

/// Raises the soft open-file limit to the hard limit. An error leaves the limit as it
/// was (and is worth a warning, not a failure: the process works, with fewer files).
pub fn raise() -> std::io::Result<Raised> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(Raised {
        before: limit.current,
        now: getrlimit(Resource::Nofile).current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let raised = raise().unwrap();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum);
        assert_eq!(raised.now, limit.maximum);
        // Raising again changes nothing.
        assert_eq!(raise().unwrap().before, raised.now);
    }
}
