DROP TABLE audit_events;
DROP TABLE confirmations;
DROP TABLE invites;
