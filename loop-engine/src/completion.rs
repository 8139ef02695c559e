//! Completion detection (SPEC §5): exact, trailing and malformed completion tokens.

use crate::domain::spelled_enum;

spelled_enum!(
    /// How the completion token is recognised in the agent's output.
    CompletionMode {
        /// The whole output, trimmed, equals the token.
        Exact => "exact",
        /// The last non-empty line, trimmed, equals the token (exact output also counts).
        Trailing => "trailing",
    }
);
