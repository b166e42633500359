# Helper for the crash test in test_persistence.jl (run as a child process,
# killed with SIGKILL at a random moment).
#
#   julia --project=<repo> test/crash_writer.jl <log path>
#
# Opens (recovering) a file log with durability = :fsync. On the first run it
# creates page 1 (8 bytes, a UInt64 counter), page 2, a passthrough copy of
# page 1, and page 3, three times page 1 through a Julia closure (registered
# again after every recovery: closures are not logged). It prints
# "READY <page 1 value> <page 2 value> <page 3 value>" after recovery, then
# writes page 1 = value + 1, value + 2, ... forever, printing "ACK <value>"
# (flushed) after each update_page returned, i.e. after its records (and those
# of its propagation cycle) were on disk.
using MMSB

const path = ARGS[1]
const st = mmsb_start(MMSBConfig(tlog_path = path, durability = :fsync))
if get_page(st, 1) === nothing
    create_page(st; size = 8)
    create_page(st; size = 8)
    register_passthrough_recompute!(st, 2, 1)
    create_page(st; size = 8)
end
value(id) = reinterpret(UInt64, read_page(st, id))[1]
const v3 = value(3)
# every 8th recompute is slow (20 ms of work), so that most kills land while
# a cycle waits for its closure page
register_recompute!(st, 3, [1]) do view, page
    v = reinterpret(UInt64, read_page(view, 1))[1]
    t = time_ns()
    while v % 8 == 0 && time_ns() - t < 20_000_000 end
    collect(reinterpret(UInt8, [3v]))
end
let v = value(1)
    println("READY ", v, " ", value(2), " ", v3)
    flush(stdout)
    while true
        v += 1
        update_page(st, 1, collect(reinterpret(UInt8, [v])))
        println("ACK ", v)
        flush(stdout)
    end
end
