DROP TABLE api_tokens;
DROP FUNCTION usermgmt_notify_api_token_change();
CREATE OR REPLACE FUNCTION usermgmt_lock_organisation(org uuid, member uuid, exclusive boolean)
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
DROP INDEX users_organisation_email_order_idx;
ALTER TABLE users DROP COLUMN email_order;
DROP INDEX users_suspended_idx;
ALTER TABLE users DROP COLUMN state;
