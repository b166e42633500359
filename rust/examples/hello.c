/* A C program using MMSB through its installed header and pkg-config file
 * (deps/c-install.sh builds, installs and runs it):
 *   cc hello.c $(pkg-config --cflags --libs mmsb) -o hello
 * Two pages, the second a passthrough copy of the first; one write; the
 * copy is read back and the log is listed. */
#include <stdio.h>
#include <string.h>
#include <mmsb.h>

static int fail(const char *what, int32_t rc) {
    uint8_t msg[256];
    uint64_t n = mmsb_last_error_message(msg, sizeof msg);
    fprintf(stderr, "%s: error %d: %.*s\n", what, rc, (int)(n < sizeof msg ? n : sizeof msg), (const char *)msg);
    return 1;
}

int main(void) {
    MmsbConfig cfg;
    MmsbState *st = NULL;
    MmsbPageInfo src, copy;
    MmsbWriteResult w;
    uint8_t bytes[256], back[256], payload[1024];
    uint64_t first, next, seq;
    int32_t rc;
    int i, matches;

    memset(&cfg, 0, sizeof cfg);
    cfg.abi_version = MMSB_ABI_VERSION;
    if ((rc = mmsb_state_new(&cfg, &st, NULL)) != MMSB_OK) return fail("mmsb_state_new", rc);
    if ((rc = mmsb_page_create(st, sizeof bytes, MMSB_LOC_CPU, &src)) != MMSB_OK) return fail("mmsb_page_create", rc);
    if ((rc = mmsb_page_create(st, sizeof bytes, MMSB_LOC_CPU, &copy)) != MMSB_OK) return fail("mmsb_page_create", rc);
    if ((rc = mmsb_recompute_set(st, copy.id, MMSB_RECOMPUTE_PASSTHROUGH, &src.id, 1)) != MMSB_OK)
        return fail("mmsb_recompute_set", rc);

    for (i = 0; i < (int)sizeof bytes; i++) bytes[i] = (uint8_t)(i * 7);
    if ((rc = mmsb_page_write(st, src.id, bytes, sizeof bytes, MMSB_WRITE_PROPAGATE, &w)) != MMSB_OK)
        return fail("mmsb_page_write", rc);
    if ((rc = mmsb_page_read(st, copy.id, back, sizeof back)) != MMSB_OK) return fail("mmsb_page_read", rc);
    matches = memcmp(bytes, back, sizeof back) == 0;
    printf("page %llu epoch %llu; copy %s\n", (unsigned long long)src.id, (unsigned long long)w.epoch,
           matches ? "matches" : "DIFFERS");

    if ((rc = mmsb_tlog_len(st, &first, &next)) != MMSB_OK) return fail("mmsb_tlog_len", rc);
    for (seq = first; seq < next; seq++) {
        MmsbLogRecord r;
        uint64_t len;
        if ((rc = mmsb_tlog_entry(st, seq, &r, payload, sizeof payload, &len)) != MMSB_OK) return fail("mmsb_tlog_entry", rc);
        printf("log %llu: kind %llu page %llu, %llu payload bytes\n", (unsigned long long)r.seq,
               (unsigned long long)r.kind, (unsigned long long)r.page_id, (unsigned long long)len);
    }
    mmsb_state_free(st);
    return matches && w.epoch == 1 ? 0 : 1;
}
