// The tables of `migrations/`, written out for Diesel.

diesel::table! {
    organisations (id) {
        id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
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
    }
}

diesel::table! {
    service_secrets (name) {
        name -> Text,
        value -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(users -> organisations (organisation_id));
diesel::allow_tables_to_appear_in_same_query!(organisations, users, service_secrets);
