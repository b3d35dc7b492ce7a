-- Rooms and their members; messages live in MongoDB, read markers here.
CREATE TABLE rooms (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    name text NOT NULL,
    topic text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rooms_public_idx ON rooms (id) WHERE kind = 'public';

CREATE TABLE room_members (
    room_id text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    display_name text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    last_read_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_idx ON room_members (user_id, room_id);
