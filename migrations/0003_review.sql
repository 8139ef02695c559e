-- Review of a finished run (SPEC §12): what a person did with it (merge, scrap, pull request)
-- and what that left behind. Runs stored before this migration are `pending`.

ALTER TABLE runs ADD COLUMN review_status TEXT NOT NULL DEFAULT 'pending'
    CHECK (review_status IN ('pending', 'merged', 'scrapped', 'pr_created'));
-- When the last review action (or the run's own merge) happened, in ms since the epoch.
ALTER TABLE runs ADD COLUMN review_action_at INTEGER;
-- The target's commit that holds the run's work, once merged.
ALTER TABLE runs ADD COLUMN merge_commit TEXT;
-- The pull request opened for the run branch.
ALTER TABLE runs ADD COLUMN pr_url TEXT;
