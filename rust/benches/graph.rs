//! Graph: topological order and BFS on 1024 pages, edge add (with its cycle
//! check) in a 10,000-page graph.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mmsb::graph::Graph;
use std::time::Duration;

/// A layered DAG: node i gets edges from up to 3 earlier nodes.
fn dag(n: u64) -> Graph {
    let mut g = Graph::new();
    for i in 1..=n {
        g.add_node(i);
    }
    let mut x = 0x9e3779b97f4a7c15u64;
    for i in 2..=n {
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = 1 + x % (i - 1);
            let _ = g.add_edge(p, i, 0);
        }
    }
    g
}

fn benches(c: &mut Criterion) {
    let mut grp = c.benchmark_group("graph");
    grp.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(30);
    let g = dag(1024);
    let mut out = Vec::new();
    grp.bench_function("topo_1024", |b| b.iter(|| g.topo(black_box(&mut out))));
    let mut g2 = dag(1024);
    grp.bench_function("bfs_1024", |b| b.iter(|| g2.descendants(black_box(1), &mut out)));
    let mut big = dag(10_000);
    // cycle check that must search (child 200 sits below parent 9000): DFS
    // from 200 pruned at height(9000), finds no cycle
    grp.bench_function("check_edge_10k_search", |b| b.iter(|| big.check_edge(black_box(9_000), black_box(200)).is_ok()));
    grp.bench_function("check_edge_10k_cycle", |b| b.iter(|| big.check_edge(black_box(9_999), black_box(1)).is_err()));
    // add + remove of an edge with height(child) > height(parent): free check
    grp.bench_function("add_remove_edge_10k", |b| {
        b.iter(|| {
            let _ = big.add_edge(black_box(3), black_box(9_990), 0);
            big.remove_edge(3, 9_990);
        })
    });
    grp.finish();
}

criterion_group!(graph, benches);
criterion_main!(graph);
