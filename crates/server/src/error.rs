//! Mapping of engine errors to the short lowercase reasons sent to clients.

use escabelo_engine::Error;

/// The reason sent after `error: ` for an engine error.
pub fn reply_reason(e: &Error) -> String {
    use crate::metrics::{ErrorKind, RECORDER};
    RECORDER.error(match e {
        Error::InvalidArgument(_) => ErrorKind::Limit,
        _ => ErrorKind::Engine,
    });
    match e {
        Error::NoSpace { .. } => "disk full".to_string(),
        Error::InvalidArgument(msg) => msg.to_lowercase(),
        Error::Corruption { .. } => "data corruption".to_string(),
        Error::ReadOnly(_) => "read-only after a storage failure".to_string(),
        Error::Closed => "shutting down".to_string(),
        Error::Io { .. } => "i/o error".to_string(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_and_lowercase() {
        let cases = [
            (
                Error::NoSpace {
                    context: "append WAL".into(),
                },
                "disk full",
            ),
            (Error::Closed, "shutting down"),
            (
                Error::corruption("/d/000001.sst", 7, "bad checksum"),
                "data corruption",
            ),
            (
                Error::io("write", std::io::Error::other("boom")),
                "i/o error",
            ),
            (
                Error::InvalidArgument("Value too long".into()),
                "value too long",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(reply_reason(&e), want);
        }
    }
}
