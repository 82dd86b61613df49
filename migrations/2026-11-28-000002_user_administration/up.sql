-- Invitations to join an organisation. Only the hash of the invite token is
-- kept; the token is shown once, to the admin who created the invite.
CREATE TABLE invites (
    id               uuid        PRIMARY KEY,
    organisation_id  uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    email            text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    role             text        NOT NULL CHECK (role IN ('nanoAdmin', 'nanoUser', 'nanoReadOnly')),
    token_hash       bytea       NOT NULL UNIQUE,
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    accepted_at      timestamptz,
    accepted_user_id uuid,
    revoked_at       timestamptz
);
CREATE INDEX invites_pending_idx ON invites (organisation_id, id)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;

-- The first step of a double-confirmed action: a single-use token bound to
-- the caller, the action and the target, stored as a hash.
CREATE TABLE confirmations (
    id               uuid        PRIMARY KEY,
    organisation_id  uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    token_hash       bytea       NOT NULL UNIQUE,
    actor            text        NOT NULL,
    action           text        NOT NULL,
    target_id        uuid        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz
);
CREATE INDEX confirmations_expires_at_idx ON confirmations (expires_at);

-- One row per change, written in the transaction of the change.
CREATE TABLE audit_events (
    id               uuid        PRIMARY KEY,
    organisation_id  uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    actor            text        NOT NULL,
    action           text        NOT NULL,
    target_type      text        NOT NULL,
    target_id        text        NOT NULL,
    target_label     text        NOT NULL DEFAULT '',
    before           text,
    after            text,
    request_id       text
);
CREATE INDEX audit_events_organisation_id_idx ON audit_events (organisation_id, id DESC);
