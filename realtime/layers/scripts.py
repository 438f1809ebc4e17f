"""
The Lua scripts of BatchingRedisChannelLayer.group_send_many, and the Redis format they write.

They re-create channels-redis' own format (realtime/layers/compat.py lists it): group sorted sets of
channel names, channel sorted sets of serialized entries scored by time, entries a random prefix
plus msgpack, ``__asgi_channel__`` naming a message's channels. One addition is this layer's own:
an envelope entry (``ENVELOPE_KEY``) carrying many messages for the sockets of one server process.
"""

#: The key of an entry that carries several messages for the sockets of one server process.
ENVELOPE_KEY = "__inbox_envelope__"

# KEYS: group keys; ARGV[1]: the expiry cutoff. Drops expired members, returns each group's members.
MEMBERS_LUA = """
local out = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    out[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return out
"""

# ARGV: for each key i, its entry, its capacity, its score and how many messages the entry holds;
# then the expiry. Returns how many messages were dropped.
# The capacity is checked against each key's backlog (in entries) before this call (all of a key's
# entries of one batch are in the same call): a key that is not being read gets nothing more, and
# a batch is never cut by its own size.
PUSH_LUA = """
local n = #KEYS
local expiry = ARGV[4 * n + 1]
local dropped = 0
local backlog = {}
for i = 1, n do
    local key = KEYS[i]
    if backlog[key] == nil then
        redis.call('ZREMRANGEBYSCORE', key, 0, tonumber(ARGV[2 * n + i]) - tonumber(expiry))
        backlog[key] = redis.call('ZCOUNT', key, '-inf', '+inf')
    end
    if backlog[key] < tonumber(ARGV[n + i]) then
        redis.call('ZADD', key, ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', key, expiry)
    else
        dropped = dropped + tonumber(ARGV[3 * n + i])
    end
end
return dropped
"""


# One call for a whole batch on a single Redis host: the members of every group (KEYS), each
# message once per process key its members live on (as group_send_many's steps 2-4 build them in
# Python), and the push with PUSH_LUA's capacity check and expiry. ARGV: [1] the members' expiry
# cutoff, [2] the channel key prefix, [3] the message expiry, [4] the capacity, [5] the batch's first
# score, [6] messages per envelope, [7] the envelope's key, [8] the entries' random prefix (the
# serializer's length less 4 bytes: a counter makes each entry unique), then one msgpack body per
# group. Scores are written with 17 digits: Lua's tostring keeps 14, which would merge a key's
# entries a microsecond apart and let their random prefixes decide their order.
SEND_LUA = """
local n = #KEYS
local cutoff, prefix, expiry = ARGV[1], ARGV[2], tonumber(ARGV[3])
local capacity, first, envelope = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local envelope_key, entry_prefix = ARGV[7], ARGV[8]
-- lists[key] gets value appended; order lists the keys in the order they first came
local function append(lists, order, key, value)
    local list = lists[key]
    if list == nil then
        list = {}
        lists[key] = list
        order[#order + 1] = key
    end
    list[#list + 1] = value
end
local order, bodies = {}, {}
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
    local per_key, key_order = {}, {}
    for _, channel in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
        local bang = string.find(channel, '!', 1, true)
        append(per_key, key_order, bang and string.sub(channel, 1, bang) or channel, channel)
    end
    for _, key in ipairs(key_order) do
        local body = cmsgpack.unpack(ARGV[8 + i])
        body['__asgi_channel__'] = per_key[key]
        append(bodies, order, key, body)
    end
end
local dropped, count = 0, 0
for _, key in ipairs(order) do
    local list = bodies[key]
    local entries, weights = {}, {}
    if string.sub(key, -1) == '!' then
        for start = 1, #list, envelope do
            local chunk = {}
            for j = start, math.min(start + envelope - 1, #list) do
                chunk[#chunk + 1] = list[j]
            end
            entries[#entries + 1] = cmsgpack.pack({[envelope_key] = chunk})
            weights[#weights + 1] = #chunk
        end
    else
        for j = 1, #list do
            entries[#entries + 1] = cmsgpack.pack(list[j])
            weights[#weights + 1] = 1
        end
    end
    local channel_key = prefix .. key
    redis.call('ZREMRANGEBYSCORE', channel_key, 0, first - expiry)
    if redis.call('ZCOUNT', channel_key, '-inf', '+inf') < capacity then
        for seq, entry in ipairs(entries) do
            count = count + 1
            local score = string.format('%.17g', first + (seq - 1) * 1e-6)
            redis.call('ZADD', channel_key, score, entry_prefix .. struct.pack('>I4', count) .. entry)
        end
        redis.call('EXPIRE', channel_key, expiry)
    else
        for _, weight in ipairs(weights) do
            dropped = dropped + weight
        end
    end
end
return dropped
"""

#: Largest batch sent by SEND_LUA. The script unpacks and packs every message in Redis, which serves
#: every process' pump and can do nothing else meanwhile: for a bulk send or a broadcast (batches of
#: 1,000-2,000) that moved the publisher's work into Redis (its CPU doubled) with no gain, and a
#: broadcast's median frame came later in both pairs measured. Those keep the two calls; the few
#: events a batch holds under directed sends save a round trip (bench/JOURNAL.md, finding 52).
ONE_SCRIPT_MAX = 100
