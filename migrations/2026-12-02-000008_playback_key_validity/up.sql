-- A signing key can be revoked (contained after a leak): from revoked_at it
-- verifies nothing, whatever its verify_until says.
ALTER TABLE playback_signing_keys ADD COLUMN revoked_at timestamptz;

-- The longest lifetime an organisation allows its tokens that are not
-- revocable (at most the service's own limit of 365 days, the default).
ALTER TABLE organisations
    ADD COLUMN max_non_revocable_lifetime_seconds bigint NOT NULL DEFAULT 31536000
    CHECK (max_non_revocable_lifetime_seconds BETWEEN 1 AND 31536000);

-- Replicas cache verifying keys by kid: a change of a key (its retirement,
-- verify_until or revocation, however it is made) notifies every replica
-- like a change of its organisation, so that they evict it.
CREATE FUNCTION usermgmt_notify_playback_key_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    ELSE
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER playback_signing_keys_notify_change AFTER UPDATE OR DELETE ON playback_signing_keys
    FOR EACH ROW EXECUTE FUNCTION usermgmt_notify_playback_key_change();
