//! Mapping of engine errors to the short lowercase reasons sent to clients.

use escabelo_engine::Error;

/// The reason sent after `error: ` for an engine error.
pub fn reply_reason(e: &Error) -> String {
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
