DROP TABLE service_credentials;
ALTER TABLE organisations
    DROP COLUMN version,
    DROP COLUMN secure_playback,
    DROP COLUMN api_key_rotated_at,
    DROP COLUMN api_key_fingerprint,
    DROP COLUMN api_key_hash;
