DROP TABLE service_secrets;
DROP TABLE users;
DROP TABLE organisations;
