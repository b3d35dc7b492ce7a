-- Accounts: people, bots and users mapped from trusted external issuers.
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text,
    display_name text NOT NULL,
    password_hash text,
    role text NOT NULL CHECK (role IN ('admin', 'agent', 'seller', 'customer', 'bot')),
    disabled boolean NOT NULL DEFAULT false,
    external_issuer text,
    external_subject text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((external_issuer IS NULL) = (external_subject IS NULL))
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX users_external_key ON users (external_issuer, external_subject)
    WHERE external_issuer IS NOT NULL;
CREATE INDEX users_created_at_idx ON users (created_at, id);

-- Opaque refresh tokens, stored as SHA-256 digests and rotated on every use.
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Long-lived, named, revocable bot tokens, stored as SHA-256 digests.
CREATE TABLE bot_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX bot_tokens_user_idx ON bot_tokens (user_id);
