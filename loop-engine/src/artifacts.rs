//! Artifacts (SPEC §7): the run folder, report.tsv, summary.json, tails, mirroring, checksums.
