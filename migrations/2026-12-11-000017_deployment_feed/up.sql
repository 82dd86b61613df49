-- The deployment's own change feed (docs/api.md, "The change feed"): what
-- belongs to no organisation, the registered internal services, changes
-- under the nil organisation id, which names no organisation's row. So an
-- audit event no longer refers to its organisation's row (no organisation is
-- ever deleted; its events went with it when the reference cascaded).
ALTER TABLE audit_events DROP CONSTRAINT audit_events_organisation_id_fkey;
