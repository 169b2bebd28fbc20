/* The shell: what a person gets on the serial console when Keel boots
 * with its initrd and no test.  It lists and kills drivers through the
 * device manager and uses devices through the name service, as any client.
 *
 *   slot 5  the kernel console, with the right to read lines typed
 *   slot 6  the name service (lookups only)
 *   slot 7  the device manager's endpoint (userspace/devmgr/devmgr.h)
 *   slot 8  a notification: a line was typed
 *   slot 9  an endpoint of its own: the inbox lookups answer through
 *   slot 10 a frame it shares with the drivers it uses
 */
#include "../devmgr/devmgr.h"

#define CONSOLE 5
#define NAMES 6
#define DEVMGR 7
#define INPUT 8
#define INBOX 9
#define FRAME 10
#define WINDOW 12 /* 12..15: a service's capability lands in 13 */
#define BUF_VA 0x5e0000ul
#define LINE_MAX 200
#define MAX_ARGS 4
#define EXIT_PASS 0x10 /* what the root task's success means to the VMM */

static const char *state_name(keel_word_t s)
{
    return s == DM_RUNNING ? "running" : s == DM_FAILED ? "failed" : "-";
}

static long open_service(struct service *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->ns = NAMES;
    s->inbox = INBOX;
    s->window = WINDOW;
    s->frame = FRAME;
    s->buf = (unsigned char *)BUF_VA;
    if (!ns_pack(name, s->name))
        return KEEL_E_INVALID_ARG;
    return service_connect(s);
}

static void close_service(struct service *s)
{
    keel_word_t in[KEEL_MSG_WORDS] = { s->handle }, out[KEEL_MSG_WORDS];

    if (s->open)
        keel_call(service_cap(s), DRV_CLOSE, in, out);
    keel_cnode_delete(KEEL_SLOT_CNODE, service_cap(s));
}

static void error(const char *what, long err)
{
    static const char *const names[] = {
        "ok", "invalid capability", "wrong type", "no rights", "invalid argument",
        "bad address", "no memory", "exists", "no table", "no such name", "full",
        "try again", "bad state", "unknown call", "revoked", "not run",
    };
    printf("%s: %s (%ld)\n", what, err >= 0 && err < 16 ? names[err] : "error", err);
}

static void hex(const unsigned char *p, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

/* Offset, 16 bytes in hex, the same as text. */
static void dump(const unsigned char *p, unsigned long n)
{
    for (unsigned long off = 0; off < n; off += 16) {
        char text[17];
        printf("%04lx ", off);
        for (int i = 0; i < 16; i++) {
            printf(" %02x", p[off + i]);
            text[i] = p[off + i] >= 32 && p[off + i] < 127 ? (char)p[off + i] : '.';
        }
        text[16] = 0;
        printf("  %s\n", text);
    }
}

static unsigned long number(const char *s, int *ok)
{
    unsigned long v = 0;

    *ok = *s != 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            *ok = 0;
            return 0;
        }
        v = v * 10 + (unsigned long)(*s - '0');
    }
    return v;
}

static void list(int with_info)
{
    if (with_info)
        printf("%-3s %-8s %-8s %-4s %s\n", "id", "name", "kind", "irq", "size");
    else
        printf("%-3s %-8s %-14s %-8s %s\n", "id", "name", "program", "state", "starts");
    for (keel_word_t id = 0; id < DM_MAX; id++) {
        keel_word_t in[KEEL_MSG_WORDS] = { id }, out[KEEL_MSG_WORDS];
        char name[NS_NAME_MAX + 1];
        if (keel_call(DEVMGR, DM_LIST, in, out) || !out[0])
            continue;
        ns_unpack(out, name);
        if (!with_info) {
            printf("%-3lu %-8s %-14s %-8s %lu\n", id, name, dm_program(out[4]),
                   state_name(out[2]), out[3]);
            continue;
        }
        struct service s;
        keel_word_t info[KEEL_MSG_WORDS] = { 0 };
        if (open_service(&s, name) || service_call(&s, DRV_INFO, in, info))
            info[1] = 0;
        close_service(&s);
        printf("%-3lu %-8s %-8s %-4lu %lu\n", id, name, dm_kind(out[4]), out[5], info[1]);
    }
}

static void cmd_ps(void)
{
    printf("init (device manager), nameserv, shell, and the drivers:\n");
    list(0);
}

static void cmd_kill(const char *arg)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, out[KEEL_MSG_WORDS];
    int isnum;
    unsigned long id = number(arg, &isnum);

    if (isnum)
        in[1] = id;
    else if (!ns_pack(arg, in)) {
        printf("kill: bad name\n");
        return;
    }
    long err = keel_call(DEVMGR, DM_KILL, in, out);
    if (err == KEEL_E_INVALID_ARG)
        printf("kill: no driver %s %s (see ps)\n", isnum ? "with id" : "named", arg);
    else if (err)
        error("kill", err);
    else
        printf("killed %s; its driver has started %lu times\n", arg, out[0]);
}

/* count bytes from the named device at byte offset pos, into the buffer;
 * *done is how many came (a stream may have fewer, or none, waiting). */
static long read_from(struct service *s, const char *name, unsigned long pos, unsigned long count,
                      keel_word_t *kind, unsigned long *done)
{
    keel_word_t in[KEEL_MSG_WORDS] = { 0 }, info[KEEL_MSG_WORDS];
    long err = open_service(s, name);

    *done = 0;
    if (!err)
        err = service_call(s, DRV_INFO, in, info);
    if (!err) {
        *kind = info[0];
        err = service_io(s, DRV_READ, count, info[0] == DRV_KIND_BLOCK ? pos : 0, 0, done);
    }
    if (err == KEEL_E_NOT_MAPPED)
        printf("%s: no such device (see devices)\n", name);
    else if (err)
        error(name, err);
    return err;
}

