-- Every change of a cached row must reach every replica's cache, however it
-- is made (see src/store/cache.rs).

-- An UPDATE that moves a user (or renumbers an organisation) notifies the
-- organisation it leaves as well as the one it joins.
CREATE OR REPLACE FUNCTION usermgmt_notify_user_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION usermgmt_notify_organisation_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.id::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION usermgmt_notify_playback_key_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- TRUNCATE fires no row trigger. A statement trigger on every cached table
-- sends the payload given as the trigger's argument: "all" (every replica
-- forgets everything) or the name of the one kind of entry to forget.
-- A table cached later gets its TRUNCATE trigger the same way.
CREATE FUNCTION usermgmt_notify_cache_statement() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('usermgmt_cache', TG_ARGV[0]);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER users_notify_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_cache_statement('all');
CREATE TRIGGER organisations_notify_truncate AFTER TRUNCATE ON organisations
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_cache_statement('all');
CREATE TRIGGER service_credentials_notify_truncate AFTER TRUNCATE ON service_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_cache_statement('services');
CREATE TRIGGER playback_signing_keys_notify_truncate AFTER TRUNCATE ON playback_signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_cache_statement('all');

-- Fire under session_replication_role = replica too (a restore, a logical
-- replication apply, a hand change made that way). Only a trigger disabled
-- by ALTER TABLE is silent; the cache's maximum age bounds that case.
ALTER TABLE users ENABLE ALWAYS TRIGGER users_notify_change;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_notify_truncate;
ALTER TABLE organisations ENABLE ALWAYS TRIGGER organisations_notify_change;
ALTER TABLE organisations ENABLE ALWAYS TRIGGER organisations_notify_truncate;
ALTER TABLE service_credentials ENABLE ALWAYS TRIGGER service_credentials_notify_change;
ALTER TABLE service_credentials ENABLE ALWAYS TRIGGER service_credentials_notify_truncate;
ALTER TABLE playback_signing_keys ENABLE ALWAYS TRIGGER playback_signing_keys_notify_change;
ALTER TABLE playback_signing_keys ENABLE ALWAYS TRIGGER playback_signing_keys_notify_truncate;
