-- Chat messages as persisted from the Kafka message topic.
--
-- `id` (UUIDv7, from the chat node) makes replays of a batch idempotent;
-- UNIQUE (room, seq) guards the per-room sequence and is the index that
-- history pagination (`WHERE room = $1 AND seq < $2 ORDER BY seq DESC`) and
-- replay (`WHERE room = $1 AND seq > $2 ORDER BY seq`) walk.
CREATE TABLE messages (
    id              uuid        PRIMARY KEY,
    room            text        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq > 0),
    user_name       text        NOT NULL,
    body            text        NOT NULL,
    sent_at         timestamptz NOT NULL,
    produced_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    origin_node     text        NOT NULL,
    client_id       text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    CONSTRAINT messages_room_seq UNIQUE (room, seq)
);
