-- The mail outbox (issue 25): every mail the service is to send is a row,
-- written in the same transaction as the change that asks for it, and sent
-- by any replica's workers, which claim due rows with FOR UPDATE SKIP LOCKED
-- for a lease (claimed_until), retry with backoff and give up at expires_at.
-- A row is deleted once sent or given up.
CREATE TABLE mail_outbox (
    id              uuid        PRIMARY KEY,
    -- 'reset_request': "reset the password of the users with this email"
    -- (whatever the email: the worker finds the users); 'password_reset': a
    -- user's reset link; 'invite': an invite.
    kind            text        NOT NULL
                    CHECK (kind IN ('reset_request', 'password_reset', 'invite')),
    -- The normalised email the mail goes to: the unit of fairness.
    recipient       text        NOT NULL CHECK (length(recipient) <= 254),
    -- A reset request's scope (as asked: no reference, it may be no
    -- organisation's id); the user's or invite's organisation otherwise.
    organisation_id uuid,
    user_id         uuid        REFERENCES users (id) ON DELETE CASCADE,
    invite_id       uuid        REFERENCES invites (id) ON DELETE CASCADE,
    reset_id        uuid        REFERENCES password_resets (id) ON DELETE CASCADE,
    -- What the mail needs (its token among it), sealed with the
    -- key-encryption key for (mail_outbox.payload, id) when one is configured.
    payload         bytea       NOT NULL,
    request_id      text        CHECK (length(request_id) <= 128),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- After this the mail's link is useless: the row is given up.
    expires_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    -- A worker's claim: no other worker takes the row until claimed_until.
    claimed_by      uuid,
    claimed_until   timestamptz,
    -- The last failure, without the mail's content.
    last_error      text        CHECK (length(last_error) <= 512)
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at);
CREATE INDEX mail_outbox_recipient_idx ON mail_outbox (recipient, next_attempt_at);
CREATE INDEX mail_outbox_expires_idx ON mail_outbox (expires_at);
-- A reset flood for one address coalesces: one pending request per email
-- and scope.
CREATE UNIQUE INDEX mail_outbox_one_reset_request_idx
    ON mail_outbox (recipient, (coalesce(organisation_id, '00000000-0000-0000-0000-000000000000'::uuid)))
    WHERE kind = 'reset_request';
-- One pending reset mail per user.
CREATE UNIQUE INDEX mail_outbox_one_reset_mail_idx
    ON mail_outbox (user_id) WHERE kind = 'password_reset';
