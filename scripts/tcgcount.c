/* A QEMU TCG plugin (`-plugin tcgcount.so,arg=out=FILE`): the guest
 * instructions executed from each translation block's start address, all
 * vCPUs together, written to FILE as "hexaddress count" lines when QEMU
 * exits.  scripts/bench_work.py builds it (gcc -shared) and sums the lines
 * by kernel function (`scripts/bench --storm-work --tcg --profile`).
 *
 * Plugin API version 1 (QEMU 4.2 and later): the few declarations used
 * are written out here, so no QEMU headers are needed.  Each block adds its
 * length to its counter inline, without a callback: a block left early by
 * an exception counts whole, which the storm's paths almost never are. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct {
    const char *target_name;
    struct {
        int min, cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus, max_vcpus;
        } system;
    };
} qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb_t)(qemu_plugin_id_t, void *);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);

EXPORT int qemu_plugin_version = 1;

/* Open addressing, keyed by the block's address; a block translated again
 * (same address) adds to the same counter.  2^20 entries: a kernel and its
 * programs have a few thousand blocks. */
#define SLOTS (1u << 20)
static uint64_t addrs[SLOTS], counts[SLOTS];
static const char *out_path = "tcgcount.txt";
static unsigned used;

static uint64_t *counter(uint64_t va)
{
    uint32_t h = (uint32_t)((va * 0x9e3779b97f4a7c15ull) >> 44);

    for (;; h++) {
        h &= SLOTS - 1;
        if (addrs[h] == va)
            return &counts[h];
        if (!addrs[h] && used < SLOTS / 2) {
            addrs[h] = va;
            used++;
            return &counts[h];
        }
        if (!addrs[h])
            return &counts[0]; /* full: the rest lands in one bucket */
    }
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                             counter(qemu_plugin_tb_vaddr(tb)),
                                             qemu_plugin_tb_n_insns(tb));
}

static void write_counts(qemu_plugin_id_t id, void *unused)
{
    (void)id;
    (void)unused;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        perror(out_path);
        return;
    }
    for (uint32_t i = 0; i < SLOTS; i++) {
        if (addrs[i] && counts[i])
            fprintf(f, "%" PRIx64 " %" PRIu64 "\n", addrs[i], counts[i]);
    }
    fclose(f);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                               char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4))
            out_path = argv[i] + 4;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
