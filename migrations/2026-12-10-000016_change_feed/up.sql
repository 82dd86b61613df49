-- The change feed (docs/api.md, "The change feed"). Every committed change of
-- an organisation takes the next number of the organisation's sequence, as
-- the last step before its commit (usermgmt_next_change), holding the
-- sequence's row until it commits: a change that began first but committed
-- last comes after, and a change that rolls back gives its number back. So
-- the committed numbers are always 1..head, without holes, in commit order.
CREATE TABLE change_heads (
    organisation_id uuid   PRIMARY KEY,
    -- The last sequence number taken (and, once its change committed, the
    -- last committed).
    head            bigint NOT NULL DEFAULT 0,
    -- The last sequence whose changes the retention window dropped: resume
    -- tokens before it are refused (CHANGE_TOKEN_EXPIRED).
    pruned_through  bigint NOT NULL DEFAULT 0
);

-- A change's targets are its audit events: each carries the change's
-- sequence, the user the target belongs to, and the target's state after the
-- change (NULL: a tombstone, or dropped by the retention window once the
-- sequence is at or before pruned_through). Events that changed nothing (a
-- failed sign-in) have no sequence. Events from before this migration have
-- none either: the feed begins here.
ALTER TABLE audit_events
    ADD COLUMN sequence   bigint,
    ADD COLUMN owner_id   uuid,
    ADD COLUMN state      jsonb,
    ADD COLUMN expires_at timestamptz;

CREATE INDEX audit_events_sequence_idx ON audit_events (organisation_id, sequence)
    WHERE sequence IS NOT NULL;

-- Takes the organisation's next sequence number and rings the doorbell of
-- every replica's feed (a notification is only a hint: replicas also poll).
CREATE FUNCTION usermgmt_next_change(org uuid)
RETURNS TABLE (sequence bigint, committed_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO change_heads AS h (organisation_id, head) VALUES (org, 1)
    ON CONFLICT (organisation_id) DO UPDATE SET head = h.head + 1
    RETURNING h.head INTO sequence;
    committed_at := clock_timestamp();
    PERFORM pg_notify('usermgmt_changes', org::text || ':' || sequence::text);
    RETURN NEXT;
END
$$;
