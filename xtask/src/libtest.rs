//! Reading pass/fail counts out of libtest's human-readable output.
//!
//! `cargo test` prints one `test result: ok. N passed; M failed; ...` line per test binary
//! (unit tests, each integration test, doctests) on stdout. We sum them across binaries and
//! across `cargo test` runs. Doctests are told apart by their test names
//! (`src/lib.rs - item (line 12)`), because the `Doc-tests` header goes to stderr, which we
//! do not capture.

/// Totals over every `test result:` line seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Tests that passed, doctests included.
    pub(crate) passed: u64,
    /// Tests that failed, doctests included.
    pub(crate) failed: u64,
    /// Tests marked `#[ignore]` (or doctests marked `ignore`).
    pub(crate) ignored: u64,
    /// Of `passed`, how many were doctests.
    pub(crate) doc_passed: u64,
    /// Of `failed`, how many were doctests.
    pub(crate) doc_failed: u64,
    /// How many `test result:` lines were seen: one per test binary run.
    pub(crate) binaries: u64,
}

/// Accumulates [`Counts`] from output fed to it one line at a time.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    counts: Counts,
    /// Whether the current binary's tests are doctests; reset by each `running N tests`.
    in_doctests: bool,
}

impl Parser {
    /// Takes one line of `cargo test` stdout, without its line ending.
    pub(crate) fn feed(&mut self, line: &str) {
        let line = line.trim_end();
        if line.starts_with("running ") && (line.ends_with(" tests") || line.ends_with(" test")) {
            self.in_doctests = false;
        } else if is_doctest_line(line) {
            self.in_doctests = true;
        } else if let Some(result) = parse_result(line) {
            let c = &mut self.counts;
            c.passed += result.passed;
            c.failed += result.failed;
            c.ignored += result.ignored;
            c.binaries += 1;
            if self.in_doctests {
                c.doc_passed += result.passed;
                c.doc_failed += result.failed;
            }
            self.in_doctests = false;
        }
    }

    /// The totals so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }
}

/// One binary's `test result:` line.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out;
/// finished in 0.01s` (or `FAILED.`). Anything else is `None`.
fn parse_result(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("test result: ")?;
    let (_verdict, fields) = rest.split_once(". ")?;
    let (mut passed, mut failed, mut ignored) = (None, None, None);
    for field in fields.split("; ") {
        let Some((number, what)) = field.split_once(' ') else {
            continue;
        };
        // `finished in 0.01s` has no leading number; skip it and anything new libtest adds.
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match what {
            "passed" => passed = Some(number),
            "failed" => failed = Some(number),
            "ignored" => ignored = Some(number),
            _ => {}
        }
    }
    Some(Summary {
        passed: passed?,
        failed: failed?,
        ignored: ignored.unwrap_or(0),
    })
}

/// Whether `line` reports one doctest: `test src/lib.rs - codec::decode (line 42) ... ok`.
fn is_doctest_line(line: &str) -> bool {
    line.strip_prefix("test ")
        .and_then(|rest| rest.split_once(" ... "))
        .is_some_and(|(name, _)| name.contains(" - ") && name.contains(" (line "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(output: &str) -> Counts {
        let mut parser = Parser::default();
        output.lines().for_each(|line| parser.feed(line));
        parser.counts()
    }

    #[test]
    fn reads_a_result_line() {
        assert_eq!(
            parse_result(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
                 finished in 0.03s"
            ),
            Some(Summary {
                passed: 12,
                failed: 0,
                ignored: 1
            })
        );
        assert_eq!(
            parse_result("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured"),
            Some(Summary {
                passed: 3,
                failed: 2,
                ignored: 0
            })
        );
        assert_eq!(parse_result("test codec::tests::x ... ok"), None);
        assert_eq!(parse_result("test result: ok."), None);
    }

    #[test]
    fn sums_binaries_and_separates_doctests() {
        let output = "\
running 2 tests
test codec::tests::a ... ok
test codec::tests::b ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 3 tests
test core/src/lib.rs - codec (line 10) ... ok
test core/src/codec/mod.rs - codec::decode (line 42) - compile fail ... ok
test core/src/codec/mod.rs - codec::encode (line 80) ... FAILED

failures:

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.40s

running 1 test
test roundtrip ... ignored

test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        assert_eq!(
            parse(output),
            Counts {
                passed: 4,
                failed: 1,
                ignored: 1,
                doc_passed: 2,
                doc_failed: 1,
                binaries: 4,
            }
        );
    }
}
