/*
 * toolkit instruction-region counter: a QEMU TCG plugin for qemu-user (linux-user mode).
 *
 * Why: emulated wall time is not latency (30x..700x slower, noisy). The number of guest instructions
 * executed between two markers is exact and repeatable, so it is what we report for the ARM64 target.
 *
 * How:
 *   - every translated block adds its instruction count to the counter of the guest thread (vCPU) that runs
 *     it (a callback per executed block), and to a global counter (an inline op) for comparison;
 *   - the guest marks regions with getpid() called with magic arguments (getpid ignores its arguments,
 *     so the marker is harmless on a real kernel); the syscall callback reads the counter:
 *         syscall(__NR_getpid = 172, MAGIC, OP_BEGIN, region_id)
 *         ... inference ...
 *         syscall(__NR_getpid = 172, MAGIC, OP_END, region_id)
 *   - optionally, code ranges (the runner registers libonnxruntime.so's text) are counted apart:
 *         syscall(__NR_getpid = 172, MAGIC, OP_RANGE, slot, lo, hi)      slots 0, 1, ... in order
 *   - each finished region is appended to the output file at once (so a crash loses nothing):
 *         region <id> <instructions of the marking thread> <most live threads> <vcpu> <all threads' instructions>
 *                [ranges=<count in range 0>,<count in range 1>,...]      (marking thread only)
 *     The region count is the marking thread's own work: other guest threads (onnxruntime's telemetry thread,
 *     idle pools) run at times that depend on the host's scheduling, and counting them made the number vary
 *     from run to run. With one intra-op thread, the inference runs entirely on the marking thread.
 *
 * Usage:  qemu-aarch64 -cpu neoverse-n1 -plugin libtoolkit_icount.so,out=/path/regions.txt ...
 *
 * QEMU 7.2 has no per-vCPU inline counters, hence the callback (about 1.3x slower than inline only).
 *
 * Licence and API: this file is loaded into QEMU (GPL-2.0-or-later) and is distributed under
 * GPL-2.0-or-later. Debian bookworm ships no qemu-plugin.h, so the few declarations used below are
 * written here by hand after the public plugin API of QEMU 7.2 (include/qemu/qemu-plugin.h,
 * QEMU_PLUGIN_VERSION 1, GPL-2.0-or-later). Build with -DTOOLKIT_HAVE_QEMU_PLUGIN_H to use a system
 * header instead when one is installed.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TOOLKIT_HAVE_QEMU_PLUGIN_H
#include <qemu-plugin.h>
#else
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_simple_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                                              uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
void qemu_plugin_register_vcpu_init_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_simple_cb_t cb);
void qemu_plugin_register_vcpu_exit_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_simple_cb_t cb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
#endif

/* The API level this plugin was written against (QEMU 7.2 accepts 0..1). */
QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define TOOLKIT_SYS_GETPID 172                 /* __NR_getpid on aarch64 */
#define TOOLKIT_MAGIC 0x746f6f6c6b6974ULL     /* "toolkit" */
#define TOOLKIT_OP_BEGIN 1
#define TOOLKIT_OP_END 2
#define TOOLKIT_OP_RANGE 3                     /* syscall(172, MAGIC, 3, slot, lo, hi): count code in [lo, hi) */
#define TOOLKIT_MAX_OPEN 64
#define TOOLKIT_MAX_VCPUS 4096
#define TOOLKIT_MAX_RANGES 8

static uint64_t insn_count;                    /* guest instructions executed so far (all threads) */
static uint64_t vcpu_count[TOOLKIT_MAX_VCPUS]; /* ... per guest thread (vCPU index) */
static uint64_t open_vcpu_start[TOOLKIT_MAX_OPEN];
static FILE *out;
static int live_threads;
static int max_live_threads;
static uint64_t open_ids[TOOLKIT_MAX_OPEN];    /* regions begun and not yet ended */
static uint64_t open_start[TOOLKIT_MAX_OPEN];
static int open_max_threads[TOOLKIT_MAX_OPEN];
static int n_open;
/* Code ranges (e.g. libonnxruntime.so's text) whose instructions are also counted apart, per thread. */
static int n_ranges;
static uint64_t range_lo[TOOLKIT_MAX_RANGES];
static uint64_t range_len[TOOLKIT_MAX_RANGES];
static uint64_t range_count[TOOLKIT_MAX_RANGES][TOOLKIT_MAX_VCPUS];
static uint64_t open_range_start[TOOLKIT_MAX_OPEN][TOOLKIT_MAX_RANGES];

struct tb_info {
    uint64_t vaddr;
    uint64_t n;
};

