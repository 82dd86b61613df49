//! Integration tests: a real server on a real PostgreSQL, through the
//! generated client. One binary, so that it links once.

mod support;

mod access_tokens;
mod admin;
mod api_keys;
mod api_tokens;
mod attacks;
mod audit;
mod authorize;
mod bad_input;
mod cache_by_hand;
mod commit_recheck;
mod db_faults;
mod example_env;
mod failover;
mod feed;
mod feed_order;
mod feed_replicas;
mod fuzz;
mod grpc_web;
mod hasher_bounds;
mod healthcheck;
mod hung_database;
mod invite_authority;
mod isolation;
mod last_admin;
mod login;
mod login_limits;
mod metrics;
mod otel;
mod outbox;
mod password_reset;
mod patroni;
mod playback;
mod playback_keys;
mod replicas;
mod roles_and_organisation;
mod sealed_secrets;
mod secrets;
mod sessions;
mod startup;
mod suspension;
mod tls;
mod user_search;
mod users;
