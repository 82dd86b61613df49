-- Suspension (issue 17): a suspended user keeps their row and role but may
-- neither sign in nor use a credential.
ALTER TABLE users ADD COLUMN state text NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'suspended'));
CREATE INDEX users_suspended_idx ON users (organisation_id, role, id) WHERE state = 'suspended';

-- Finding users by the start of their email: one range of this index per
-- page, in email order. The order is byte order (collation "C"), so that a
-- prefix is one range whatever the database's collation; a column of its own
-- rather than an index expression, so that the query is plain enough to be
-- prepared once per connection.
ALTER TABLE users ADD COLUMN email_order text COLLATE "C"
    GENERATED ALWAYS AS (lower(email)) STORED;
CREATE INDEX users_organisation_email_order_idx ON users (organisation_id, email_order, id);

-- The write path's first step reads the calling user only while active: a
-- suspended user's writes fail like a deleted one's.
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
    FROM users u WHERE u.organisation_id = org AND u.id = member AND u.state = 'active';
    RETURN NEXT;
END
$$;

-- Personal API tokens, by the hash of their secret. A token is bound to its
-- user's tokenKey at creation: renewing it (a renewal, a role change, a
-- suspension) ends the token, and deleting the user deletes it.
CREATE TABLE api_tokens (
    id              uuid        PRIMARY KEY,
    organisation_id uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_key       uuid        NOT NULL,
    token_hash      bytea       NOT NULL UNIQUE,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 400),
    -- Permission ids; empty: the whole role of the user at each call.
    permissions     text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    first_used_at   timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (organisation_id, user_id, id) WHERE revoked_at IS NULL;

-- Tokens are cached for the per-call check: a change of what the check reads
-- evicts the organisation on every replica. Recording their use does not.
CREATE FUNCTION usermgmt_notify_api_token_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    ELSIF OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
        OR OLD.token_key IS DISTINCT FROM NEW.token_key
        OR OLD.token_hash IS DISTINCT FROM NEW.token_hash
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.organisation_id IS DISTINCT FROM NEW.organisation_id
        OR OLD.permissions IS DISTINCT FROM NEW.permissions
        OR OLD.expires_at IS DISTINCT FROM NEW.expires_at THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_tokens_notify_change AFTER UPDATE OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION usermgmt_notify_api_token_change();
CREATE TRIGGER api_tokens_notify_truncate AFTER TRUNCATE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_cache_statement('all');
ALTER TABLE api_tokens ENABLE ALWAYS TRIGGER api_tokens_notify_change;
ALTER TABLE api_tokens ENABLE ALWAYS TRIGGER api_tokens_notify_truncate;
