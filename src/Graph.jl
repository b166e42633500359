# The dependency graph (stored natively): edges, queries, Graphviz output.

const EDGE_KINDS = (:data, :control)
function edge_kind_code(kind::Symbol)
    i = findfirst(==(kind), EDGE_KINDS)
    i === nothing && throw(ArgumentError("dependency kind must be one of $(EDGE_KINDS), got :$kind"))
    return UInt8(i - 1)
end
edge_kind_symbol(c::Integer) = 0 <= c < length(EDGE_KINDS) ? EDGE_KINDS[c+1] : Symbol("kind", c)

"""
    add_dependency!(state, parent, child, kind = :data)

Declare that `child` depends on `parent`. Both pages must exist
(`PageNotFoundError`). A self-loop or an edge that would close a cycle raises
`CycleError` and leaves the graph unchanged. Adding an existing edge is a
no-op. `kind` is `:data` or `:control` (informational).
"""
function add_dependency!(st::MMSBState, parent, child, kind::Symbol = :data)
    k = edge_kind_code(kind)
    pid, cid = page_id(parent), page_id(child)
    with_state(h -> edge_add(h, pid, cid, k), st)
    return nothing
end

"""
    remove_dependency!(state, parent, child)

Remove the edge `parent -> child` (a no-op if there is none). A recompute
registered on `child` that reads `parent` is removed as well, so the graph and
the declared dependencies never disagree.
"""
function remove_dependency!(st::MMSBState, parent, child)
    pid, cid = page_id(parent), page_id(child)
    with_state(st) do h
        info = page_info(h, cid)
        if info.recompute != RECOMPUTE_NONE && pid in signature(h, cid)[1]
            recompute_set(h, cid, RECOMPUTE_NONE, UInt64[])
            delete!(st.recomputes, cid)
        end
        edge_remove(h, pid, cid)
    end
    return nothing
end

"""
    children(state, id) -> Vector{UInt64}

Ids of the pages that depend on `id`, ascending.
"""
children(st::MMSBState, id) = (pid = page_id(id); with_state(h -> page_children(h, pid), st))

"""
    parents(state, id) -> Vector{UInt64}

Ids of the pages `id` depends on, ascending.
"""
parents(st::MMSBState, id) = (pid = page_id(id); with_state(h -> page_parents(h, pid), st))

"""
    topological_order(state) -> Vector{UInt64}

Every page id, parents before children (ties by ascending id).
"""
topological_order(st::MMSBState) = with_state(graph_topo, st)

"""
    descendants(state, id) -> Vector{UInt64}

Every page reachable from `id` (not `id` itself), in breadth-first order.
"""
descendants(st::MMSBState, id) = (pid = page_id(id); with_state(h -> graph_descendants(h, pid), st))

"""
    dependencies(state) -> Vector{Tuple{UInt64,UInt64,Symbol}}

Every edge as `(parent, child, kind)`, sorted.
"""
dependencies(st::MMSBState) = sort!([(e.parent, e.child, edge_kind_symbol(e.kind)) for e in with_state(graph_edges, st)])

"""
    write_dot(io, state)

Write the page graph in Graphviz dot format: one node per page (id, size,
epoch, location, recompute) and one edge per dependency.
"""
write_dot(io::IO, st::MMSBState) = with_state(h -> write_dot_native(io, h), st)

function write_dot_native(io::IO, h::Handle)
    println(io, "digraph mmsb {")
    println(io, "  node [shape=box, fontname=\"monospace\"];")
    for id in page_ids(h)
        i = page_info(h, id)
        rc = i.recompute == RECOMPUTE_PASSTHROUGH ? "\\npassthrough" : i.recompute == RECOMPUTE_CLOSURE ? "\\nrecompute" : ""
        stale = i.stale != 0 ? ", color=red" : ""
        println(io, "  p", id, " [label=\"page ", id, "\\n", i.size, " B, epoch ", i.epoch, ", ",
                location_symbol(i.location), rc, "\"", stale, "];")
    end
    for e in graph_edges(h)
        style = e.kind == 0 ? "" : " [style=dashed]"
        println(io, "  p", e.parent, " -> p", e.child, style, ";")
    end
    println(io, "}")
    return nothing
end

"""
    to_dot(state) -> String

The Graphviz text of [`write_dot`](@ref).
"""
to_dot(st::MMSBState) = sprint(write_dot, st)
