// The tables of `migrations/`, written out for Diesel.

diesel::table! {
    organisations (id) {
        id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        api_key_hash -> Nullable<Bytea>,
        api_key_fingerprint -> Nullable<Text>,
        api_key_rotated_at -> Nullable<Timestamptz>,
        secure_playback -> Bool,
        version -> Int8,
        max_non_revocable_lifetime_seconds -> Int8,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        email -> Text,
        role -> Text,
        token_key -> Uuid,
        password_hash -> Text,
        version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        last_login_at -> Nullable<Timestamptz>,
        state -> Text,
        /// lower(email), in byte order: the order of a prefix search.
        email_order -> Text,
    }
}

diesel::table! {
    service_secrets (name) {
        name -> Text,
        value -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    invites (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        email -> Text,
        role -> Text,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        accepted_at -> Nullable<Timestamptz>,
        accepted_user_id -> Nullable<Uuid>,
        revoked_at -> Nullable<Timestamptz>,
        created_by_user_id -> Nullable<Uuid>,
        created_by_key_fingerprint -> Nullable<Text>,
    }
}

diesel::table! {
    confirmations (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        token_hash -> Bytea,
        actor -> Text,
        action -> Text,
        target_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        occurred_at -> Timestamptz,
        actor -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        target_label -> Text,
        before -> Nullable<Text>,
        after -> Nullable<Text>,
        request_id -> Nullable<Text>,
        sequence -> Nullable<Int8>,
        owner_id -> Nullable<Uuid>,
        state -> Nullable<Jsonb>,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    change_heads (organisation_id) {
        organisation_id -> Uuid,
        head -> Int8,
        pruned_through -> Int8,
    }
}

diesel::table! {
    service_credentials (id) {
        id -> Uuid,
        name -> Text,
        secret_hash -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    playback_signing_keys (kid) {
        kid -> Text,
        organisation_id -> Uuid,
        alg -> Text,
        private_key -> Bytea,
        public_key -> Bytea,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
        verify_until -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    playback_tokens (jti) {
        jti -> Uuid,
        organisation_id -> Uuid,
        kid -> Text,
        issued_by -> Text,
        revocable -> Bool,
        scope -> Text,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        user_id -> Uuid,
        token_key -> Uuid,
        created_at -> Timestamptz,
        last_refreshed_at -> Nullable<Timestamptz>,
        expires_at -> Timestamptz,
        absolute_expires_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
        end_reason -> Nullable<Text>,
        client_address -> Text,
        user_agent -> Text,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    password_resets (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    login_known_peers (key) {
        key -> Bytea,
        until -> Timestamptz,
        email_key -> Bytea,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Uuid,
        organisation_id -> Uuid,
        user_id -> Uuid,
        token_key -> Uuid,
        token_hash -> Bytea,
        name -> Text,
        permissions -> Array<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        first_used_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> Uuid,
        kind -> Text,
        recipient -> Text,
        organisation_id -> Nullable<Uuid>,
        user_id -> Nullable<Uuid>,
        invite_id -> Nullable<Uuid>,
        reset_id -> Nullable<Uuid>,
        payload -> Bytea,
        request_id -> Nullable<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        next_attempt_at -> Timestamptz,
        attempts -> Int4,
        claimed_by -> Nullable<Uuid>,
        claimed_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::joinable!(users -> organisations (organisation_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(
    organisations,
    users,
    service_secrets,
    invites,
    confirmations,
    audit_events,
    service_credentials,
    playback_signing_keys,
    playback_tokens,
    sessions,
    refresh_tokens,
    password_resets,
    api_tokens,
    mail_outbox,
    change_heads
);

diesel::table! {
    cache_replicas (id) {
        id -> Uuid,
        lease_until -> Timestamptz,
    }
}

diesel::table! {
    cache_acks (probe_id, replica_id) {
        probe_id -> Uuid,
        replica_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(cache_replicas, cache_acks);
