# Helper for the crash test in test_persistence.jl (run as a child process,
# killed with SIGKILL at a random moment).
#
#   julia --project=<repo> test/crash_writer.jl <log path>
#
# Opens (recovering) a file log with durability = :fsync. On the first run it
# creates page 1 (8 bytes, a UInt64 counter) and page 2, a passthrough copy of
# page 1. It prints "READY <page 1 value> <page 2 value>" after recovery, then
# writes page 1 = value + 1, value + 2, ... forever, printing "ACK <value>"
# (flushed) after each update_page returned, i.e. after its records (and the
# passthrough copy's) were on disk.
using MMSB

const path = ARGS[1]
const st = mmsb_start(MMSBConfig(tlog_path = path, durability = :fsync))
if get_page(st, 1) === nothing
    create_page(st; size = 8)
    create_page(st; size = 8)
    register_passthrough_recompute!(st, 2, 1)
end
value(id) = reinterpret(UInt64, read_page(st, id))[1]
let v = value(1)
    println("READY ", v, " ", value(2))
    flush(stdout)
    while true
        v += 1
        update_page(st, 1, collect(reinterpret(UInt8, [v])))
        println("ACK ", v)
        flush(stdout)
    end
end
