/* keel.test=services: the device manager, the name service and the drivers
 * as services, tested from clients in init.  Needs a virtio-blk and a
 * virtio-rng device; with a 16550 at COM2 it also uses, kills and restarts
 * the UART driver registered as "console"; with keel.svc=hotplug it also
 * waits for the host to attach and then detach a second disk
 * (tests/boot/test_services.py).  The in-guest suite (keel.test=suite)
 * runs the same tests when the machine has the devices.  Reports like the
 * suite: "ktest: ok <name>" per test, then the totals. */
#include "../devmgr/devmgr.h"
#include "../lib/start.h"
#include "suite.h"

#define BUF_VA 0x20160000ul /* a page per client */
#define STREAM_SECTORS 240
#define STREAM_MAGIC 0x6b65656c73766321ul /* "!cvsleek" */
#define KILLS 3
#define WRITERS 3             /* clients streaming at once: requests in flight */
#define KILL_SLACK 8          /* sectors writer 0 may write past a kill's mark before it */
#define IN_FLIGHT_CLIENTS 4
#define IN_FLIGHT_WRITES 48
#define IN_FLIGHT_FIRST 4096 /* their sectors: 256 each from here */


static unsigned long next_buf;
static struct services svc; /* the name service and the device manager, once started */

/* A client of the named service with a buffer of its own. */
static long client(struct service *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->ns = svc.names;
    s->inbox = make_obj(KEEL_OBJ_ENDPOINT, 0);
    s->window = slot_alloc_range(4);
    s->buf = (unsigned char *)(BUF_VA + next_buf++ * KEEL_PAGE_SIZE);
    s->frame = map_new_frame((keel_word_t)s->buf, KEEL_RIGHT_READ | KEEL_RIGHT_WRITE);
    ns_pack(name, s->name);
    return service_connect(s);
}

static long dm_call(keel_word_t label, keel_word_t w0, keel_word_t w1, keel_word_t *out)
{
    keel_word_t in[KEEL_MSG_WORDS] = { w0, w1 }, res[KEEL_MSG_WORDS];
    long err = keel_call(svc.devmgr, label, in, res);

    if (out)
        memcpy(out, res, sizeof(res));
    return err;
}

static long dm_kill(const char *name, keel_word_t *starts)
{
    keel_word_t w[2], out[KEEL_MSG_WORDS];

    ns_pack(name, w);
    long err = dm_call(DM_KILL, w[0], w[1], out);
    *starts = out[0];
    return err;
}

/* The device manager's id of the driver registered as name. */
static keel_word_t dm_id(const char *name)
{
    keel_word_t w[2], out[KEEL_MSG_WORDS];

    ns_pack(name, w);
    for (keel_word_t id = 0; id < DM_MAX; id++) {
        if (!dm_call(DM_LIST, id, 0, out) && out[0] == w[0] && out[1] == w[1])
            return id;
    }
    return DM_MAX;
}

static int t_names(void)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    struct service s;
    char name[NS_NAME_MAX + 1];
    int blk = 0, rng = 0;

    EXPECT_ERR(client(&s, "nosuchdev"), KEEL_E_NOT_MAPPED);
    ns_pack("blk0", in);
    in[2] = s.inbox;
    /* only the device manager registers */
    EXPECT_ERR(keel_call(svc.names, NS_REGISTER, in, out), KEEL_E_NO_RIGHTS);
    EXPECT(!ns_pack("a-name-far-too-long", in));
    for (keel_word_t i = 0;; i++) {
        in[0] = i;
        OK(keel_call(svc.names, NS_LIST, in, out));
        if (!out[0])
            break;
        ns_unpack(out, name);
        blk += !strcmp(name, "blk0");
        rng += !strcmp(name, "rng0");
    }
    EXPECT(blk == 1 && rng == 1);
    return 0;
}

static int t_blk_info(void)
{
    struct service s;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    OK(client(&s, "blk0"));
    OK(service_call(&s, DRV_INFO, in, out));
    EXPECT(out[0] == DRV_KIND_BLOCK && out[1] >= 1024 * DRV_BLOCK && out[1] % DRV_BLOCK == 0);
    printf("svc: blk0 %lu bytes, features %lx\n", out[1], out[2]);
    return 0;
}

