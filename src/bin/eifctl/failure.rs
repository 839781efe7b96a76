//! Turning library errors into one line and an exit code.

use eifctl::eif::{ReadError, WriteError};

/// A failed command: exit code 1 (checked, does not hold), 2 (usage or input) or 3 (environment), and the one-line reason.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// Checked, and it does not hold (exit 1), for commands whose verdict is an error line.
    pub fn mismatch(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    pub fn environment(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

pub use eifctl::one_line;

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        Failure::input(one_line(&e))
    }
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Failure {
        match e {
            WriteError::Output { .. } => Failure::environment(one_line(&e)),
            _ => Failure::input(one_line(&e)),
        }
    }
}
