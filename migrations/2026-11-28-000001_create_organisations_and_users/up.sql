-- Organisations hold users; every query of the service is scoped to one.
CREATE TABLE organisations (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per user. token_key is the user's current tokenKey: every access
-- token carries the key it was issued with and is valid only while it matches.
-- version backs the user's etag (AIP-154).
CREATE TABLE users (
    id               uuid        PRIMARY KEY,
    organisation_id  uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    email            text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    role             text        NOT NULL CHECK (role IN ('nanoAdmin', 'nanoUser', 'nanoReadOnly')),
    token_key        uuid        NOT NULL,
    password_hash    text        NOT NULL,
    version          bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Email is unique per organisation, whatever its case.
CREATE UNIQUE INDEX users_organisation_email_key ON users (organisation_id, lower(email));
-- Login looks a user up by email across organisations.
CREATE INDEX users_email_idx ON users (lower(email));
-- Keyset paging of the user list (ids are UUIDv7, so id order is creation order),
-- with and without the role filter.
CREATE INDEX users_organisation_id_idx ON users (organisation_id, id);
CREATE INDEX users_organisation_role_id_idx ON users (organisation_id, role, id);

-- Secrets every replica must share, generated on first start when the
-- operator configured none (e.g. the access-token signing key).
CREATE TABLE service_secrets (
    name        text        PRIMARY KEY,
    value       bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
