# Deltas built by the caller: create_delta, merge_deltas. A delta is dense
# (mask::BitVector of page size, payload of page size) or sparse
# (mask::Vector{UnitRange{Int}}, payload = the masked bytes), chosen by density.

"""
    Delta

A byte-level change of one page. Fields: `id`, `page_id`, `epoch` (the page's
epoch when the delta was created: its base), `mask` (a `BitVector` of page
size when dense, or sorted disjoint 1-based byte ranges when sparse),
`payload` (page-size bytes when dense, with zeros outside the mask; the masked
bytes in order when sparse), `source::Symbol`, `timestamp` (a logical clock,
never wall-clock time) and `page_size`.
"""
struct Delta
    id::UInt64
    page_id::UInt64
    epoch::UInt64
    mask::Union{BitVector,Vector{UnitRange{Int}}}
    payload::Vector{UInt8}
    source::Symbol
    timestamp::UInt64
    page_size::Int
    native_mask::Vector{UInt8}   # the mask as the C ABI wants it, encoded once
    function Delta(id::Integer, page_id::Integer, epoch::Integer, mask::Union{BitVector,Vector{UnitRange{Int}}},
                   payload::Vector{UInt8}, source::Symbol, timestamp::Integer, page_size::Integer)
        new(id, page_id, epoch, mask, payload, source, timestamp, page_size, native_mask(mask, page_size))
    end
end

# Dense: LSB-first bitmap bytes. Sparse: (start0, len) UInt64 pairs as bytes.
function native_mask(mask::BitVector, size::Integer)
    out = zeros(UInt8, cld(size, 8))
    @inbounds for i in 1:length(mask)
        mask[i] && (out[((i-1)>>3)+1] |= UInt8(1) << ((i - 1) & 7))
    end
    return out
end
function native_mask(ranges::Vector{UnitRange{Int}}, size::Integer)
    out = Vector{UInt8}(undef, 16 * length(ranges))
    k = 0
    for r in ranges, v in (UInt64(first(r) - 1), UInt64(length(r)))
        for b in 0:7
            out[k+=1] = (v >> (8b)) % UInt8
        end
    end
    return out
end

isdense(d::Delta) = d.mask isa BitVector
masked_bytes(d::Delta) = isdense(d) ? count(d.mask) : mapreduce(length, +, d.mask; init = 0)

function Base.:(==)(a::Delta, b::Delta)
    a.id == b.id && a.page_id == b.page_id && a.epoch == b.epoch && a.mask == b.mask &&
        a.payload == b.payload && a.source == b.source && a.timestamp == b.timestamp && a.page_size == b.page_size
end

function Base.show(io::IO, d::Delta)
    enc = isdense(d) ? "dense" : string("sparse ", length(d.mask), " ranges")
    print(io, "Delta(id=", d.id, ", page=", d.page_id, ", base epoch=", d.epoch, ", ", enc, ", ",
          masked_bytes(d), "/", d.page_size, " bytes, source=:", d.source, ")")
end

const SOURCES = (:api, :propagation, :batch, :replay)
function source_code(s::Symbol)
    i = findfirst(==(s), SOURCES)
    (i === nothing || s === :propagation) &&
        throw(ArgumentError("delta source must be :api, :batch or :replay (:propagation is reserved for recompute results), got :$s"))
    return UInt8(i - 1)
end
source_symbol(c::Integer) = 0 <= c < length(SOURCES) ? SOURCES[c+1] : Symbol("source", c)

# Maximal runs of set bits, as 1-based ranges.
function mask_ranges(mask::AbstractVector{Bool})
    ranges = UnitRange{Int}[]
    n = length(mask)
    i = 1
    @inbounds while i <= n
        if mask[i]
            j = i
            while j < n && mask[j+1]
                j += 1
            end
            push!(ranges, i:j)
            i = j + 1
        else
            i += 1
        end
    end
    return ranges
end

# Sparse when its encoding (16 bytes per range + the bytes) is smaller than
# the dense one (a bit per byte + a full payload).
prefer_sparse(nranges::Int, nbytes::Int, size::Int) = 16 * nranges + nbytes < cld(size, 8) + size

# Build the canonical (density-chosen) representation from a full-size mask and payload.
function encode(mask::AbstractVector{Bool}, full::AbstractVector{UInt8}, size::Int)
    ranges = mask_ranges(mask)
    nbytes = mapreduce(length, +, ranges; init = 0)
    if prefer_sparse(length(ranges), nbytes, size)
        payload = Vector{UInt8}(undef, nbytes)
        k = 0
        for r in ranges, i in r
            payload[k+=1] = full[i]
        end
        return ranges, payload
    else
        bits = BitVector(mask)
        payload = zeros(UInt8, size)
        @inbounds for i in 1:size
            bits[i] && (payload[i] = full[i])
        end
        return bits, payload
    end
end

function check_ranges(ranges, size::Int)
    last = 0
    for r in ranges
        isempty(r) && throw(ArgumentError("delta ranges must not be empty, got $r"))
        first(r) > last || throw(ArgumentError("delta ranges must be sorted and disjoint; $r overlaps or precedes an earlier range"))
        1 <= first(r) && Base.last(r) <= size || throw(ArgumentError("delta range $r is outside the page (1:$size)"))
        last = Base.last(r)
    end
