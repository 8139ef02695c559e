//! Prompts (SPEC §4): implementation and reviewer prompts, custom prompt files, learnings.