static int t_blk_write_flush_read(void)
{
    struct service s;
    unsigned long done;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    OK(client(&s, "blk0"));
    for (int i = 0; i < 4096; i++)
        s.buf[i] = (unsigned char)(i * 7 + 3);
    OK(service_io(&s, DRV_WRITE, 4096, 512 * DRV_BLOCK, 0, &done));
    EXPECT(done == 4096);
    OK(service_call(&s, DRV_FLUSH, in, out));
    OK(service_io(&s, DRV_WRITE, 1024, 600 * DRV_BLOCK, DRV_SYNC, &done));
    memset(s.buf, 0, 4096);
    OK(service_io(&s, DRV_READ, 4096, 512 * DRV_BLOCK, 0, &done));
    EXPECT(done == 4096);
    for (int i = 0; i < 4096; i++)
        EXPECT(s.buf[i] == (unsigned char)(i * 7 + 3));
    /* bad requests: answered with an error, nothing done */
    EXPECT_ERR(service_io(&s, DRV_READ, 100, 0, 0, &done), KEEL_E_INVALID_ARG);
    EXPECT_ERR(service_io(&s, DRV_READ, 512, 3, 0, &done), KEEL_E_INVALID_ARG);
    EXPECT_ERR(service_io(&s, DRV_READ, 512, 1ul << 40, 0, &done), KEEL_E_INVALID_ARG);
    EXPECT_ERR(service_io(&s, DRV_READ, 8192, 0, 0, &done), KEEL_E_INVALID_ARG);
    keel_word_t bad[KEEL_MSG_WORDS] = { 7, 0, 512, 0, 0 };
    EXPECT_ERR(keel_call(service_cap(&s), DRV_READ, bad, out), KEEL_E_INVALID_ARG);
    EXPECT_ERR(keel_call(service_cap(&s), KEEL_LABEL_USER + 0x1ff, bad, out),
               KEEL_E_UNKNOWN_CALL);
    return 0;
}

/* The driver sleeps on its device's interrupt: every request it completed
 * was ended by one. */
static int t_interrupts_delivered(void)
{
    struct service s;
    unsigned long done;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, before[KEEL_MSG_WORDS], after[KEEL_MSG_WORDS];

    OK(client(&s, "blk0"));
    OK(service_call(&s, DRV_INFO, in, before));
    for (int i = 0; i < 8; i++)
        OK(service_io(&s, DRV_READ, 512, (unsigned long)i * DRV_BLOCK, 0, &done));
    OK(service_call(&s, DRV_INFO, in, after));
    EXPECT(after[3] > before[3]);
    printf("svc: blk0 %lu interrupts for 8 reads\n", after[3] - before[3]);
    return 0;
}

static int t_rng_read(void)
{
    struct service s;
    unsigned long done;
    unsigned long first[4];
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    OK(client(&s, "rng0"));
    OK(service_call(&s, DRV_INFO, in, out));
    EXPECT(out[0] == DRV_KIND_ENTROPY);
    OK(service_io(&s, DRV_READ, 256, 0, 0, &done));
    EXPECT(done == 256);
    memcpy(first, s.buf, sizeof(first));
    EXPECT(first[0] | first[1] | first[2] | first[3]);
    OK(service_io(&s, DRV_READ, 256, 0, 0, &done));
    EXPECT(memcmp(first, s.buf, sizeof(first)));
    printf("svc: rng0 %016lx%016lx\n", first[0], first[1]);
    return 0;
}

static struct service writer_svc[WRITERS];
static volatile unsigned long acked[WRITERS];
static volatile long writer_err;
static volatile int kills_done;

/* Writer 0's count of acknowledged sectors at which kill k is made. */
static unsigned long kill_mark(int k)
{
    return (unsigned long)k * STREAM_SECTORS / (KILLS + 2);
}

/* The sector writer w streams its i-th block to (tests/boot/test_services.py
 * checks them in the image). */
static unsigned long stream_sector(keel_word_t w, unsigned long i)
{
    return w ? 1024 * w + i : i;
}

static void fill_sector(unsigned char *buf, unsigned long sector)
{
    unsigned long *w = (unsigned long *)buf;

    for (int i = 0; i < DRV_BLOCK / 8; i++)
        w[i] = STREAM_MAGIC ^ (sector << 16) ^ (unsigned long)i;
}

