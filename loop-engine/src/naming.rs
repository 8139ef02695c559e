//! Naming (SPEC §9): run names, spec slugs, branch names, worktree paths, iteration slugs.
