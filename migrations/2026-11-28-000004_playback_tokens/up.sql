-- The keys that sign playback tokens, per organisation. The private key is
-- kept here (DER) so that every replica signs with the same key; encrypting
-- it at rest is future work. One current key per organisation (retired_at
-- null) signs; retired keys still verify until verify_until, the expiry of
-- the last token they signed. Public keys are published to edge servers.
CREATE TABLE playback_signing_keys (
    kid              text        PRIMARY KEY,
    organisation_id  uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    alg              text        NOT NULL CHECK (alg IN ('EdDSA', 'RS256')),
    private_key      bytea       NOT NULL,
    public_key       bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    retired_at       timestamptz,
    verify_until     timestamptz
);
CREATE UNIQUE INDEX playback_signing_keys_current_key
    ON playback_signing_keys (organisation_id) WHERE retired_at IS NULL;

-- What was issued, never the token itself: enough to revoke a token by its
-- id, to know whose it is and whether it may be revoked, and to know how
-- long a retired key must keep verifying.
CREATE TABLE playback_tokens (
    jti              uuid        PRIMARY KEY,
    organisation_id  uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    kid              text        NOT NULL REFERENCES playback_signing_keys (kid) ON DELETE CASCADE,
    issued_by        text        NOT NULL,
    revocable        boolean     NOT NULL,
    scope            text        NOT NULL,
    issued_at        timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    revoked_at       timestamptz
);
CREATE INDEX playback_tokens_kid_expires_at_idx ON playback_tokens (kid, expires_at);
CREATE INDEX playback_tokens_expires_at_idx ON playback_tokens (expires_at);