/* Writer t->a writes its sectors in order, each acknowledged before the next. */
static void writer(struct thread *t)
{
    struct service *s = &writer_svc[t->a];
    unsigned long done;

    for (unsigned long i = 0; i < STREAM_SECTORS; i++) {
        fill_sector(s->buf, stream_sector(t->a, i));
        long err = service_io(s, DRV_WRITE, DRV_BLOCK, stream_sector(t->a, i) * DRV_BLOCK, 0,
                              &done);
        if (err) {
            writer_err = err;
            return;
        }
        acked[t->a] = i + 1;
        /* Writer 0 goes at most KILL_SLACK sectors past a kill's mark before
         * the kill is made, so every kill finds it with writes left: where the
         * device is fast beside the scheduler (QEMU's TCG) it could otherwise
         * finish while the killer waits for a CPU. */
        while (t->a == 0 && kills_done < KILLS && i + 1 >= kill_mark(kills_done + 1) + KILL_SLACK)
            keel_yield();
    }
}

/* The driver is killed three times while three clients stream writes (the
 * driver has a request of each in flight when it dies): the clients go on
 * through new drivers, and every write acknowledged is on the disk (read
 * back here; the host checks the image file too).  Each restart reuses the
 * killed driver's untyped, so the kernel must have returned all of its
 * memory. */
static int t_kill_restart_during_writes(void)
{
    struct thread t[WRITERS];
    struct service check;
    keel_word_t starts0, starts = 0, list[KEEL_MSG_WORDS];
    unsigned long done;

    for (int w = 0; w < WRITERS; w++) {
        OK(client(&writer_svc[w], "blk0"));
        acked[w] = 0;
    }
    OK(client(&check, "blk0"));
    OK(dm_call(DM_LIST, dm_id("blk0"), 0, list));
    starts0 = list[3];
    writer_err = 0;
    kills_done = 0;
    for (int w = 0; w < WRITERS; w++) {
        t[w].a = (keel_word_t)w;
        OK(spawn(&t[w], writer, 0));
    }
    for (int k = 1; k <= KILLS; k++) {
        while (acked[0] < kill_mark(k) && !writer_err && !t[0].done)
            keel_yield();
        long err = dm_kill("blk0", &starts);
        kills_done = err ? KILLS : k; /* a failed kill lets writer 0 go on */
        OK(err);
    }
    for (int w = 0; w < WRITERS; w++)
        EXPECT(wait_done(&t[w]));
    EXPECT_ERR(writer_err, KEEL_E_OK);
    unsigned long retries = 0;
    for (int w = 0; w < WRITERS; w++) {
        EXPECT(acked[w] == STREAM_SECTORS);
        retries += writer_svc[w].retries;
    }
    EXPECT(starts == starts0 + KILLS);
    EXPECT(writer_svc[0].retries >= KILLS); /* each kill took its endpoint away */
    unsigned char expect[DRV_BLOCK];
    for (int w = 0; w < WRITERS; w++) {
        for (unsigned long i = 0; i < STREAM_SECTORS; i++) {
            unsigned long sector = stream_sector((keel_word_t)w, i);
            OK(service_io(&check, DRV_READ, DRV_BLOCK, sector * DRV_BLOCK, 0, &done));
            fill_sector(expect, sector);
            EXPECT(!memcmp(check.buf, expect, DRV_BLOCK));
        }
    }
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    OK(service_call(&check, DRV_FLUSH, in, out));
    printf("svc: %d clients streamed %d sectors each through %d kills, %lu retries\n", WRITERS,
           STREAM_SECTORS, KILLS, retries);
    return 0;
}

static struct service in_flight_svc[IN_FLIGHT_CLIENTS];

/* Client t->a: writes of its own sectors, every other one synchronous (the
 * driver follows it with a flush, which the device completes after the
 * other requests of its batch: completions come out of order), then reads
 * them all back; t->value: what went wrong (0: nothing). */
