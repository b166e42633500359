"""
    MMSB

Memory-Mapped State Bus: application state in fixed-size byte pages; every
change a logged, replayable byte-level delta; derived pages recomputed in
topological order when their parents change. See the README and `docs/`.
"""
module MMSB

using Libdl

export MMSBConfig, MMSBState, mmsb_start, mmsb_stop, reset!, gpu_available, live_native_states,
       Page, create_page, delete_page!, get_page, pages, read_page, read_page!, page_epoch, update_page,
       Delta, create_delta, route_delta!, batch_route_deltas!, merge_deltas,
       add_dependency!, remove_dependency!, children, parents, topological_order, descendants,
       dependencies, to_dot, write_dot,
       register_recompute!, register_passthrough_recompute!, RecomputeView, RecomputeSignature,
       propagate_change!, recompute_page!, compute_signature,
       EventType, PAGE_CREATED, PAGE_DELETED, PAGE_INVALIDATED, DELTA_APPLIED, PAGE_CHANGED,
       Event, Subscription, EventBatch, subscribe!, unsubscribe!, collect_events!, flush_events!, with_event_batch,
       checkpoint_log!, load_checkpoint!, replay!, replay_to_epoch, TLogEntry, tlog_entries, canonical_snapshot,
       get_pooled_state!, return_to_pool!, stats,
       MMSBError, PageNotFoundError, CycleError, UndeclaredDependencyError, RecomputeError, StaleDeltaError,
       TLogCorruptError, CheckpointError, GPUUnavailableError, StateClosedError, MMSBIOError,
       MMSBInternalError, CallbackError

include("ffi/library.jl")
include("ffi/types.jl")
include("Errors.jl")
include("ffi/errors.jl")
include("ffi/calls.jl")
include("State.jl")
include("Pages.jl")
include("Deltas.jl")
include("EventSystem.jl")
include("PropagationEngine.jl")
include("DeltaRouter.jl")
include("Graph.jl")
include("Persistence.jl")
include("Pool.jl")
include("Stats.jl")

__init__() = check_library()

end # module
