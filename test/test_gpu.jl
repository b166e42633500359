@testset "gpu pages" begin
    @testset "threshold routing keeps small :gpu pages on the CPU" begin
        st = mmsb_start(config = MMSBConfig(gpu_threshold = 4096))
        p = create_page(st; size = 1024, location = :gpu)
        @test p.location === :cpu
        update_page(st, p.id, fill(0x02, 1024))
        @test read_page(st, p.id) == fill(0x02, 1024)
        mmsb_stop(st)
    end

    @testset "GPUs disabled: GPUUnavailableError, nothing created" begin
        st = mmsb_start(config = MMSBConfig(enable_gpu = false, gpu_threshold = 1024))
        before = MMSB.next_ids(st.handle)
        @test_throws GPUUnavailableError create_page(st; size = 4096, location = :gpu)
        @test MMSB.next_ids(st.handle) == before
        @test isempty(pages(st))
        mmsb_stop(st)
    end

    if !gpu_available()
        @info "gpu_available() is false: GPU page tests check the no-device behaviour only"
        @testset "no device: GPUUnavailableError, no crash" begin
            st = mmsb_start(config = MMSBConfig(gpu_threshold = 1024))
            @test_throws GPUUnavailableError create_page(st; size = 1 << 20, location = :gpu)
            @test isempty(pages(st))
            mmsb_stop(st)
        end
    else
        @testset "device pages agree with CPU pages (random deltas)" begin
            rng = MersenneTwister(5)
            st = mmsb_start(config = MMSBConfig(gpu_threshold = 1))
            for trial in 1:30
                size = rand(rng, [1, 100, 4096, 1 << 16, (1 << 20) + 3])
                g = create_page(st; size = size, location = :gpu)
                c = create_page(st; size = size)
                @test g.location === :gpu && c.location === :cpu
                for step in 1:4
                    data = read_page(st, c.id)
                    for _ in 1:rand(rng, 1:20)
                        i = rand(rng, 1:size); data[i] = rand(rng, UInt8)
                    end
                    update_page(st, g.id, data); update_page(st, c.id, data)
                    mask = [rand(rng) < 0.05 for _ in 1:size]
                    full = rand(rng, UInt8, size)
                    route_delta!(st, create_delta(st, g.id, mask, full))
                    route_delta!(st, create_delta(st, c.id, mask, full))
                    @test read_page(st, g.id) == read_page(st, c.id)
                    @test page_epoch(st, g.id) == page_epoch(st, c.id)
                end
                g2 = create_page(st; size = size, location = :gpu)
                register_passthrough_recompute!(st, g2.id, g.id)
                recompute_page!(st, g2.id)
                @test read_page(st, g2.id) == read_page(st, g.id)
            end
            mmsb_stop(st)
        end
    end
end
