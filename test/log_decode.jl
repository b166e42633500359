# Decoding log entries by the documented format (docs/tlog_format.md), with
# no help from the package: shared by the persistence and concurrency tests.
# Included from runtests.jl before them.

# The little-endian UInt64 at byte offset `off` of `b`.
log_u64(b::AbstractVector{UInt8}, off::Integer = 0) = reinterpret(UInt64, b[off+1:off+8])[1]

# Apply one :delta (or :page_create / :page_delete) entry to a Dict of page
# bytes; other kinds change no page bytes.
function log_apply!(pg::Dict{UInt64,Vector{UInt8}}, e)
    if e.kind === :page_create
        pg[e.page_id] = zeros(UInt8, e.aux)
    elseif e.kind === :page_delete
        delete!(pg, e.page_id)
    elseif e.kind === :delta
        buf = pg[e.page_id]
        if e.encoding === :dense
            for i in 1:length(buf)
                if (e.mask[((i-1)>>3)+1] >> ((i - 1) & 7)) & 0x01 == 0x01
                    buf[i] = e.data[i]
                end
            end
        else
            k = 0
            for r in 0:16:length(e.mask)-16
                s, l = log_u64(e.mask, r), log_u64(e.mask, r + 8)
                for i in s+1:s+l
                    buf[i] = e.data[k+=1]
                end
            end
        end
    end
    return pg
end