end

"""
    create_delta(state, page_id, mask, payload; source = :api) -> Delta

Build a delta for a page without applying it (see [`route_delta!`](@ref)).
`mask` is either a `BitVector`/`Vector{Bool}` of page size with `payload` of
page size, or a vector of sorted, disjoint 1-based byte ranges with `payload`
holding either just the masked bytes, in order, or the full page. The delta
is stored dense or sparse, whichever is smaller. Its base epoch is the page's
epoch now; it gets the next delta id. `source` is `:api`, `:batch` or
`:replay` (`:propagation` marks recompute results only).

Throws `PageNotFoundError`, `DimensionMismatch` (mask or payload size),
`ArgumentError` (bad ranges or source).

```julia
d = create_delta(state, p.id, [1:4], UInt8[1, 2, 3, 4])
route_delta!(state, d)
```
"""
create_delta(st::MMSBState, id, mask, payload; source = :api) =
    throw(ArgumentError("create_delta needs a mask vector (Bools or ranges) and a payload vector of UInt8, got $(typeof(mask)) and $(typeof(payload))"))
function create_delta(st::MMSBState, id, mask::AbstractVector, payload::AbstractVector{UInt8}; source::Symbol = :api)
    pid = page_id(id)
    source_code(source)
    size = Int(with_state(h -> page_info(h, pid), st).size)
    if eltype(mask) == Bool
        length(mask) == size || throw(DimensionMismatch("delta mask has length $(length(mask)), page $pid has size $size"))
        length(payload) == size || throw(DimensionMismatch("a dense delta's payload must have the page size $size, got $(length(payload))"))
        m, pl = encode(mask, payload, size)
    elseif eltype(mask) <: UnitRange || all(r -> r isa UnitRange{<:Integer}, mask)
        ranges = UnitRange{Int}[Int(first(r)):Int(last(r)) for r in mask]
        check_ranges(ranges, size)
        nbytes = mapreduce(length, +, ranges; init = 0)
        if length(payload) == nbytes
            full = zeros(UInt8, size)
            k = 0
            for r in ranges, i in r
                full[i] = payload[k+=1]
            end
        elseif length(payload) == size
            full = payload
        else
            throw(DimensionMismatch("a ranged delta's payload must hold the $nbytes masked bytes or the full page ($size), got $(length(payload))"))
        end
        bits = falses(size)
        for r in ranges
            bits[r] .= true
        end
        m, pl = encode(bits, full, size)
    else
        throw(ArgumentError("delta mask must be a Bool vector of page size or a vector of byte ranges, got $(typeof(mask))"))
    end
    stamp = with_state(h -> delta_stamp(h, pid), st)
    return Delta(stamp.id, pid, stamp.base_epoch, m, pl, source, stamp.timestamp, size)
end

# Full-size view of a delta: (mask::BitVector, payload::Vector{UInt8}).
function expand(d::Delta)
    if isdense(d)
        return copy(d.mask), copy(d.payload)
    end
    bits = falses(d.page_size)
    full = zeros(UInt8, d.page_size)
    k = 0
    for r in d.mask, i in r
        bits[i] = true
        full[i] = d.payload[k+=1]
    end
    return bits, full
end

"""
    merge_deltas(a, b) -> Delta

The delta of applying `a` then `b` to one page: the union of their masks,
`b`'s bytes where both write. Merging is associative; a delta with an empty
mask is its identity (`merge_deltas(e, a) == a == merge_deltas(a, e)`). The
result carries `a`'s base epoch and `b`'s id, source and timestamp.
Throws `ArgumentError` for deltas of different pages.
"""
function merge_deltas(a::Delta, b::Delta)
    a.page_id == b.page_id || throw(ArgumentError("cannot merge deltas of different pages ($(a.page_id) and $(b.page_id))"))
    a.page_size == b.page_size || throw(DimensionMismatch("deltas of page $(a.page_id) disagree on its size ($(a.page_size) vs $(b.page_size))"))
    masked_bytes(a) == 0 && return b
    masked_bytes(b) == 0 && return a
    ma, pa = expand(a)
    mb, pb = expand(b)
    @inbounds for i in 1:a.page_size
        if mb[i]
            pa[i] = pb[i]
            ma[i] = true
        end
    end
    m, pl = encode(ma, pa, a.page_size)
    return Delta(b.id, a.page_id, a.epoch, m, pl, b.source, b.timestamp, a.page_size)
end

# The native description of a delta; the caller keeps `bufs` alive (GC.@preserve).
function native_delta(d::Delta)
    mask = d.native_mask
    bufs = (mask, d.payload)
    desc = CDeltaDesc(d.id, d.page_id, d.epoch, d.timestamp, source_code(d.source), isdense(d) ? ENC_DENSE : ENC_SPARSE,
                      0, 0, pointer(mask), length(mask), pointer(d.payload), length(d.payload))
    return desc, bufs
end
