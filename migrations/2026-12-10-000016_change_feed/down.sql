DROP FUNCTION usermgmt_next_change(uuid);
DROP INDEX audit_events_sequence_idx;
ALTER TABLE audit_events
    DROP COLUMN sequence,
    DROP COLUMN owner_id,
    DROP COLUMN state,
    DROP COLUMN expires_at;
DROP TABLE change_heads;
