//! Names of everything a chat cluster keeps in Redis, and the Lua scripts
//! that update them atomically.
//!
//! Every key and channel starts with the cluster's prefix, so several chat
//! clusters can share one Redis. Room names are restricted to
//! `[A-Za-z0-9_.:-]`, so they can be embedded without escaping; user names
//! and client ids are free text and are length-prefixed where they appear.

/// Separates node and user in a presence entry; cannot appear in either
/// (node ids come from configuration; user names are checked for control
/// characters).
pub const ENTRY_SEPARATOR: char = '\u{1f}';

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches(':').to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Pub/sub channel of a room's live events.
    pub fn channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    /// The room a channel belongs to, if it is one of this cluster's.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)?.strip_prefix(":room:")
    }

    /// Counter of a room's last `seq`. Never expires: seqs must not restart.
    pub fn seq(&self, room: &str) -> String {
        format!("{}:seq:{room}", self.prefix)
    }

    /// Lock held from taking a seq until Kafka acknowledged the message, so
    /// that a room's records reach its partition in seq order.
    pub fn send_lock(&self, room: &str) -> String {
        format!("{}:sendlock:{room}", self.prefix)
    }

    /// Sorted set of a room's recent messages, scored by `seq`.
    pub fn history(&self, room: &str) -> String {
        format!("{}:hist:{room}", self.prefix)
    }

    /// Highest `seq` trimmed from a room's history: replays from below it
    /// are incomplete.
    pub fn history_floor(&self, room: &str) -> String {
        format!("{}:histfloor:{room}", self.prefix)
    }

    /// The ack of a send, by user and client id, for the dedupe window.
    pub fn dedupe(&self, user: &str, client_id: &str) -> String {
        format!("{}:dedupe:{}:{user}:{client_id}", self.prefix, user.len())
    }

    /// Set of `node<US>user` entries of the users present in a room.
    pub fn members(&self, room: &str) -> String {
        format!("{}:members:{room}", self.prefix)
    }

    /// Set of rooms in which a node has members (for cleanup when it dies).
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:noderooms:{node}", self.prefix)
    }

    /// Heartbeat of a live node (expires when the node stops beating).
    pub fn node_alive(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// Set of nodes that registered presence entries.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Prefix that `members_prefix_of` strips to find a room.
    pub fn members_prefix(&self) -> String {
        format!("{}:members:", self.prefix)
    }
}

/// A presence entry: which node holds sessions of which user.
pub fn presence_entry(node: &str, user: &str) -> String {
    format!("{node}{ENTRY_SEPARATOR}{user}")
}

/// Splits a presence entry into (node, user).
pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
    entry.split_once(ENTRY_SEPARATOR)
}

/// Takes the room's send lock (token `ARGV[2]`, expiring after `ARGV[3]`
/// ms) and, if it was free, the next seq; returns -1 when another send holds
/// the lock. The seq never goes below `ARGV[1]`: if Redis lost its data
/// (restart without persistence) the counter restarts from the highest seq
/// this node has seen instead of reusing seqs.
/// KEYS: seq, send lock.
pub const LOCK_AND_NEXT_SEQ: &str = r#"
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return -1
end
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
return seq
"#;

/// Releases a send lock if it is still ours. KEYS: lock. ARGV: token.
pub const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Adds a message to a room's recent history, trims it to `ARGV[3]`
/// messages while remembering the highest trimmed seq, and refreshes the TTL.
/// KEYS: history, floor. ARGV: seq, message JSON, capacity, ttl seconds.
pub const APPEND_HISTORY: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  local trimmed = redis.call('ZRANGE', KEYS[1], excess - 1, excess - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(trimmed[2]) > floor then
    redis.call('SET', KEYS[2], trimmed[2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
"#;

/// Reads a replay: `{last seq, history exists, floor, messages...}` for
/// seqs above `ARGV[1]`, at most `ARGV[2]` of them.
/// KEYS: history, floor, seq.
pub const READ_HISTORY: &str = r#"
local exists = redis.call('EXISTS', KEYS[1])
local floor = redis.call('GET', KEYS[2]) or '0'
local last = redis.call('GET', KEYS[3]) or '0'
local messages = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
table.insert(messages, 1, floor)
table.insert(messages, 1, tostring(exists))
table.insert(messages, 1, last)
return messages
"#;

/// Adds `node<US>user` to a room; returns 1 when the user was not present in
/// the room on any node before.
/// KEYS: members, node rooms, nodes. ARGV: entry, user, room, node.
pub const PRESENCE_ADD: &str = r#"
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
if added == 0 then return 0 end
local suffix = '\31' .. ARGV[2]
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if entry ~= ARGV[1] and string.sub(entry, -#suffix) == suffix then return 0 end
end
return 1
"#;

/// Removes `node<US>user` from a room; returns 1 when the user is now absent
/// from the room on every node.
/// KEYS: members. ARGV: entry, user.
pub const PRESENCE_REMOVE: &str = r#"
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 0 then return 0 end
local suffix = '\31' .. ARGV[2]
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(entry, -#suffix) == suffix then return 0 end
end
return 1
"#;

/// Drops every presence entry of a dead node; returns `room, user` pairs
/// (flattened) of users who are now absent from a room. Atomic, so when
/// several nodes reap at once only one of them announces the departures.
/// KEYS: node rooms, nodes. ARGV: node, members key prefix.
pub const REAP_NODE: &str = r#"
local gone = {}
local prefix = ARGV[1] .. '\31'
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. room
  local removed = {}
  for _, entry in ipairs(redis.call('SMEMBERS', key)) do
    if string.sub(entry, 1, #prefix) == prefix then
      redis.call('SREM', key, entry)
      table.insert(removed, string.sub(entry, #prefix + 1))
    end
  end
  for _, user in ipairs(removed) do
    local suffix = '\31' .. user
    local still = false
    for _, entry in ipairs(redis.call('SMEMBERS', key)) do
      if string.sub(entry, -#suffix) == suffix then still = true break end
    end
    if not still then
      table.insert(gone, room)
      table.insert(gone, user)
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return gone
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_cluster_prefix() {
        let keys = Keys::new("ns/cluster:");
        assert_eq!(keys.channel("lobby"), "ns/cluster:room:lobby");
        assert_eq!(keys.room_of_channel("ns/cluster:room:lobby"), Some("lobby"));
        assert_eq!(keys.room_of_channel("other:room:lobby"), None);
        assert_eq!(keys.seq("a"), "ns/cluster:seq:a");
        // Length-prefixing keeps `a:b` + `c` apart from `a` + `b:c`.
        assert_ne!(keys.dedupe("a:b", "c"), keys.dedupe("a", "b:c"));
    }

    #[test]
    fn presence_entries_round_trip() {
        let entry = presence_entry("node-1", "Ada Lovelace");
        assert_eq!(split_entry(&entry), Some(("node-1", "Ada Lovelace")));
    }
}
