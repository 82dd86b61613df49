-- Replicas cache users, organisations and API keys for the per-call check.
-- Every change of those rows, however it is made, notifies every replica
-- (channel usermgmt_cache, payload "org:<organisation id>").
CREATE FUNCTION usermgmt_notify_user_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.organisation_id::text);
    ELSE
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.organisation_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER users_notify_change AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION usermgmt_notify_user_change();

CREATE FUNCTION usermgmt_notify_organisation_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('usermgmt_cache', 'org:' || OLD.id::text);
    ELSE
        PERFORM pg_notify('usermgmt_cache', 'org:' || NEW.id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER organisations_notify_change AFTER UPDATE OR DELETE ON organisations
    FOR EACH ROW EXECUTE FUNCTION usermgmt_notify_organisation_change();

CREATE FUNCTION usermgmt_notify_service_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('usermgmt_cache', 'services');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER service_credentials_notify_change AFTER INSERT OR UPDATE OR DELETE ON service_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION usermgmt_notify_service_change();

-- The replicas that cache, each with the lease its heartbeat renews. A writer
-- waits until every replica with a live lease has acknowledged its probe
-- (which it receives after the writer's notifications), or until the leases
-- have run out. Both tables hold only transient state.
CREATE UNLOGGED TABLE cache_replicas (
    id          uuid        PRIMARY KEY,
    lease_until timestamptz NOT NULL
);

CREATE UNLOGGED TABLE cache_acks (
    probe_id    uuid        NOT NULL,
    replica_id  uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (probe_id, replica_id)
);
