DROP TABLE login_known_peers;
DROP FUNCTION usermgmt_take_login_attempt(bytea[], interval[], interval[]);
DROP TABLE login_limits;
DROP TABLE password_resets;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP FUNCTION usermgmt_notify_session_change();
ALTER TABLE users DROP COLUMN last_login_at;
