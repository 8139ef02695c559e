-- Fencing (SPEC §14): every claim of a run increments its lease epoch, and a worker's writes
-- present the epoch of its claim, so a worker whose run was taken over cannot write again.
ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0);
