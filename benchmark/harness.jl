# A small, honest benchmark harness (no registry packages): warm-up, then
# samples until a time budget is spent; each sample times a batch of calls
# and reports ns per call. Results: median, min, allocations per call.

using Printf, Statistics, Dates

struct Case
    name::String
    prepare::Function      # () -> ctx, untimed, before every sample
    op::Function           # ctx -> anything: the measured operation
    per_sample::Int        # operations per sample
    teardown::Function     # ctx -> nothing, untimed, after every sample
    unit_ops::Int          # "items" per operation (e.g. deltas per batch), for throughput
end
Case(name, prepare, op; per_sample = 100, teardown = _ -> nothing, unit_ops = 1) =
    Case(name, prepare, op, per_sample, teardown, unit_ops)

struct Result
    name::String
    samples::Int
    ops_per_sample::Int
    median_ns::Float64
    min_ns::Float64
    mean_ns::Float64
    allocs_bytes_per_op::Float64
    unit_ops::Int
end

function run_batch(op::F, ctx, n::Int) where {F}
    t0 = time_ns()
    for _ in 1:n
        op(ctx)
    end
    return time_ns() - t0
end

function alloc_batch(op::F, ctx, n::Int) where {F}
    return @allocated for _ in 1:n
        op(ctx)
    end
end

function measure(c::Case; budget_s::Float64 = 1.0, min_samples::Int = 5, max_samples::Int = 10_000)
    # Start every case from a collected heap (as BenchmarkTools' `gctrial`
    # does), so a case does not pay for the garbage of the cases before it.
    GC.gc()
    # warm-up: compile and settle caches
    ctx = c.prepare()
    run_batch(c.op, ctx, c.per_sample)
    c.teardown(ctx)
    ctx = c.prepare()
    alloc_batch(c.op, ctx, c.per_sample)
    c.teardown(ctx)
    times = Float64[]
    allocs = Float64[]
    deadline = time() + budget_s
    while (length(times) < min_samples || time() < deadline) && length(times) < max_samples
        ctx = c.prepare()
        t = run_batch(c.op, ctx, c.per_sample)
        push!(times, t / c.per_sample)
        c.teardown(ctx)
        if length(allocs) < 3
            ctx = c.prepare()
            push!(allocs, alloc_batch(c.op, ctx, c.per_sample) / c.per_sample)
            c.teardown(ctx)
        end
    end
    return Result(c.name, length(times), c.per_sample, median(times), minimum(times), mean(times),
                  minimum(allocs), c.unit_ops)
end

function fmt_time(ns)
    ns < 1e3 && return @sprintf("%.1f ns", ns)
    ns < 1e6 && return @sprintf("%.2f µs", ns / 1e3)
    ns < 1e9 && return @sprintf("%.2f ms", ns / 1e6)
    return @sprintf("%.2f s", ns / 1e9)
end

function print_table(io::IO, results::Vector{Result}, targets::Dict{String,String})
    @printf(io, "%-40s %12s %12s %10s %12s %s\n", "case", "median", "min", "samples", "alloc B/op", "target")
    println(io, "-"^100)
    for r in results
        @printf(io, "%-40s %12s %12s %10d %12.0f %s\n", r.name, fmt_time(r.median_ns), fmt_time(r.min_ns),
                r.samples, r.allocs_bytes_per_op, get(targets, r.name, ""))
        if r.unit_ops > 1
            @printf(io, "%-40s %12s per item, %.2f M items/s\n", "", fmt_time(r.median_ns / r.unit_ops),
                    r.unit_ops / r.median_ns * 1e3)
        end
    end
end

json_escape(s::AbstractString) = replace(replace(s, "\\" => "\\\\"), "\"" => "\\\"")
json(x::AbstractString) = string('"', json_escape(x), '"')
json(x::Real) = isfinite(x) ? string(x) : "null"
json(x::Bool) = x ? "true" : "false"
json(x::Nothing) = "null"
json(x::AbstractDict) = string("{", join((string(json(string(k)), ": ", json(v)) for (k, v) in x), ", "), "}")
json(x::AbstractVector) = string("[", join((json(v) for v in x), ", "), "]")
json(r::Result) = json(Dict("name" => r.name, "samples" => r.samples, "ops_per_sample" => r.ops_per_sample,
                            "median_ns" => r.median_ns, "min_ns" => r.min_ns, "mean_ns" => r.mean_ns,
                            "alloc_bytes_per_op" => r.allocs_bytes_per_op, "items_per_op" => r.unit_ops))

function write_json(path::AbstractString, results::Vector{Result}, extra::Dict{String,Any})
    meta = Dict{String,Any}("date" => string(now()), "julia" => string(VERSION), "threads" => Threads.nthreads(),
                            "cpu" => Sys.cpu_info()[1].model, "cores" => Sys.CPU_THREADS, "os" => string(Sys.KERNEL))
    merge!(meta, extra)
    open(path, "w") do io
        print(io, "{\"meta\": ", json(meta), ",\n \"results\": [\n  ", join((json(r) for r in results), ",\n  "), "\n]}\n")
    end
end