static void in_flight_client(struct thread *t)
{
    struct service *s = &in_flight_svc[t->a];
    unsigned long done, first = IN_FLIGHT_FIRST + 256 * t->a;

    for (unsigned long i = 0; i < IN_FLIGHT_WRITES; i++) {
        fill_sector(s->buf, first + i);
        long err = service_io(s, DRV_WRITE, DRV_BLOCK, (first + i) * DRV_BLOCK,
                              i % 2 ? DRV_SYNC : 0, &done);
        if (err || done != DRV_BLOCK) {
            t->value = err ? err : -1;
            return;
        }
    }
    unsigned char expect[DRV_BLOCK];
    for (unsigned long i = 0; i < IN_FLIGHT_WRITES; i++) {
        long err = service_io(s, DRV_READ, DRV_BLOCK, (first + i) * DRV_BLOCK, 0, &done);
        fill_sector(expect, first + i);
        if (err || done != DRV_BLOCK || memcmp(s->buf, expect, DRV_BLOCK)) {
            t->value = err ? err : -2;
            return;
        }
    }
}

/* Several clients at once keep several requests in flight in one driver,
 * plain and synchronous writes and reads mixed: each gets exactly its own
 * answers and data. */
static int t_blk_in_flight(void)
{
    struct thread t[IN_FLIGHT_CLIENTS];
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, info[KEEL_MSG_WORDS];

    for (int c = 0; c < IN_FLIGHT_CLIENTS; c++) {
        OK(client(&in_flight_svc[c], "blk0"));
        t[c].a = (keel_word_t)c;
        t[c].value = 0;
    }
    for (int c = 0; c < IN_FLIGHT_CLIENTS; c++)
        OK(spawn(&t[c], in_flight_client, 0));
    for (int c = 0; c < IN_FLIGHT_CLIENTS; c++) {
        EXPECT(wait_done(&t[c]));
        EXPECT_ERR(t[c].value, 0);
    }
    OK(service_call(&in_flight_svc[0], DRV_INFO, in, info));
    printf("svc: %d clients, %d writes and reads each, all their own; "
           "at most %lu in flight, %lu completed out of order\n",
           IN_FLIGHT_CLIENTS, IN_FLIGHT_WRITES, info[4], info[5]);
    return 0;
}

/* A driver that faults (here: made to jump to address 0) is replaced like
 * a killed one; its client does not notice beyond a repeated request. */
static int t_driver_fault_restarts(void)
{
    struct service s;
    keel_word_t w[2], before[KEEL_MSG_WORDS], after[KEEL_MSG_WORDS];
    unsigned long done;

    keel_word_t id = dm_id("rng0");

    OK(client(&s, "rng0"));
    OK(service_io(&s, DRV_READ, 64, 0, 0, &done));
    OK(dm_call(DM_LIST, id, 0, before));
    ns_pack("rng0", w);
    OK(dm_call(DM_CRASH, w[0], w[1], 0));
    for (int i = 0; i < 1000000; i++) {
        OK(dm_call(DM_LIST, id, 0, after));
        if (after[3] != before[3])
            break;
        keel_yield();
    }
    EXPECT(after[3] == before[3] + 1 && after[2] == DM_RUNNING);
    OK(service_io(&s, DRV_READ, 64, 0, 0, &done));
    EXPECT(done == 64 && s.retries >= 1);
    return 0;
}

static int t_kill_unknown(void)
{
    keel_word_t starts;

    EXPECT_ERR(dm_kill("nosuchdev", &starts), KEEL_E_INVALID_ARG);
    EXPECT_ERR(dm_call(DM_LIST, DM_MAX, 0, 0), KEEL_E_INVALID_ARG);
    EXPECT_ERR(dm_call(DM_CRASH, 0, DM_MAX - 1, 0), KEEL_E_INVALID_ARG);
    return 0;
}

static unsigned long wait_event(unsigned long seen)
{
    keel_word_t out[KEEL_MSG_WORDS];

    return dm_call(DM_WAIT, seen, 0, out) ? 0 : out[0];
}

/* The host attaches a disk while we run: its driver starts and its name
 * appears; then the host detaches it: the driver stops and a client that
 * used it is told (its request fails: the name is gone). */
static int t_hotplug(void)
{
    struct service s;
    unsigned long done, events = 0; /* the manager counts hotplug interrupts from 0 */
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];

    EXPECT_ERR(client(&s, "blk1"), KEEL_E_NOT_MAPPED);
    printf("svc: hotplug: attach now\n");
    while (service_connect(&s) == KEEL_E_NOT_MAPPED)
        EXPECT((events = wait_event(events)) != 0);
    OK(service_io(&s, DRV_READ, DRV_BLOCK, 0, 0, &done));
    char first[17] = { 0 };
    memcpy(first, s.buf, 16);
    printf("svc: hotplug: blk1 sector 0: %s\n", first);
    printf("svc: hotplug: detach now\n");
    EXPECT((events = wait_event(events)) != 0);
    EXPECT_ERR(service_call(&s, DRV_INFO, in, out), KEEL_E_NOT_MAPPED);
    EXPECT_ERR(service_connect(&s), KEEL_E_NOT_MAPPED);
    printf("svc: hotplug: blk1 gone\n");
    return 0;
}

