DROP TABLE playback_tokens;
DROP TABLE playback_signing_keys;
