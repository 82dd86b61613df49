-- Sessions (issue 16): each login opens one; its access tokens carry its id
-- (`sid`) and are checked against it on every call.
ALTER TABLE users ADD COLUMN last_login_at timestamptz;

CREATE TABLE sessions (
    id                  uuid        PRIMARY KEY,
    organisation_id     uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id             uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The user's tokenKey at login: a renewed tokenKey ends the session.
    token_key           uuid        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_refreshed_at   timestamptz,
    -- Sliding: the idle lifetime after the last refresh, capped by
    -- absolute_expires_at.
    expires_at          timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    ended_at            timestamptz,
    end_reason          text,
    client_address      text        NOT NULL DEFAULT '' CHECK (length(client_address) <= 64),
    user_agent          text        NOT NULL DEFAULT '' CHECK (length(user_agent) <= 256)
);
CREATE INDEX sessions_live_idx ON sessions (organisation_id, user_id, id) WHERE ended_at IS NULL;

-- Every refresh token a session was given, by hash: the current one unused,
-- the earlier ones used (presenting one of those again ends the session).
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Password reset links, by the hash of their single-use token.
CREATE TABLE password_resets (
    id              uuid        PRIMARY KEY,
    organisation_id uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash      bytea       NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX password_resets_user_idx ON password_resets (user_id) WHERE used_at IS NULL;

-- Login rate limits shared by every replica: one GCRA state (the theoretical
-- arrival time) per key; keys are SHA-256 of what they limit.
CREATE TABLE login_limits (
    key bytea       PRIMARY KEY,
    tat timestamptz NOT NULL
);
CREATE INDEX login_limits_tat_idx ON login_limits (tat);

-- An email and peer that signed in successfully: exempt from the email's
-- limit across peers until `until`.
CREATE TABLE login_known_peers (
    key   bytea       PRIMARY KEY,
    until timestamptz NOT NULL
);

-- Takes one attempt from every key, or from none: `wait` 0 when taken, else
-- how long until all of them would allow one, and `limiting` the (1-based)
-- position of the key that waits longest. Key i allows a burst of
-- bursts[i] / periods[i] attempts and one more every periods[i] (GCRA). The
-- caller passes the keys sorted, so that concurrent calls lock them in one
-- order.
CREATE FUNCTION usermgmt_take_login_attempt(
    keys bytea[], periods interval[], bursts interval[],
    OUT wait interval, OUT limiting integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    current_tat timestamptz;
    over interval;
BEGIN
    wait := interval '0';
    limiting := 0;
    INSERT INTO login_limits (key, tat)
    SELECT k, now_ FROM unnest(keys) AS k ORDER BY k
    ON CONFLICT (key) DO NOTHING;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        SELECT l.tat INTO current_tat FROM login_limits l WHERE l.key = keys[i] FOR UPDATE;
        over := greatest(current_tat, now_) + periods[i] - now_ - bursts[i];
        IF over > wait THEN
            wait := over;
            limiting := i;
        END IF;
    END LOOP;
    IF limiting > 0 THEN
        RETURN;
    END IF;
    UPDATE login_limits l SET tat = greatest(l.tat, now_) + p.period
    FROM unnest(keys, periods) AS p (key, period)
    WHERE l.key = p.key;
END
$$;

-- Sessions are cached for the per-call check: ending one (or deleting it)
-- evicts its organisation on every replica. Refreshing one does not: what
-- the check reads of it does not change.
CREATE FUNCTION usermgmt_notify_session_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    ELSIF OLD.ended_at IS DISTINCT FROM NEW.ended_at
        OR OLD.token_key IS DISTINCT FROM NEW.token_key
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.organisation_id IS DISTINCT FROM NEW.organisation_id
        OR OLD.expires_at > NEW.expires_at THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER sessions_notify_change AFTER UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION usermgmt_notify_session_change();
CREATE TRIGGER sessions_notify_truncate AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_cache_statement('all');
ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_notify_change;
ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_notify_truncate;
