DELETE FROM audit_events a
WHERE NOT EXISTS (SELECT 1 FROM organisations o WHERE o.id = a.organisation_id);
DELETE FROM change_heads h
WHERE NOT EXISTS (SELECT 1 FROM organisations o WHERE o.id = h.organisation_id);
ALTER TABLE audit_events
    ADD CONSTRAINT audit_events_organisation_id_fkey
    FOREIGN KEY (organisation_id) REFERENCES organisations (id) ON DELETE CASCADE;
