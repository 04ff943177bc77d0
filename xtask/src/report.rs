//! Suite results and the summary table printed at the end of `cargo xtask test`.

use std::fmt::Write as _;

/// What one suite found. A suite records every failure it meets and carries on where that
/// still tells the reader something (both clippy runs, all three test runs), so one red run
/// shows every problem at once.
#[derive(Debug, Default)]
pub(crate) struct SuiteResult {
    /// One line per failure, e.g. "`cargo fmt --all -- --check` failed (exit status: 1)".
    pub(crate) failures: Vec<String>,
    /// Things that passed (tests, fuzz targets), when the suite counts any.
    pub(crate) passed: Option<u64>,
    /// Things that failed, when the suite counts any.
    pub(crate) failed: Option<u64>,
    /// A short remark for the summary table ("3 doctests", "installed: clippy").
    pub(crate) note: String,
}

impl SuiteResult {
    /// Records the failure in `result`, if it is one.
    pub(crate) fn check(&mut self, result: Result<(), String>) {
        if let Err(message) = result {
            self.fail(message);
        }
    }

    /// Records a failure, and prints it now so it sits next to the output that caused it.
    pub(crate) fn fail(&mut self, message: String) {
        eprintln!("error: {message}");
        self.failures.push(message);
    }

    /// Whether the suite passed.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// How a suite ended, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pass,
    Fail,
    /// Not run because an earlier suite it depends on failed.
    NotRun,
}

/// One row of the summary table.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) suite: &'static str,
    pub(crate) status: Status,
    pub(crate) result: SuiteResult,
    /// Wall time; `None` when the suite did not run.
    pub(crate) seconds: Option<f64>,
}

/// Renders the summary table, its total line, and the list of failures.
pub(crate) fn summary(rows: &[Row]) -> String {
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
    let status = |s: Status| match s {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
        Status::NotRun => "not run",
    };

    let mut table: Vec<[String; 6]> = vec![[
        "suite".into(),
        "result".into(),
        "passed".into(),
        "failed".into(),
        "seconds".into(),
        "notes".into(),
    ]];
    for row in rows {
        table.push([
            row.suite.into(),
            status(row.status).into(),
            count(row.result.passed),
            count(row.result.failed),
            secs(row.seconds),
            row.result.note.clone(),
        ]);
    }
    let bad = rows.iter().filter(|r| r.status != Status::Pass).count();
    let sum = |f: fn(&Row) -> Option<u64>| rows.iter().filter_map(f).reduce(|a, b| a + b);
    table.push([
        "total".into(),
        if bad == 0 { "pass" } else { "FAIL" }.into(),
        count(sum(|r| r.result.passed)),
        count(sum(|r| r.result.failed)),
        secs(Some(rows.iter().filter_map(|r| r.seconds).sum())),
        if bad == 0 {
            format!("{0} of {0} suites passed", rows.len())
        } else {
            format!("{bad} of {} suites did not pass", rows.len())
        },
    ]);

    let mut widths = [0; 6];
    for line in &table {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for (i, line) in table.iter().enumerate() {
        if i == table.len() - 1 {
            // A rule above the total line.
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("-+-").trim_end());
        }
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            // Numbers read best right-aligned; names and notes left-aligned.
            .map(|(col, (cell, w))| match col {
                2..=4 => format!("{cell:>w$}"),
                _ => format!("{cell:<w$}"),
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join(" | ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("-+-").trim_end());
        }
    }

    let failures: Vec<(&str, &String)> = rows
        .iter()
        .flat_map(|r| r.result.failures.iter().map(move |f| (r.suite, f)))
        .collect();
    if !failures.is_empty() {
        out.push_str("\nfailures:\n");
        for (suite, failure) in failures {
            let _ = writeln!(out, "  {suite}: {failure}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_rows_total_and_failures() {
        let rows = [
            Row {
                suite: "fmt",
                status: Status::Pass,
                result: SuiteResult::default(),
                seconds: Some(0.42),
            },
            Row {
                suite: "test",
                status: Status::Fail,
                result: SuiteResult {
                    failures: vec!["`cargo test --workspace` failed (exit status: 101)".into()],
                    passed: Some(120),
                    failed: Some(1),
                    note: "7 doctests".into(),
                },
                seconds: Some(12.0),
            },
            Row {
                suite: "fuzz",
                status: Status::NotRun,
                result: SuiteResult::default(),
                seconds: None,
            },
        ];
        let expected = "\
suite | result  | passed | failed | seconds | notes
------+---------+--------+--------+---------+---------------------------
fmt   | pass    |      - |      - |     0.4 |
test  | FAIL    |    120 |      1 |    12.0 | 7 doctests
fuzz  | not run |      - |      - |       - |
------+---------+--------+--------+---------+---------------------------
total | FAIL    |    120 |      1 |    12.4 | 2 of 3 suites did not pass

failures:
  test: `cargo test --workspace` failed (exit status: 101)
";
        assert_eq!(summary(&rows), expected);
    }
}
