DROP TABLE cache_acks;
DROP TABLE cache_replicas;
DROP TRIGGER organisations_notify_change ON organisations;
DROP FUNCTION usermgmt_notify_organisation_change();
DROP TRIGGER users_notify_change ON users;
DROP FUNCTION usermgmt_notify_user_change();
