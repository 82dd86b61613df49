-- The first step of the service's one write path (src/store/write.rs), in one
-- round trip: take the organisation's row lock, then read the calling user's
-- current role and tokenKey. The read is a statement of its own, after the
-- lock: a statement that waited for a row lock sees the locked row as it was
-- committed since, but every other row as it was when the statement began, so
-- a user deleted (or demoted, or renewed) by the transaction the lock waited
-- for would still be seen by a join. A VOLATILE function's statements each
-- take a new snapshot, so this one sees what that transaction committed.
-- No row: no such organisation. member_role NULL: no such user (an API key
-- caller passes the nil uuid).
CREATE FUNCTION usermgmt_lock_organisation(org uuid, member uuid, exclusive boolean)
RETURNS TABLE (key_hash bytea, key_fingerprint text, member_role text, member_token_key uuid)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF exclusive THEN
        SELECT o.api_key_hash, o.api_key_fingerprint INTO key_hash, key_fingerprint
        FROM organisations o WHERE o.id = org FOR UPDATE;
    ELSE
        SELECT o.api_key_hash, o.api_key_fingerprint INTO key_hash, key_fingerprint
        FROM organisations o WHERE o.id = org FOR SHARE;
    END IF;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT u.role, u.token_key INTO member_role, member_token_key
    FROM users u WHERE u.organisation_id = org AND u.id = member;
    RETURN NEXT;
END
$$;
