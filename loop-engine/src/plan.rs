//! The plan file (SPEC §3): checklist counts and the first open task.
