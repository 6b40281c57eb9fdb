//! The one place that decides how results are printed: text for people, JSON
//! for machines. Commands hand it a value; stdout carries only results.

use std::io::Write;

use serde::Serialize;

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// A command line of these words, each quoted for a POSIX shell where it
/// needs to be: what klm prints for a person to paste.
pub fn command_line<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> String {
    words
        .into_iter()
        .map(|word| shell_word(word.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word as a POSIX shell reads it back unchanged: as it is when it has
/// nothing a shell would split, expand or redirect, else in single quotes.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A command result that can be shown to a person as well as serialised.
pub trait Report: Serialize {
    /// The text shown to a person (one or more lines, no trailing newline needed).
    fn text(&self) -> String;
}

/// Prints a report on stdout in the chosen format.
pub fn print(format: OutputFormat, report: &impl Report) -> anyhow::Result<()> {
    let rendered = render(format, report)?;
    write_report(&mut std::io::stdout().lock(), &rendered)?;
    Ok(())
}

/// Prints one value as a single line of JSON (or a string as it is): the
/// stream of states that `klm status --watch` writes.
pub fn print_line(value: &impl Serialize) -> anyhow::Result<()> {
    let mut line = match serde_json::to_value(value)? {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    line.push('\n');
    write_report(&mut std::io::stdout().lock(), &line)?;
    Ok(())
}

/// Prints text as it is (a completion script).
pub fn print_raw(text: &str) -> anyhow::Result<()> {
    write_report(&mut std::io::stdout().lock(), text)?;
    Ok(())
}

/// Writes a rendered report. A reader that went away (`klm status | head`)
/// is not a failure: it had what it wanted, and the step's work is done.
fn write_report(out: &mut impl Write, rendered: &str) -> std::io::Result<()> {
    match out
        .write_all(rendered.as_bytes())
        .and_then(|()| out.flush())
    {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Renders a report as it would be printed.
pub fn render(format: OutputFormat, report: &impl Report) -> anyhow::Result<String> {
    let mut out = match format {
        OutputFormat::Json => serde_json::to_string_pretty(report)?,
        OutputFormat::Text => report.text(),
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Lays out rows as a table with aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![line(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| line(row.iter().map(String::as_str).collect())),
    );
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    struct ClosedPipe;

    impl std::io::Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_not_a_failure() {
        assert!(super::write_report(&mut ClosedPipe, "node-1 completed\n").is_ok());
        let mut full = [0u8; 2];
        assert!(super::write_report(&mut &mut full[..], "too long").is_err());
    }

    use super::*;

    #[test]
    fn tables_align_columns() {
        let rendered = table(
            &["NODE", "STATUS"],
            &[
                vec!["a".into(), "completed".into()],
                vec!["long-name".into(), "-".into()],
            ],
        );
        assert_eq!(
            rendered,
            "NODE       STATUS\na          completed\nlong-name  -"
        );
    }

    #[test]
    fn printed_commands_quote_what_a_shell_would_split_expand_or_redirect() {
        assert_eq!(
            command_line([
                "klm",
                "close-run",
                "--run-id",
                "klm-1",
                "--verification-pod",
                "/a b/it's.yaml"
            ]),
            "klm close-run --run-id klm-1 --verification-pod '/a b/it'\\''s.yaml'"
        );
        assert_eq!(
            command_line(["--chart", "oci://x/y:1.0", "a=b,c"]),
            "--chart oci://x/y:1.0 a=b,c"
        );
        for special in ["x=$HOME `id`", "{a,b}", "[ab]", "a>b", "<FILE>", ""] {
            assert_eq!(shell_word(special), format!("'{special}'"));
        }
    }
}
