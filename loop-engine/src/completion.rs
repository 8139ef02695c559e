//! Completion detection (SPEC §5): exact, trailing and malformed completion tokens.
