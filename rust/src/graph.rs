//! The dependency graph: edges with kinds, parents/children in ascending id
//! order, and exact heights for an incremental topological order.
//!
//! Height = 0 without parents, else 1 + the largest parent height, kept
//! exact after every change, so it depends on the edge set alone (a graph
//! rebuilt from a checkpoint orders pages exactly like the live one).
//! Adding `p -> c` with `height(c) > height(p)` cannot close a cycle;
//! otherwise a DFS from `c` pruned at heights `>= height(p)` looks for `p`.
//! The topological order is all pages sorted by `(height, id)`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::error::{Error, ErrorKind, Result};

#[derive(Default, Clone)]
struct Node {
    present: bool,
    height: u64,
    children: Vec<(u64, u8)>,
    parents: Vec<u64>,
}

#[derive(Default)]
pub struct Graph {
    nodes: Vec<Node>,
    count: usize,
    edges: usize,
    stamp: Vec<u32>,
    gen: u32,
    stack: Vec<u64>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn clear(&mut self) {
        *self = Graph::default();
    }

    #[inline]
    fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.get(id as usize).filter(|n| n.present)
    }

    #[inline]
    fn node_mut(&mut self, id: u64) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize).filter(|n| n.present)
    }

    fn missing(id: u64) -> Error {
        Error::new(ErrorKind::PageNotFound, format!("page {id} not found in the graph"))
    }

    pub fn contains(&self, id: u64) -> bool {
        self.node(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn edge_count(&self) -> usize {
        self.edges
    }

    pub fn add_node(&mut self, id: u64) {
        let i = id as usize;
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, Node::default());
            self.stamp.resize(i + 1, 0);
        }
        if !self.nodes[i].present {
            self.nodes[i] = Node { present: true, ..Node::default() };
            self.count += 1;
        }
    }

    /// Removes a node and all its edges.
    pub fn remove_node(&mut self, id: u64) {
        let Some(n) = self.node(id) else { return };
        let parents = n.parents.clone();
        let children: Vec<u64> = n.children.iter().map(|c| c.0).collect();
        for p in parents {
            self.remove_edge(p, id);
        }
        for c in children {
            self.remove_edge(id, c);
        }
        if let Some(n) = self.nodes.get_mut(id as usize) {
            *n = Node::default();
            self.count -= 1;
        }
    }

    pub fn height(&self, id: u64) -> u64 {
        self.node(id).map_or(0, |n| n.height)
    }

    pub fn children(&self, id: u64) -> &[(u64, u8)] {
        self.node(id).map_or(&[], |n| &n.children)
    }

    pub fn parents(&self, id: u64) -> &[u64] {
        self.node(id).map_or(&[], |n| &n.parents)
    }

    pub fn has_edge(&self, parent: u64, child: u64) -> bool {
        self.node(parent)
            .is_some_and(|n| n.children.binary_search_by_key(&child, |c| c.0).is_ok())
    }

    pub fn has_dependents(&self, id: u64) -> bool {
        self.node(id).is_some_and(|n| !n.children.is_empty())
    }

    fn next_gen(&mut self) -> u32 {
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.gen = 1;
        }
        self.gen
    }

    /// Whether `parent -> child` may be added (both exist, no self loop, no
    /// cycle). Does not change the graph.
    pub fn check_edge(&mut self, parent: u64, child: u64) -> Result<()> {
        let hp = self.node(parent).ok_or_else(|| Self::missing(parent))?.height;
        let hc = self.node(child).ok_or_else(|| Self::missing(child))?.height;
        if parent == child {
            return Err(Error::new(ErrorKind::Cycle, format!("edge {parent} -> {child} is a self loop")));
        }
        if hc > hp || self.has_edge(parent, child) {
            return Ok(());
        }
        // DFS from child looking for parent; every node on a path
        // child ->* parent has height < height(parent).
        let g = self.next_gen();
        self.stack.clear();
        self.stack.push(child);
        self.stamp[child as usize] = g;
        while let Some(x) = self.stack.pop() {
            let Some(n) = self.nodes.get(x as usize) else { continue };
            for &(c, _) in &n.children {
                if c == parent {
                    return Err(Error::new(
                        ErrorKind::Cycle,
                        format!("edge {parent} -> {child} would close a cycle (page {parent} is reachable from page {child})"),
                    ));
                }
                let ci = c as usize;
                if self.stamp[ci] != g && self.nodes[ci].height < hp {
                    self.stamp[ci] = g;
                    self.stack.push(c);
                }
            }
        }
        Ok(())
    }

    /// Adds `parent -> child`. `Ok(false)`: the edge already existed (no-op).
    /// On error the graph is unchanged.
    pub fn add_edge(&mut self, parent: u64, child: u64, kind: u8) -> Result<bool> {
        self.check_edge(parent, child)?;
        if self.has_edge(parent, child) {
            return Ok(false);
        }
        if let Some(n) = self.node_mut(parent) {
            if let Err(i) = n.children.binary_search_by_key(&child, |c| c.0) {
                n.children.insert(i, (child, kind));
            }
        }
        let hp = self.height(parent);
        if let Some(n) = self.node_mut(child) {
            if let Err(i) = n.parents.binary_search(&parent) {
                n.parents.insert(i, parent);
            }
        }
        self.edges += 1;
        self.raise(child, hp + 1);
        Ok(true)
    }

    /// Raises `start` to at least `h` and its descendants as needed, in
    /// ascending height order so each node's children are scanned once.
    fn raise(&mut self, start: u64, h: u64) {
        if self.height(start) >= h {
            return;
        }
        if let Some(n) = self.node_mut(start) {
            n.height = h;
        }
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((h, start)));
        while let Some(Reverse((hx, x))) = heap.pop() {
            if self.height(x) != hx {
                continue; // raised again since it was pushed
            }
            for k in 0..self.children(x).len() {
                let c = self.nodes[x as usize].children[k].0;
                let n = &mut self.nodes[c as usize];
                if n.height <= hx {
                    n.height = hx + 1;
                    heap.push(Reverse((hx + 1, c)));
                }
            }
        }
    }

    /// Removes `parent -> child`; `false` if there was no such edge.
    pub fn remove_edge(&mut self, parent: u64, child: u64) -> bool {
        let Some(n) = self.node_mut(parent) else { return false };
        let Ok(i) = n.children.binary_search_by_key(&child, |c| c.0) else { return false };
        n.children.remove(i);
        if let Some(c) = self.node_mut(child) {
            if let Ok(j) = c.parents.binary_search(&parent) {
                c.parents.remove(j);
            }
        }
        self.edges -= 1;
        self.lower(child);
        true
    }

    fn exact_height(&self, id: u64) -> u64 {
        self.parents(id).iter().map(|&p| self.height(p) + 1).max().unwrap_or(0)
    }

    fn lower(&mut self, start: u64) {
        let g = self.next_gen();
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((self.height(start), start)));
        self.stamp[start as usize] = g;
        while let Some(Reverse((_, x))) = heap.pop() {
            let h = self.exact_height(x);
            if h == self.height(x) {
                continue;
            }
            if let Some(n) = self.node_mut(x) {
                n.height = h;
            }
            for k in 0..self.children(x).len() {
                let c = self.nodes[x as usize].children[k].0;
                if self.stamp[c as usize] != g {
                    self.stamp[c as usize] = g;
                    heap.push(Reverse((self.nodes[c as usize].height, c)));
                }
            }
        }
    }

    /// All nodes in topological order: sorted by `(height, id)`.
    pub fn topo(&self, out: &mut Vec<u64>) {
        let mut keys: Vec<(u64, u64)> = Vec::with_capacity(self.count);
        for (i, n) in self.nodes.iter().enumerate() {
            if n.present {
                keys.push((n.height, i as u64));
            }
        }
        keys.sort_unstable();
        out.clear();
        out.extend(keys.iter().map(|k| k.1));
    }

    /// Every page reachable from `id` (excluding it), in BFS order with
    /// children visited in ascending id order.
    pub fn descendants(&mut self, id: u64, out: &mut Vec<u64>) -> Result<()> {
        if !self.contains(id) {
            return Err(Self::missing(id));
        }
        let g = self.next_gen();
        out.clear();
        self.stamp[id as usize] = g;
        let mut head = 0;
        let mut cur = id;
        loop {
            for &(c, _) in &self.nodes[cur as usize].children {
                if self.stamp[c as usize] != g {
                    self.stamp[c as usize] = g;
                    out.push(c);
                }
            }
            if head == out.len() {
                break;
            }
            cur = out[head];
            head += 1;
        }
        Ok(())
    }

    /// All edges `(parent, child, kind)` sorted by parent, then child.
    pub fn edges(&self, out: &mut Vec<(u64, u64, u8)>) {
        out.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.present {
                out.extend(n.children.iter().map(|&(c, k)| (i as u64, c, k)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u64) -> Graph {
        let mut g = Graph::new();
        for i in 1..=n {
            g.add_node(i);
        }
        g
    }

    #[test]
    fn cycles_and_self_loops_leave_graph_unchanged() {
        let mut gr = g(4);
        assert!(gr.add_edge(1, 2, 0).unwrap());
        assert!(gr.add_edge(2, 3, 0).unwrap());
        assert!(!gr.add_edge(1, 2, 5).unwrap()); // existing: no-op
        let e = gr.add_edge(3, 1, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Cycle);
        assert!(e.msg.contains('3') && e.msg.contains('1'));
        assert_eq!(gr.add_edge(2, 2, 0).unwrap_err().kind, ErrorKind::Cycle);
        assert_eq!(gr.add_edge(1, 9, 0).unwrap_err().kind, ErrorKind::PageNotFound);
        assert_eq!(gr.edge_count(), 2);
        let mut v = Vec::new();
        gr.edges(&mut v);
        assert_eq!(v, vec![(1, 2, 0), (2, 3, 0)]);
        assert_eq!((gr.height(1), gr.height(2), gr.height(3), gr.height(4)), (0, 1, 2, 0));
    }

    #[test]
    fn heights_exact_after_add_and_remove() {
        let mut gr = g(5);
        gr.add_edge(4, 5, 0).unwrap();
        gr.add_edge(1, 2, 0).unwrap();
        gr.add_edge(2, 3, 0).unwrap();
        gr.add_edge(3, 4, 0).unwrap();
        assert_eq!(gr.height(5), 4);
        gr.add_edge(1, 5, 0).unwrap();
        assert!(gr.remove_edge(3, 4));
        assert!(!gr.remove_edge(3, 4));
        assert_eq!(gr.height(4), 0);
        assert_eq!(gr.height(5), 1);
        // rebuild from edges gives the same heights
        let mut e = Vec::new();
        gr.edges(&mut e);
        let mut g2 = g(5);
        for (p, c, k) in e {
            g2.add_edge(p, c, k).unwrap();
        }
        for i in 1..=5 {
            assert_eq!(gr.height(i), g2.height(i));
        }
        // a long way round: 5 -> 1 closes 1 -> 5
        assert_eq!(gr.add_edge(5, 1, 0).unwrap_err().kind, ErrorKind::Cycle);
        gr.add_edge(2, 4, 0).unwrap();
        assert_eq!((gr.height(4), gr.height(5)), (2, 3));
    }

    #[test]
    fn topo_and_bfs_are_deterministic() {
        let mut gr = g(6);
        gr.add_edge(1, 3, 0).unwrap();
        gr.add_edge(1, 2, 0).unwrap();
        gr.add_edge(2, 4, 0).unwrap();
        gr.add_edge(3, 4, 0).unwrap();
        gr.add_edge(4, 5, 0).unwrap();
        let mut t = Vec::new();
        gr.topo(&mut t);
        assert_eq!(t, vec![1, 6, 2, 3, 4, 5]);
        let mut d = Vec::new();
        gr.descendants(1, &mut d).unwrap();
        assert_eq!(d, vec![2, 3, 4, 5]);
        assert_eq!(gr.children(1), &[(2, 0), (3, 0)]);
        assert_eq!(gr.parents(4), &[2, 3]);
        gr.remove_node(4);
        assert_eq!(gr.edge_count(), 2);
        assert!(!gr.contains(4));
        assert_eq!(gr.height(5), 0);
        assert_eq!(gr.descendants(4, &mut d).unwrap_err().kind, ErrorKind::PageNotFound);
    }

    #[test]
    fn random_dag_never_accepts_cycles() {
        let mut gr = g(60);
        let mut x = 12345u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = x % 60 + 1;
            let c = (x >> 20) % 60 + 1;
            let _ = gr.add_edge(p, c, 0);
        }
        // heights strictly increase along every edge => acyclic
        let mut e = Vec::new();
        gr.edges(&mut e);
        for (p, c, _) in e {
            assert!(gr.height(c) > gr.height(p));
            assert_eq!(gr.height(c), gr.exact_height(c));
        }
    }
}
