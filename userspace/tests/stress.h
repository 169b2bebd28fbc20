/* The stress workloads' shared parts: stress.c runs them, stress_msg.c and
 * stress_mem.c hold the workloads, stress_workers.c their threads and
 * what they share. */
#ifndef STRESS_H
#define STRESS_H

#include "suite.h"

#define STACK_VA 0x38000000ul /* worker stacks: one page table (2 MiB) */
#define MAP_VA 0x38200000ul   /* map workload: pages that come and go */
#define ALIAS_VA 0x38400000ul /* map workload: the same frames, always mapped */
#define REV_VA 0x38600000ul   /* revoke workload: a page per user thread */
#define STACK_PAGES 4
#define MAX_WORKERS 64
#define MAP_PAGES 16
#define STORM_SENDERS 3
#define CAP_SLOTS 32
#define STRESS_UT_BITS 23
#define GRACE_SECONDS 20

#define LABEL_DATA 1
#define LABEL_DONE 2
#define LABEL_QUIT 3

struct worker {
    keel_word_t tcb;
    void (*fn)(struct worker *);
    volatile long done;
    long id;
    long cpu;
    unsigned long rng;
    keel_word_t a, b, c, d;  /* capabilities the body uses */
    unsigned long n;         /* a count given to the body */
    volatile unsigned long count, count2, count3;
    volatile long fail;      /* source line of the first failed check */
    unsigned long fail_a, fail_b;
};


#define WFAIL(w, x, y)                                                                          \
    do {                                                                                        \
        if (!(w)->fail) {                                                                       \
            (w)->fail_a = (unsigned long)(x);                                                   \
            (w)->fail_b = (unsigned long)(y);                                                   \
            (w)->fail = __LINE__;                                                               \
        }                                                                                       \
    } while (0)

extern struct worker workers[MAX_WORKERS];
extern int nworkers;
extern keel_word_t stress_ut;
extern unsigned long ncpus, tsc_khz, seed;
extern volatile int stop;
extern int pin_local;
extern unsigned long inject;
extern keel_word_t tick_ntfn; /* wakes the main thread: a second passed, or a worker ended */
extern unsigned long end_ms, next_tick_ms;

unsigned long rnd(unsigned long *s);
unsigned long now_ms(void);
void pause_loop(int n);
int stopped(void); /* time is up; also wakes the main thread each second */
keel_word_t new_obj(keel_word_t type, keel_word_t bits); /* from stress_ut */
void setup_check(long err, const char *what);
keel_word_t new_stack(unsigned pages);
struct worker *w_spawn(void (*fn)(struct worker *), long cpu, keel_word_t fault_ep);
unsigned long workers_count(struct worker *const *w, int n); /* the sum of their counts */

/* Each workload: threads made (not started), progress so far, and its
 * invariants checked when time is up (0: they hold). */
void ipc_setup(unsigned long pairs);
unsigned long ipc_progress(void);
int ipc_check(unsigned long ms);
void rpc_setup(unsigned long servers);
unsigned long rpc_progress(void);
int rpc_check(unsigned long ms);
void storm_setup(void);
unsigned long storm_progress(void);
int storm_check(void);
void calls_setup(void);
unsigned long calls_progress(void);
int calls_check(unsigned long ms);
void caps_setup(void);
unsigned long caps_progress(void);
int caps_check(unsigned long ms);
extern keel_word_t caps_shared; /* revoked by the main thread every second */
void map_setup(void);
unsigned long map_progress(void);
int map_check(void);
extern keel_word_t map_fault_ep;
extern struct worker *map_handler;
void revoke_setup(void);
unsigned long revoke_progress(void);
int revoke_check(void);
void churn_setup(void);
unsigned long churn_progress(void);
int churn_check(void);

#endif
