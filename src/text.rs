//! Text helpers every layer shares: an error or message as one line, fit for a log line or the
//! one-line startup error.

use std::fmt;

/// `s` with every run of whitespace (newlines included) folded into one space.
pub fn one_line(s: impl fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error with its causes, `outer: cause: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_lines_and_chains_causes() {
        assert_eq!(
            one_line("connection failed\n\tIs the server running?  "),
            "connection failed Is the server running?"
        );
        let io = std::io::Error::other("refused");
        let outer = OuterError(io);
        assert_eq!(error_chain(&outer), "sending: refused");
    }

    #[derive(Debug)]
    struct OuterError(std::io::Error);
    impl fmt::Display for OuterError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("sending")
        }
    }
    impl std::error::Error for OuterError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
