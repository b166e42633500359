using MMSB, Test, Random

@info "MMSB tests" julia = VERSION threads = Threads.nthreads() gpu = gpu_available()

include("log_decode.jl")

@testset "MMSB" begin
    include("test_lifecycle.jl")
    include("test_pages.jl")
    include("test_deltas.jl")
    include("test_graph.jl")
    include("test_propagation.jl")
    include("test_events.jl")
    include("test_batch.jl")
    include("test_concurrency.jl")
    include("test_persistence.jl")
    include("test_gpu.jl")
    include("test_errors.jl")
    include("test_abi.jl")
end