static void cmd_cat(const char *name)
{
    struct service s;
    keel_word_t kind = 0;
    unsigned long done;

    if (!read_from(&s, name, 0, DRV_BLOCK, &kind, &done)) {
        if (!done)
            printf("%s: nothing to read\n", name);
        else if (kind == DRV_KIND_ENTROPY)
            hex(s.buf, done < 32 ? done : 32);
        else
            dump(s.buf, done < 64 ? done : 64);
    }
    close_service(&s);
}

static void cmd_read(const char *name, const char *sector)
{
    struct service s;
    keel_word_t kind;
    int ok;
    unsigned long n = number(sector, &ok);

    if (!ok) {
        printf("read: the sector is a number\n");
        return;
    }
    unsigned long done;
    if (!read_from(&s, name, n * DRV_BLOCK, DRV_BLOCK, &kind, &done))
        dump(s.buf, done);
    close_service(&s);
}

static void cmd_write(const char *name, const char *sector, const char *text)
{
    struct service s;
    int ok;
    unsigned long n = number(sector, &ok), done;

    if (!ok) {
        printf("write: the sector is a number\n");
        return;
    }
    long err = open_service(&s, name);
    if (!err) {
        memset(s.buf, 0, DRV_BLOCK);
        memcpy(s.buf, text, strlen(text) < DRV_BLOCK ? strlen(text) : DRV_BLOCK);
        err = service_io(&s, DRV_WRITE, DRV_BLOCK, n * DRV_BLOCK, DRV_SYNC, &done);
    }
    if (err == KEEL_E_NO_RIGHTS)
        printf("write: %s is read-only\n", name);
    else if (err == KEEL_E_NOT_MAPPED)
        printf("write: %s: no such device (see devices)\n", name);
    else if (err)
        error("write", err);
    else
        printf("wrote sector %lu of %s\n", n, name);
    close_service(&s);
}

static void help(void)
{
    static const char *const lines[] = {
        "help                          this text",
        "ps                            the processes and drivers",
        "devices                       the devices and their names",
        "kill <name|id>                kill a driver (the device manager restarts it)",
        "cat <name>                    the start of a device (rng0: random bytes in hex)",
        "read <name> <sector>          a sector of a block device",
        "write <name> <sector> <text>  write text to a sector (and flush)",
        "rng                           16 random bytes from rng0",
        "poweroff                      stop the machine",
    };
    for (unsigned i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        printf("%s\n", lines[i]);
}

/* Splits line at spaces; the last argument takes the rest of the line. */
static int split(char *line, char **argv)
{
    int argc = 0;

    while (*line && argc < MAX_ARGS) {
        while (*line == ' ')
            line++;
        if (!*line)
            break;
        argv[argc++] = line;
        if (argc == MAX_ARGS)
            break;
        while (*line && *line != ' ')
            line++;
        if (*line)
            *line++ = 0;
    }
    return argc;
}

static void run(char *line)
{
    char *argv[MAX_ARGS];
    int argc = split(line, argv);

    if (!argc)
        return;
    if (!strcmp(argv[0], "help") && argc == 1)
        help();
    else if (!strcmp(argv[0], "ps") && argc == 1)
        cmd_ps();
    else if (!strcmp(argv[0], "devices") && argc == 1)
        list(1);
    else if (!strcmp(argv[0], "kill") && argc == 2)
        cmd_kill(argv[1]);
    else if (!strcmp(argv[0], "cat") && argc == 2)
        cmd_cat(argv[1]);
    else if (!strcmp(argv[0], "rng") && argc == 1) {
        struct service s;
        keel_word_t kind;
        unsigned long done;
        if (!read_from(&s, "rng0", 0, 16, &kind, &done))
            hex(s.buf, done);
        close_service(&s);
    } else if (!strcmp(argv[0], "read") && argc == 3)
        cmd_read(argv[1], argv[2]);
    else if (!strcmp(argv[0], "write") && argc == 4)
        cmd_write(argv[1], argv[2], argv[3]);
    else if (!strcmp(argv[0], "poweroff") && argc == 1)
        keel_console_poweroff(CONSOLE, EXIT_PASS);
    else
        printf("%s: unknown command or wrong arguments; try help\n", argv[0]);
}

long keel_main(keel_word_t arg);

long keel_main(keel_word_t arg)
{
    char line[LINE_MAX + 1];
    long err;

    if ((err = keel_frame_map(FRAME, KEEL_SLOT_VSPACE, BUF_VA,
                              KEEL_RIGHT_READ | KEEL_RIGHT_WRITE)) ||
        (err = keel_console_listen(CONSOLE, INPUT, 1))) {
        printf("shell: cannot start: %ld\n", err);
        return 0;
    }
    printf("keel shell: type help\n");
    for (;;) {
        keel_word_t n = 0;
        printf("keel$ ");
        while ((err = keel_console_read(CONSOLE, (keel_word_t)line, LINE_MAX, &n)) ==
               KEEL_E_WOULD_BLOCK)
            keel_notification_wait(INPUT, 0);
        if (err) {
            printf("shell: console read failed: %ld\n", err);
            return 0;
        }
        line[n] = 0;
        run(line);
    }
}
