// MMSB GPU kernels, compiled at run time by NVRTC (see rust/src/gpu/cuda.rs).
//
// Invariants kept by the host side:
// - a page's device buffer is its size rounded up to 32 bytes, and the bytes
//   past `size` are always zero;
// - host-uploaded payloads (dense payload, write_diff bytes) are padded the
//   same way with zeros, so a 32-byte word never reads out of bounds;
// - every buffer base is 256-byte aligned (cuMemAlloc / scratch layout), so
//   the uint4 loads below are aligned.
// Bitmaps are LSB-first: bit i of mask byte j covers page byte 8*j+i; read as
// little-endian 32-bit words, bit b of word k covers page byte 32*k+b.

typedef unsigned long long u64;
typedef unsigned int u32;

// 4 mask bits -> 4 byte lanes of 0x00/0xFF.
__device__ __forceinline__ u32 expand4(u32 m) {
    return ((m * 0x00204081u) & 0x01010101u) * 0xFFu;
}
// Byte lanes of x that are non-zero -> 0x01 in that lane.
__device__ __forceinline__ u32 nz_bytes(u32 x) {
    x |= x >> 4; x |= x >> 2; x |= x >> 1;
    return x & 0x01010101u;
}
// 0x01-per-lane -> 4 packed bits.
__device__ __forceinline__ u32 pack4(u32 b) {
    return (b & 1u) | ((b >> 7) & 2u) | ((b >> 14) & 4u) | ((b >> 21) & 8u);
}
// Warp reduction then one atomic per warp. Every lane of the warp must reach
// this call (no early returns in the kernels).
__device__ __forceinline__ void add_count(u64* count, u64 c) {
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31u) == 0u && c != 0ull) atomicAdd(count, c);
}

// Dense masked apply: one 32-bit mask word (32 page bytes) per thread step.
extern "C" __global__ void mmsb_apply_dense(unsigned char* page, const u32* mask,
                                            const unsigned char* payload, u64 size,
                                            u64* count) {
    const u64 nwords = (size + 31ull) / 32ull;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 local = 0;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < nwords; k += stride) {
        u32 w = mask[k];
        const u64 base = k * 32ull;
        if (size - base < 32ull) w &= (1u << (u32)(size - base)) - 1u;
        if (w == 0u) continue;
        uint4* p = (uint4*)(page + base);
        const uint4* q = (const uint4*)(payload + base);
        uint4 a = p[0], b = p[1];
        const uint4 c = q[0], d = q[1];
        u32 o[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        const u32 n[8] = {c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w};
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const u32 bm = expand4((w >> (4 * j)) & 0xFu);
            const u32 v = (o[j] & ~bm) | (n[j] & bm);
            local += __popc(nz_bytes(v ^ o[j]));
            o[j] = v;
        }
        p[0] = make_uint4(o[0], o[1], o[2], o[3]);
        p[1] = make_uint4(o[4], o[5], o[6], o[7]);
    }
    add_count(count, local);
}

// Diff + apply: page := src, mask_out := bitmap of changed bytes, count += changed.
// Used by write_diff (src = uploaded bytes) and copy_from (src = another page).
extern "C" __global__ void mmsb_diff_apply(unsigned char* page, const unsigned char* src,
                                           u32* mask_out, u64 size, u64* count) {
    const u64 nwords = (size + 31ull) / 32ull;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 local = 0;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < nwords; k += stride) {
        const u64 base = k * 32ull;
        uint4* p = (uint4*)(page + base);
        const uint4* q = (const uint4*)(src + base);
        const uint4 a = p[0], b = p[1], c = q[0], d = q[1];
        const u32 o[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        const u32 n[8] = {c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w};
        u32 w = 0u;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const u32 bits = nz_bytes(o[j] ^ n[j]);
            local += __popc(bits);
            w |= pack4(bits) << (4 * j);
        }
        mask_out[k] = w;
        if (w != 0u) { p[0] = c; p[1] = d; }
    }
    add_count(count, local);
}

// Sparse apply. ranges: n (start, len) pairs; offs: n+1 data offsets (prefix
// sums, offs[i] = where range i's bytes start in `data`). Ranges of one launch
// do not overlap. Each thread step handles 16 data bytes.
extern "C" __global__ void mmsb_apply_sparse(unsigned char* page, const u64* ranges,
                                             const u64* offs, u64 n,
                                             const unsigned char* data, u64* count) {
    const u64 first = offs[0];
    const u64 total = offs[n];
    const u64 nchunks = (total - first + 15ull) / 16ull;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 local = 0;
    for (u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x; c < nchunks; c += stride) {
        const u64 d0 = first + c * 16ull;
        const u64 d1 = (d0 + 16ull < total) ? d0 + 16ull : total;
        // Largest r in [0, n) with offs[r] <= d0 (offs[n] = total > d0).
        u64 lo = 0, hi = n;
        while (hi - lo > 1ull) {
            const u64 mid = lo + (hi - lo) / 2ull;
            if (offs[mid] <= d0) lo = mid; else hi = mid;
        }
        u64 r = lo;
        const u64 pos0 = ranges[2 * r] + (d0 - offs[r]);
        if (d1 - d0 == 16ull && d1 <= offs[r + 1] && ((d0 | pos0) & 15ull) == 0ull) {
            uint4* p = (uint4*)(page + pos0);
            const uint4 a = *p;
            const uint4 b = *(const uint4*)(data + d0);
            const u32 cnt = __popc(nz_bytes(a.x ^ b.x)) + __popc(nz_bytes(a.y ^ b.y)) +
                            __popc(nz_bytes(a.z ^ b.z)) + __popc(nz_bytes(a.w ^ b.w));
            if (cnt != 0u) { *p = b; local += cnt; }
        } else {
            for (u64 d = d0; d < d1; ++d) {
                while (d >= offs[r + 1]) ++r;
                const u64 pos = ranges[2 * r] + (d - offs[r]);
                const unsigned char v = data[d];
                if (page[pos] != v) { page[pos] = v; ++local; }
            }
        }
    }
    add_count(count, local);
}