static void on_tb_exec(unsigned int vcpu_index, void *udata)
{
    const struct tb_info *t = udata;
    if (vcpu_index >= TOOLKIT_MAX_VCPUS) {
        return;
    }
    vcpu_count[vcpu_index] += t->n;
    for (int r = 0; r < n_ranges; r++) {
        if (t->vaddr - range_lo[r] < range_len[r]) {
            range_count[r][vcpu_index] += t->n;
            break;
        }
    }
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    /* One record per translation, kept for the life of the process (blocks can run until exit). */
    struct tb_info *t = malloc(sizeof(*t));
    if (t == NULL) {
        return;
    }
    t->vaddr = qemu_plugin_tb_vaddr(tb);
    t->n = n;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, n);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, t);
}

static uint64_t range_own(int r, unsigned int vcpu_index)
{
    return vcpu_index < TOOLKIT_MAX_VCPUS ? range_count[r][vcpu_index] : 0;
}

static uint64_t own(unsigned int vcpu_index)
{
    return vcpu_index < TOOLKIT_MAX_VCPUS ? vcpu_count[vcpu_index] : 0;
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    (void)id;
    (void)vcpu_index;
    live_threads++;
    if (live_threads > max_live_threads) {
        max_live_threads = live_threads;
    }
    for (int i = 0; i < n_open; i++) {
        if (live_threads > open_max_threads[i]) {
            open_max_threads[i] = live_threads;
        }
    }
}

static void on_vcpu_exit(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    (void)id;
    (void)vcpu_index;
    live_threads--;
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id;
    (void)a6;
    (void)a7;
    (void)a8;
    if (num != TOOLKIT_SYS_GETPID || a1 != TOOLKIT_MAGIC) {
        return;
    }
    uint64_t now = insn_count;
    if (a2 == TOOLKIT_OP_BEGIN) {
        if (n_open == TOOLKIT_MAX_OPEN) {
            fprintf(out, "error too-many-open-regions %" PRIu64 "\n", a3);
        } else {
            open_ids[n_open] = a3;
            open_start[n_open] = now;
            open_vcpu_start[n_open] = own(vcpu_index);
            for (int r = 0; r < n_ranges; r++) {
                open_range_start[n_open][r] = range_own(r, vcpu_index);
            }
            open_max_threads[n_open] = live_threads;
            n_open++;
        }
    } else if (a2 == TOOLKIT_OP_END) {
        int i;
        for (i = n_open - 1; i >= 0 && open_ids[i] != a3; i--) {
        }
        if (i < 0) {
            fprintf(out, "error end-without-begin %" PRIu64 "\n", a3);
        } else {
            fprintf(out, "region %" PRIu64 " %" PRIu64 " %d %u %" PRIu64, a3,
                    own(vcpu_index) - open_vcpu_start[i], open_max_threads[i], vcpu_index, now - open_start[i]);
            for (int r = 0; r < n_ranges; r++) {
                fprintf(out, "%s%" PRIu64, r == 0 ? " ranges=" : ",", range_own(r, vcpu_index) - open_range_start[i][r]);
            }
            fprintf(out, "\n");
            for (int j = i; j < n_open - 1; j++) {
                open_ids[j] = open_ids[j + 1];
                open_start[j] = open_start[j + 1];
                open_vcpu_start[j] = open_vcpu_start[j + 1];
                for (int r = 0; r < n_ranges; r++) {
                    open_range_start[j][r] = open_range_start[j + 1][r];
                }
                open_max_threads[j] = open_max_threads[j + 1];
            }
            n_open--;
        }
    } else if (a2 == TOOLKIT_OP_RANGE) {
        if (a3 != (uint64_t)n_ranges || n_ranges == TOOLKIT_MAX_RANGES || n_open > 0 || a5 <= a4) {
            fprintf(out, "error bad-range %" PRIu64 " %" PRIx64 " %" PRIx64 "\n", a3, a4, a5);
        } else {
            range_lo[n_ranges] = a4;
            range_len[n_ranges] = a5 - a4;
            n_ranges++;
            fprintf(out, "range %" PRIu64 " %" PRIx64 " %" PRIx64 "\n", a3, a4, a5);
        }
    } else {
        fprintf(out, "error unknown-op %" PRIu64 "\n", a2);
    }
    fflush(out);
}

static void on_exit_cb(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    fprintf(out, "end %" PRIu64 " %d\n", insn_count, max_live_threads);
    fclose(out);
    out = NULL;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "toolkit icount plugin: missing argument out=<file>\n");
        return -1;
    }
    if (info->system_emulation) {
        fprintf(stderr, "toolkit icount plugin: user-mode emulation only (qemu-aarch64)\n");
        return -1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        fprintf(stderr, "toolkit icount plugin: cannot write %s\n", path);
        return -1;
    }
    fprintf(out, "toolkit-icount 1 %s\n", info->target_name);
    fflush(out);
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_exit_cb(id, on_vcpu_exit);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
