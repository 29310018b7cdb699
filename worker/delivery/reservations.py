"""Who holds which message: every item a worker takes is recorded under a tag of its own, beside a
heartbeat, so the messages of a worker that died come back as soon as its heartbeat stops.

Each consuming channel has an owner id (host, pid, a random part). TAKE moves an item from its
queue list into kombu's `unacked` hash (`[item, "", queue]`, kombu's record, so kombu's own code
can still read it) under the tag `<owner>/<n>`, and notes in the owner's hash which list it came
from and how long it is. The owner refreshes `unacked_alive:<owner>` (a key with a TTL of
BROKER_HEARTBEAT_S) at every take and every few seconds. SWEEP, run by every live worker
at that pace, gives back every reservation of an owner whose heartbeat key has expired, and only
those: a live worker's long task or waiting retry is never handed out twice because of it.

Every script works on the bytes in Redis: an item is put back by slicing its record, never
parsed or re-encoded, so garbage and oversized items come back exactly as they were pushed.
"""

from __future__ import annotations

import os
import socket
import uuid

OWNERS = "unacked_owners"  # the set of owner ids that may hold reservations


def new_owner() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}".replace("/", "_")


def owner_of(tag: str) -> str | None:
    """The owner a tag was made for, or None for a tag TAKE did not make (kombu's own append)."""
    owner, sep, _ = tag.rpartition("/")
    return owner if sep else None


def owned_key(owner: str) -> str:
    return f"unacked_owner:{owner}"


def alive_key(owner: str) -> str:
    return f"unacked_alive:{owner}"


# Put one reservation back on the list it was taken from (or leave it, if its record is gone).
_GIVE_BACK = """
local function give_back(unacked, index, owned, tag, leftmost)
  local where = redis.call('HGET', owned, tag)
  local record = redis.call('HGET', unacked, tag)
  redis.call('HDEL', owned, tag)
  if not where or not record then return 0 end
  local space = string.find(where, ' ', 1, true)
  local size = tonumber(string.sub(where, 1, space - 1))
  local list = string.sub(where, space + 1)
  redis.call(leftmost and 'LPUSH' or 'RPUSH', list, string.sub(record, 2, 1 + size))
  redis.call('HDEL', unacked, tag)
  redis.call('ZREM', index, tag)
  return 1
end
"""

# Take the first item of the first non-empty list; from a task queue, record it as this owner's.
# KEYS: the lists, then unacked, unacked_index, unacked_owners, the owner's hash, its heartbeat.
# ARGV: now, the size above which only the head is returned, the head's size, the tag, the
# heartbeat TTL in ms, the owner, then per list its queue name ('' if not a task queue).
# Returns {list, item (or its head), tag or '', size}. The size is decided here, in Redis: an
# oversized item never leaves it whole, and stays recorded until the worker dead-letters it.
TAKE = """
local n = #KEYS - 5
redis.call('SET', KEYS[n + 5], '1', 'PX', ARGV[5])
for i = 1, n do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local queue, tag = ARGV[6 + i], ''
    if queue ~= '' then
      tag = ARGV[4]
      redis.call('SADD', KEYS[n + 3], ARGV[6])
      redis.call('HSET', KEYS[n + 4], tag, #item .. ' ' .. KEYS[i])
      redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
      redis.call('HSET', KEYS[n + 1], tag, '[' .. item .. ',"",' .. cjson.encode(queue) .. ']')
    end
    if #item > tonumber(ARGV[2]) then
      return {KEYS[i], string.sub(item, 1, tonumber(ARGV[3])), tag, #item}
    end
    return {KEYS[i], item, tag, #item}
  end
end
return false
"""

# Give back every reservation of every owner whose heartbeat expired. KEYS: unacked,
# unacked_index, unacked_owners. ARGV: the key prefix. Returns how many went back.
SWEEP = _GIVE_BACK + """
local back = 0
for _, owner in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('EXISTS', ARGV[1] .. 'unacked_alive:' .. owner) == 0 then
    local owned = ARGV[1] .. 'unacked_owner:' .. owner
    local tags = redis.call('HKEYS', owned)
    for _, tag in ipairs(tags) do
      back = back + give_back(KEYS[1], KEYS[2], owned, tag, false)
    end
    redis.call('DEL', owned)
    redis.call('SREM', KEYS[3], owner)
  end
end
return back
"""

# Give back one reservation now (a reject with requeue, a shutdown, the visibility timeout).
# KEYS: unacked, unacked_index, the owner's hash. ARGV: the tag, '1' to put it at the far end.
RESTORE = _GIVE_BACK + """
return give_back(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2] == '1')
"""
