DROP TABLE cache_acks;
DROP TABLE cache_replicas;
DROP TRIGGER service_credentials_notify_change ON service_credentials;
DROP FUNCTION usermgmt_notify_service_change();
DROP TRIGGER organisations_notify_change ON organisations;
DROP FUNCTION usermgmt_notify_organisation_change();
DROP TRIGGER users_notify_change ON users;
DROP FUNCTION usermgmt_notify_user_change();
