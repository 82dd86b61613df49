ALTER TABLE playback_signing_keys ENABLE TRIGGER playback_signing_keys_notify_change;
ALTER TABLE service_credentials ENABLE TRIGGER service_credentials_notify_change;
ALTER TABLE organisations ENABLE TRIGGER organisations_notify_change;
ALTER TABLE users ENABLE TRIGGER users_notify_change;

DROP TRIGGER playback_signing_keys_notify_truncate ON playback_signing_keys;
DROP TRIGGER service_credentials_notify_truncate ON service_credentials;
DROP TRIGGER organisations_notify_truncate ON organisations;
DROP TRIGGER users_notify_truncate ON users;
DROP FUNCTION usermgmt_notify_cache_statement();

CREATE OR REPLACE FUNCTION usermgmt_notify_playback_key_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    ELSE
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION usermgmt_notify_organisation_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.id::text);
    ELSE
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION usermgmt_notify_user_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    ELSE
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
