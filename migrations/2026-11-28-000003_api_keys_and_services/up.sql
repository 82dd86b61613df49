-- The organisation API key: only its hash is kept (it is high-entropy, so a
-- fast hash suffices), with a short fingerprint to name it in the audit log.
-- secure_playback: every playback in the organisation needs a playback token.
ALTER TABLE organisations
    ADD COLUMN api_key_hash        bytea UNIQUE,
    ADD COLUMN api_key_fingerprint text,
    ADD COLUMN api_key_rotated_at  timestamptz,
    ADD COLUMN secure_playback     boolean NOT NULL DEFAULT false,
    ADD COLUMN version             bigint  NOT NULL DEFAULT 1 CHECK (version > 0);

-- Internal services (stream management, tags, webhooks, metrics) that may
-- call AuthService.Authorize. Registered with `usermgmt service register`.
CREATE TABLE service_credentials (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