/* The UART driver the device manager started on COM2, as a client finds
 * it: a line goes out (the host checks COM2), the driver is killed (its
 * I/O ports and line taken back) and replaced, and another line goes out
 * through the new one. */
static int t_console_kill_restart(void)
{
    static const char before[] = "svc: console: a line before the kill\r\n";
    static const char after[] = "svc: console: a line after the kill\r\n";
    struct service s;
    unsigned long done;
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS], starts, list[KEEL_MSG_WORDS];
    keel_word_t id = dm_id("console");

    EXPECT(id < DM_MAX);
    OK(dm_call(DM_LIST, id, 0, list));
    EXPECT(list[2] == DM_RUNNING && list[4] == DM_TYPE_UART && list[5] == COM2_IRQ);
    OK(client(&s, "console"));
    OK(service_call(&s, DRV_INFO, in, out));
    EXPECT(out[0] == DRV_KIND_STREAM);
    memcpy(s.buf, before, sizeof(before) - 1);
    OK(service_io(&s, DRV_WRITE, sizeof(before) - 1, 0, 0, &done));
    EXPECT(done == sizeof(before) - 1);
    OK(service_io(&s, DRV_READ, 16, 0, 0, &done)); /* nothing typed: nothing read */
    EXPECT(done == 0);
    OK(dm_kill("console", &starts));
    EXPECT(starts == list[3] + 1);
    memcpy(s.buf, after, sizeof(after) - 1);
    OK(service_io(&s, DRV_WRITE, sizeof(after) - 1, 0, 0, &done));
    EXPECT(done == sizeof(after) - 1 && s.retries >= 1); /* through the new driver */
    OK(dm_call(DM_LIST, id, 0, list));
    EXPECT(list[2] == DM_RUNNING && list[3] == starts);
    return 0;
}

static const struct test svc_tests[] = {
#define T(name) { #name, t_##name }
    T(names), T(blk_info), T(blk_write_flush_read), T(interrupts_delivered), T(rng_read),
    T(kill_restart_during_writes), T(blk_in_flight), T(driver_fault_restarts), T(kill_unknown),
};
static const struct test svc_console_tests[] = { T(console_kill_restart) };
static const struct test svc_hotplug_tests[] = { T(hotplug) };
#undef T
const unsigned long svc_tests_count = sizeof(svc_tests) / sizeof(svc_tests[0]);
const unsigned long svc_console_tests_count =
    sizeof(svc_console_tests) / sizeof(svc_console_tests[0]);

const char *svc_tests_missing(void)
{
    keel_word_t regs;

    if (!find_virtio_device(2, &regs))
        return "virtio-blk";
    if (!find_virtio_device(4, &regs))
        return "virtio-rng";
    return 0;
}

void svc_run(int console, unsigned *passed, unsigned *failed)
{
    if (services_start(&svc)) {
        printf("ktest: FAIL the device manager did not start\n");
        (*failed)++;
        return;
    }
    run_table(svc_tests, svc_tests_count, passed, failed);
    if (console)
        run_table(svc_console_tests, svc_console_tests_count, passed, failed);
    else
        printf("ktest: no 16550 at COM2: %lu console tests not run\n", svc_console_tests_count);
}

int services_run(void)
{
    unsigned passed = 0, failed = 0;
    char val[16];
    int console = com2_present();
    int hot = cmdline_get(suite_boot->cmdline, "keel.svc", val, sizeof(val)) &&
              !strcmp(val, "hotplug");

    printf("ktest: running %lu tests\n",
           svc_tests_count + (console ? svc_console_tests_count : 0) + (hot ? 1 : 0));
    svc_run(console, &passed, &failed);
    if (hot)
        run_table(svc_hotplug_tests, 1, &passed, &failed);
    printf("ktest: %u passed, %u failed\n", passed, failed);
    return failed != 0;
}
