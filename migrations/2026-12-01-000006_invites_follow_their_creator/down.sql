DROP INDEX invites_pending_by_creator_idx;
-- The revocations of up.sql are not undone: they were due.
