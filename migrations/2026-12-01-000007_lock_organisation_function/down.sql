DROP FUNCTION usermgmt_lock_organisation(uuid, uuid, boolean);
